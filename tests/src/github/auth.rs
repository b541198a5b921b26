//! Who is calling the fake GitHub: a personal access token, a GitHub App (a JWT signed with
//! its private key) or one of its installations (an installation token that expires).

use super::state::random_token;
use axum::http::HeaderMap;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::DecodePrivateKey;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    Pat(usize),
    App(u64),
    Installation { id: u64, account: String },
}

impl Caller {
    /// Rate limits are counted per credential, as GitHub counts them.
    pub fn rate_key(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::Pat(i) => format!("pat:{i}"),
            Caller::App(id) => format!("app:{id}"),
            Caller::Installation { id, .. } => format!("installation:{id}"),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Pat(_) => "pat",
            Caller::App(_) => "app",
            Caller::Installation { .. } => "installation",
        }
    }
}

pub struct App {
    pub id: u64,
    key: DecodingKey,
}

impl App {
    /// An app whose private key (PKCS#1 or PKCS#8 PEM, as GitHub hands them out) is `pem`.
    pub fn from_private_pem(id: u64, pem: &str) -> anyhow::Result<Self> {
        let private = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(pem))
            .map_err(|e| anyhow::anyhow!("app {id}: the key is not an RSA private key: {e}"))?;
        let public = private
            .to_public_key()
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("app {id}: {e}"))?;
        let key = DecodingKey::from_rsa_pem(public.as_bytes())
            .map_err(|e| anyhow::anyhow!("app {id}: {e}"))?;
        Ok(App { id, key })
    }
}

/// An installation of an app on one account (organisation or repository owner).
#[derive(Debug, Clone)]
pub struct Installation {
    pub id: u64,
    pub app_id: u64,
    pub account: String,
}

struct IssuedToken {
    installation: u64,
    account: String,
    expires_at: DateTime<Utc>,
}

pub struct Credentials {
    /// Tokens in force (a PAT revoked and another created: `set_pats`).
    pats: Mutex<Vec<String>>,
    apps: Vec<App>,
    pub installations: Vec<Installation>,
    tokens: Mutex<HashMap<String, IssuedToken>>,
    token_ttl: Duration,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Issuer {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
struct Claims {
    iss: Issuer,
    iat: i64,
    exp: i64,
}

pub enum AuthError {
    BadCredentials,
    BadJwt(String),
}

impl Credentials {
    /// Each app is installed on every account named (organisations and repository owners).
    pub fn new(
        pats: Vec<String>,
        apps: Vec<App>,
        accounts: &[String],
        token_ttl: Duration,
    ) -> Self {
        let mut installations = Vec::new();
        for app in &apps {
            for account in accounts {
                installations.push(Installation {
                    id: 1000 + installations.len() as u64,
                    app_id: app.id,
                    account: account.clone(),
                });
            }
        }
        Credentials {
            pats: Mutex::new(pats),
            apps,
            installations,
            tokens: Mutex::new(HashMap::new()),
            token_ttl,
        }
    }

    /// Replaces the tokens in force: those left out are revoked (401 "Bad credentials"
    /// from then on, as GitHub answers a revoked token).
    pub fn set_pats(&self, pats: Vec<String>) {
        *crate::lock(&self.pats) = pats;
    }

    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        now: DateTime<Utc>,
    ) -> Result<Caller, AuthError> {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        let value = value.to_str().map_err(|_| AuthError::BadCredentials)?;
        let (scheme, secret) = value.split_once(' ').ok_or(AuthError::BadCredentials)?;
        if !scheme.eq_ignore_ascii_case("bearer") && !scheme.eq_ignore_ascii_case("token") {
            return Err(AuthError::BadCredentials);
        }
        let secret = secret.trim();
        let pat = crate::lock(&self.pats).iter().position(|p| p == secret);
        if let Some(i) = pat {
            return Ok(Caller::Pat(i));
        }
        if let Some(t) = self.lock().get(secret) {
            if t.expires_at > now {
                return Ok(Caller::Installation {
                    id: t.installation,
                    account: t.account.clone(),
                });
            }
            return Err(AuthError::BadCredentials);
        }
        if secret.matches('.').count() == 2 {
            return self.verify_jwt(secret, now).map(Caller::App);
        }
        Err(AuthError::BadCredentials)
    }

    /// A JWT is valid if one app's key signed it, its issuer is that app, and it lives at
    /// most ten minutes, as GitHub requires.
    fn verify_jwt(&self, jwt: &str, now: DateTime<Utc>) -> Result<u64, AuthError> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        for app in &self.apps {
            let Ok(data) = jsonwebtoken::decode::<Claims>(jwt, &app.key, &validation) else {
                continue;
            };
            let claims = data.claims;
            let issuer = match claims.iss {
                Issuer::Number(n) => Some(n),
                Issuer::Text(s) => s.parse().ok(),
            };
            if issuer != Some(app.id) {
                return Err(AuthError::BadJwt(
                    "'Issuer' claim ('iss') must be the app id".into(),
                ));
            }
            let now = now.timestamp();
            if claims.exp <= now {
                return Err(AuthError::BadJwt(
                    "'Expiration time' claim ('exp') is too far in the past".into(),
                ));
            }
            if claims.exp - claims.iat > 600 + 60 {
                return Err(AuthError::BadJwt(
                    "'Expiration time' claim ('exp') is too far in the future".into(),
                ));
            }
            if claims.iat > now + 60 {
                return Err(AuthError::BadJwt(
                    "'Issued at' claim ('iat') must be an Integer representing a time in the past"
                        .into(),
                ));
            }
            return Ok(app.id);
        }
        Err(AuthError::BadJwt(
            "A JSON web token could not be decoded".into(),
        ))
    }

    pub fn installation_for(&self, app_id: u64, account: &str) -> Option<&Installation> {
        self.installations
            .iter()
            .find(|i| i.app_id == app_id && i.account.eq_ignore_ascii_case(account))
    }

    pub fn issue_token(
        &self,
        installation: &Installation,
        now: DateTime<Utc>,
    ) -> (String, DateTime<Utc>) {
        let token = random_token("ghs_", 36);
        let expires_at = now + self.token_ttl;
        self.lock().insert(
            token.clone(),
            IssuedToken {
                installation: installation.id,
                account: installation.account.clone(),
                expires_at,
            },
        );
        (token, expires_at)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, IssuedToken>> {
        crate::lock(&self.tokens)
    }
}
