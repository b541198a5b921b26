//! How the driver calls AWS: every call bounded in time (`timeouts.call`), and the ones
//! it must not lose insisted on while AWS throttles.

use super::Msg;
use crate::error::AgentError;
use crate::machine::Event;
use chrono::Utc;
use std::time::Duration;
use tracing::info;
use warmfleet_core::aws::SecretsManager;
use warmfleet_core::instance_secret::InstanceSecret;
use warmfleet_core::patience;
use warmfleet_core::ports::{PortError, SecretStore};

/// How often it reads its secret while waiting for a credential.
const CREDENTIAL_POLL: Duration = Duration::from_millis(250);

/// How long the agent insists on a call whose loss would leave the instance in service with
/// no runner (replacing it, marking it unhealthy) or misjudged by the scaling (its
/// protection or runner-table record: a busy instance that looks idle, an idle one never
/// scaled in).
const INSIST: Duration = Duration::from_secs(30);

/// Such a call, tried again while AWS throttles or fails in a way a retry can help
/// (`patience`, as the Lambdas do), each attempt bounded by `limit`.
pub(super) async fn insist<F, Fut>(
    limit: Duration,
    what: &'static str,
    call: F,
) -> Result<(), AgentError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), PortError>>,
{
    patience::until(tokio::time::Instant::now() + INSIST, || async {
        tokio::time::timeout(limit, call())
            .await
            .unwrap_or_else(|_| {
                Err(PortError {
                    service: "AWS",
                    operation: what,
                    resource: String::new(),
                    message: format!("no answer within {limit:?}"),
                    retryable: true,
                })
            })
    })
    .await
    .map_err(AgentError::Aws)
}

/// An AWS call that gets `limit` to answer (`timeouts.call`): one that hangs is an error
/// naming the call, never a stuck agent.
pub(super) async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, PortError>>,
) -> Result<T, AgentError> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| AgentError::NoAnswer {
            call: what,
            within: limit,
        })?
        .map_err(AgentError::Aws)
}

pub(super) async fn await_credential(
    secrets: SecretsManager,
    id: String,
    newer_than: Option<chrono::DateTime<Utc>>,
    limit: Duration,
    call: Duration,
) -> Msg {
    let until = tokio::time::Instant::now() + limit;
    let mut last;
    loop {
        match bounded(call, "GetSecretValue", secrets.get(&id)).await {
            Ok(Some(text)) => match InstanceSecret::parse(&text) {
                Ok(s) if newer_than.is_none_or(|t| s.issued_at > t) => {
                    info!(secret = %id, issued_at = %s.issued_at, "new credential");
                    return Msg::Credential(s);
                }
                Ok(s) => {
                    last = format!(
                        "it holds only a credential issued at {} (used)",
                        s.issued_at
                    )
                }
                Err(e) => last = e.to_string(),
            },
            Ok(None) => last = "the secret does not exist".into(),
            Err(e) => last = e.to_string(),
        }
        if tokio::time::Instant::now() >= until {
            return Msg::Event(Event::Failed(format!(
                "no new credential in {id} within {}: {last}",
                humantime::format_duration(limit)
            )));
        }
        tokio::time::sleep(CREDENTIAL_POLL).await;
    }
}
