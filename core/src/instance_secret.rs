//! What an instance's secret (`warmfleet/<asg>/<instance-id>`) holds: the credential the
//! registration Lambda minted for this launch (until the agent has used it and cleared it),
//! and, once a drain is asked for, a remove token. Written by the Lambdas, read by the agent; JSON, so operators can inspect its
//! shape (never its tokens) with the AWS CLI.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The credential a runner registers with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RunnerCredential {
    /// For `config.sh --token` (persistent runners); reusable within its hour.
    RegistrationToken {
        #[serde(serialize_with = "expose", deserialize_with = "secret")]
        token: SecretString,
        expires_at: DateTime<Utc>,
    },
    /// For `run.sh --jitconfig` (ephemeral runners); single use, the runner already exists.
    JitConfig {
        #[serde(serialize_with = "expose", deserialize_with = "secret")]
        encoded_jit_config: SecretString,
        runner_id: u64,
    },
    /// Either of the above once the agent has used it (configured its runner, or started
    /// its JIT listener) and taken it out of the secret: nothing valid stays there while
    /// jobs run on the instance.
    Used {
        /// It was a JIT configuration (ephemeral mode), for this runner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jit_runner_id: Option<u64>,
    },
}

impl RunnerCredential {
    /// Persistent mode's: a registration token, unused or used.
    pub fn persistent(&self) -> bool {
        matches!(
            self,
            RunnerCredential::RegistrationToken { .. }
                | RunnerCredential::Used {
                    jit_runner_id: None
                }
        )
    }

    /// What stays in the secret once this credential is used.
    pub fn used(&self) -> RunnerCredential {
        RunnerCredential::Used {
            jit_runner_id: match self {
                RunnerCredential::JitConfig { runner_id, .. } => Some(*runner_id),
                RunnerCredential::Used { jit_runner_id } => *jit_runner_id,
                RunnerCredential::RegistrationToken { .. } => None,
            },
        }
    }
}

/// A remove token for `config.sh remove`, placed before a drain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveToken {
    #[serde(serialize_with = "expose", deserialize_with = "secret")]
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceSecret {
    /// When the credential was minted: the agent uses only one newer than any it used.
    pub issued_at: DateTime<Utc>,
    /// The lifecycle action (its token) the credential was minted for: a repeated event
    /// for the same action finds it here and mints nothing.
    pub lifecycle_action: String,
    pub credential: RunnerCredential,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_token: Option<RemoveToken>,
    /// The SSM command of the drain sent for this time in service (the registration
    /// Lambda writes a new secret, without one, for each launch or resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_command: Option<String>,
}

fn expose<S: Serializer>(s: &SecretString, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(s.expose_secret())
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    String::deserialize(d).map(SecretString::from)
}

impl InstanceSecret {
    /// The secret's text. It holds tokens, so it is itself a secret.
    pub fn to_secret(&self) -> SecretString {
        // Serialising plain strings and numbers cannot fail.
        SecretString::from(serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads a secret's text; the error says what is wrong, never the value.
    pub fn parse(text: &SecretString) -> Result<Self, String> {
        serde_json::from_str(text.expose_secret()).map_err(|e| {
            format!(
                "not a warmfleet instance secret (line {}, column {}: {})",
                e.line(),
                e.column(),
                match e.classify() {
                    serde_json::error::Category::Data => "a field is missing or has the wrong type",
                    _ => "not JSON",
                }
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_never_debugs_a_token() {
        let s = InstanceSecret {
            issued_at: Utc::now(),
            lifecycle_action: "a-b".into(),
            credential: RunnerCredential::RegistrationToken {
                token: "AABBCC".to_owned().into(),
                expires_at: Utc::now(),
            },
            remove_token: None,
            drain_command: None,
        };
        let text = s.to_secret();
        assert!(text
            .expose_secret()
            .contains("\"kind\":\"registration-token\""));
        let back = InstanceSecret::parse(&text).unwrap();
        assert_eq!(back.lifecycle_action, "a-b");
        assert!(!format!("{back:?}").contains("AABBCC"));
        let err = InstanceSecret::parse(&SecretString::from("{\"token\": \"AABBCC\"}".to_owned()))
            .unwrap_err();
        assert!(!err.contains("AABBCC") && err.contains("missing"), "{err}");
    }

    #[test]
    fn a_used_credential_keeps_its_mode_and_nothing_secret() {
        let token = RunnerCredential::RegistrationToken {
            token: "AABBCC".to_owned().into(),
            expires_at: Utc::now(),
        };
        let jit = RunnerCredential::JitConfig {
            encoded_jit_config: "DDEEFF".to_owned().into(),
            runner_id: 42,
        };
        assert!(token.persistent() && token.used().persistent());
        assert!(!jit.persistent() && !jit.used().persistent());
        for c in [token.used(), jit.used(), jit.used().used()] {
            let text = serde_json::to_string(&c).unwrap();
            assert!(
                !text.contains("AABBCC") && !text.contains("DDEEFF"),
                "{text}"
            );
            let back: RunnerCredential = serde_json::from_str(&text).unwrap();
            assert_eq!(back.persistent(), c.persistent());
        }
        assert_eq!(
            serde_json::to_string(&jit.used()).unwrap(),
            r#"{"kind":"used","jit_runner_id":42}"#
        );
    }
}
