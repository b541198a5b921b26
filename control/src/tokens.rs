//! Registration and remove tokens shared by a group's launches and drains.
//!
//! GitHub's registration (or remove) token registers (or removes) any number of runners
//! within its hour, so a group needs one at a time, not one per launch: the token in hand
//! lives in the secret `warmfleet/<group>/tokens/<kind>` (the module creates it; no
//! instance may read it), and a new one is minted only when that one has less than
//! [`FRESH_FOR`] left. Each instance still gets its own copy, in its own secret, cleared by
//! its agent once used. Without the shared secret (a deployment that has not created it)
//! every launch mints its own, as before. Two functions finding the token stale at the same
//! moment both mint (the later write wins): at most one token per function instance per
//! interval.
//!
//! JIT configurations are one runner each (GitHub's design) and are not shared.

use crate::Error;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{info, warn};
use warmfleet_core::github::RunnerToken;
use warmfleet_core::naming::shared_token_secret_id;
use warmfleet_core::patience;
use warmfleet_core::ports::{RunnerRegistry, SecretStore};

/// How long a shared token must still live to be handed out: an agent registers with it
/// within minutes of its launch, and a drain keeps its remove token for the length of the
/// job it waits for. A fresh token lives an hour, so a group mints about four an hour.
pub const FRESH_FOR: chrono::Duration = chrono::Duration::minutes(45);

/// Which token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Registration,
    Remove,
}

impl TokenKind {
    fn name(self) -> &'static str {
        match self {
            TokenKind::Registration => "registration",
            TokenKind::Remove => "remove",
        }
    }
}

#[derive(Deserialize)]
struct Stored {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

/// The group's shared token of `kind` while it is fresh, else a new one (then shared).
pub async fn shared_token<S: SecretStore, G: RunnerRegistry>(
    secrets: &S,
    github: &G,
    group: &str,
    kind: TokenKind,
    until: Instant,
) -> Result<RunnerToken, Error> {
    let id = shared_token_secret_id(group, kind.name());
    let stored = patience::until(until, || secrets.get(&id)).await?;
    if let Some(t) =
        stored.and_then(|text| serde_json::from_str::<Stored>(text.expose_secret()).ok())
    {
        if t.expires_at - Utc::now() >= FRESH_FOR {
            return Ok(RunnerToken {
                token: t.token,
                expires_at: t.expires_at,
            });
        }
    }
    let t = match kind {
        TokenKind::Registration => github.registration_token(until).await?,
        TokenKind::Remove => github.remove_token(until).await?,
    };
    let text: SecretString = serde_json::json!({
        "token": t.token.expose_secret(),
        "expires_at": t.expires_at,
    })
    .to_string()
    .into();
    // Sharing is a saving, not a duty: the launch goes on with its token whatever happens.
    match patience::until(until, || secrets.update(&id, &text)).await {
        Ok(true) => {
            info!(group, kind = kind.name(), expires_at = %t.expires_at, "token minted and shared")
        }
        Ok(false) => {
            warn!(group, secret = %id, "no shared token secret: every launch mints its own")
        }
        Err(e) => warn!(group, error = %e, "sharing the token failed; it serves this launch alone"),
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn with_shared_secrets() -> fakes::Secrets {
        let secrets = fakes::Secrets::default();
        for kind in ["registration", "remove"] {
            secrets.values.lock().unwrap().insert(
                shared_token_secret_id("runners", kind),
                ("{}".to_owned().into(), Default::default()),
            );
        }
        secrets
    }

    fn token_of(secrets: &fakes::Secrets, kind: &str) -> String {
        let values = secrets.values.lock().unwrap();
        let text = &values[&shared_token_secret_id("runners", kind)].0;
        let v: serde_json::Value = serde_json::from_str(text.expose_secret()).unwrap();
        v["token"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn launches_share_one_token_while_it_is_fresh() {
        let (secrets, github) = (with_shared_secrets(), fakes::Github::default());
        let mut got = vec![];
        for _ in 0..5 {
            let t = shared_token(
                &secrets,
                &github,
                "runners",
                TokenKind::Registration,
                soon(),
            )
            .await
            .unwrap();
            got.push(t.token.expose_secret().to_owned());
        }
        assert_eq!(
            *github.tokens.lock().unwrap(),
            1,
            "one minted for five launches"
        );
        assert!(got.iter().all(|t| t == "REG1"), "{got:?}");
        assert_eq!(token_of(&secrets, "registration"), "REG1");
    }

    #[tokio::test]
    async fn a_token_short_of_fresh_is_replaced() {
        let (secrets, github) = (with_shared_secrets(), fakes::Github::default());
        let stale = serde_json::json!({
            "token": "OLD",
            "expires_at": Utc::now() + chrono::Duration::minutes(44),
        });
        secrets.values.lock().unwrap().insert(
            shared_token_secret_id("runners", "registration"),
            (stale.to_string().into(), Default::default()),
        );
        let t = shared_token(
            &secrets,
            &github,
            "runners",
            TokenKind::Registration,
            soon(),
        )
        .await
        .unwrap();
        assert_eq!(t.token.expose_secret(), "REG1");
        assert_eq!(token_of(&secrets, "registration"), "REG1");
    }

    #[tokio::test]
    async fn without_the_shared_secret_every_launch_mints_its_own_and_creates_nothing() {
        let (secrets, github) = (fakes::Secrets::default(), fakes::Github::default());
        for _ in 0..2 {
            shared_token(
                &secrets,
                &github,
                "runners",
                TokenKind::Registration,
                soon(),
            )
            .await
            .unwrap();
        }
        assert_eq!(*github.tokens.lock().unwrap(), 2);
        assert!(secrets.values.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn remove_tokens_are_shared_apart_from_registration_tokens() {
        let (secrets, github) = (with_shared_secrets(), fakes::Github::default());
        for _ in 0..3 {
            shared_token(&secrets, &github, "runners", TokenKind::Remove, soon())
                .await
                .unwrap();
        }
        assert_eq!(*github.remove_tokens.lock().unwrap(), 1);
        assert_eq!(*github.tokens.lock().unwrap(), 0);
        assert_eq!(token_of(&secrets, "remove"), "REMOVE1");
        assert_eq!(token_of(&secrets, "registration"), "");
    }
}
