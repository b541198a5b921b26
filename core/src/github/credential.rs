//! The credential warmfleet talks to GitHub with, read from a Secrets Manager secret.

use super::GithubError;
use crate::ports::SecretStore;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// A personal access token, or a GitHub App's id and private key.
///
/// The secret holds either JSON — `{"token": "..."}` or `{"app_id": 123, "private_key":
/// "-----BEGIN RSA PRIVATE KEY-----..."}` — or a bare token on one line. `Debug` never shows
/// the secret parts.
#[derive(Debug, Clone)]
pub enum GithubCredential {
    Token(SecretString),
    App {
        app_id: u64,
        private_key: SecretString,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SecretJson {
    Token { token: String },
    App { app_id: AppId, private_key: String },
}

/// App ids appear as numbers or strings in operators' secrets; take both.
#[derive(Deserialize)]
#[serde(untagged)]
enum AppId {
    Number(u64),
    Text(String),
}

impl GithubCredential {
    /// Reads a credential from a secret's text. Errors say what is wrong, never the value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("the secret is empty".into());
        }
        if trimmed.starts_with('{') {
            let parsed: SecretJson = serde_json::from_str(trimmed).map_err(|_| {
                "expected JSON {\"token\": ...} or {\"app_id\": ..., \"private_key\": ...}"
                    .to_owned()
            })?;
            return match parsed {
                SecretJson::Token { token } if token.trim().is_empty() => {
                    Err("\"token\" is empty".into())
                }
                SecretJson::Token { token } => Ok(Self::Token(token.trim().to_owned().into())),
                SecretJson::App {
                    app_id,
                    private_key,
                } => {
                    let app_id = match app_id {
                        AppId::Number(n) => n,
                        AppId::Text(s) => s
                            .trim()
                            .parse()
                            .map_err(|_| "\"app_id\" is not a number".to_owned())?,
                    };
                    if !private_key.contains("PRIVATE KEY-----") {
                        return Err("\"private_key\" is not a PEM private key".into());
                    }
                    Ok(Self::App {
                        app_id,
                        private_key: private_key.into(),
                    })
                }
            };
        }
        if trimmed.contains(char::is_whitespace) {
            return Err("a bare token must be one word; use JSON for an App key".into());
        }
        Ok(Self::Token(trimmed.to_owned().into()))
    }

    /// Reads the credential from the secret `id` through the `SecretStore` port.
    pub async fn load(store: &dyn SecretStore, id: &str) -> Result<Self, GithubError> {
        let bad = |reason: String| GithubError::Credential {
            secret_id: id.to_owned(),
            reason,
        };
        let value = store
            .get(id)
            .await
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad("the secret does not exist".into()))?;
        Self::parse(value.expose_secret()).map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortError;
    use async_trait::async_trait;

    #[test]
    fn reads_the_three_forms() {
        assert!(matches!(
            GithubCredential::parse("ghp_abc\n"),
            Ok(GithubCredential::Token(t)) if t.expose_secret() == "ghp_abc"
        ));
        assert!(matches!(
            GithubCredential::parse(r#"{"token": " ghp_x "}"#),
            Ok(GithubCredential::Token(t)) if t.expose_secret() == "ghp_x"
        ));
        let app = r#"{"app_id": "42", "private_key": "-----BEGIN RSA PRIVATE KEY-----\nx"}"#;
        assert!(matches!(
            GithubCredential::parse(app),
            Ok(GithubCredential::App { app_id: 42, .. })
        ));
    }

    #[test]
    fn errors_never_echo_the_secret() {
        for text in [
            "",
            "two words-secretvalue",
            r#"{"token": ""}"#,
            r#"{"app_id": "x-secretvalue", "private_key": "-----BEGIN RSA PRIVATE KEY-----"}"#,
            r#"{"app_id": 1, "private_key": "secretvalue"}"#,
            r#"{"tokn": "secretvalue"}"#,
        ] {
            let err = GithubCredential::parse(text).unwrap_err();
            assert!(!err.contains("secretvalue"), "{err}");
        }
        let debug = format!("{:?}", GithubCredential::parse("ghp_secretvalue").unwrap());
        assert!(!debug.contains("secretvalue"), "{debug}");
    }

    struct OneSecret(&'static str);

    #[async_trait]
    impl SecretStore for OneSecret {
        async fn get(&self, id: &str) -> Result<Option<SecretString>, PortError> {
            Ok((id == "gh").then(|| self.0.to_owned().into()))
        }

        async fn get_previous(&self, _: &str) -> Result<Option<SecretString>, PortError> {
            Ok(None)
        }

        async fn put(
            &self,
            id: &str,
            _: &SecretString,
            _: &[(&str, &str)],
        ) -> Result<(), PortError> {
            Err(read_only(id))
        }

        async fn update(&self, id: &str, _: &SecretString) -> Result<bool, PortError> {
            Err(read_only(id))
        }

        async fn delete(&self, id: &str) -> Result<(), PortError> {
            Err(read_only(id))
        }

        async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
            Ok(vec!["gh".to_owned()]
                .into_iter()
                .filter(|n| n.starts_with(prefix))
                .collect())
        }
    }

    fn read_only(id: &str) -> PortError {
        PortError {
            service: "test",
            operation: "write",
            resource: id.to_owned(),
            message: "this store is read-only".into(),
            retryable: false,
        }
    }

    #[tokio::test]
    async fn load_names_the_secret() {
        let store = OneSecret("not json {");
        let err = GithubCredential::load(&store, "missing").await.unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = GithubCredential::load(&store, "gh").await.unwrap_err();
        assert!(err.to_string().contains("secret gh"), "{err}");
    }
}
