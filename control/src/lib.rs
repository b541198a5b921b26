//! The warmfleet control plane: four Lambdas, each a handler generic over `core`'s ports
//! (`registration`, `deregistration`, `record_metric`, `webhook`), and with the runner
//! table a fifth, the group's custom termination policy (`scale_in`), the events they read
//! (`event`), their configuration (`config`), how they spend GitHub's rate limit (`budget`)
//! and account for it together (`spending`), the tokens a group's launches and drains share
//! (`tokens`), and what their `main`s share (`runtime`).

pub mod budget;
pub mod config;
pub mod deregistration;
pub mod event;
#[cfg(test)]
mod fakes;
pub mod record_metric;
pub mod registration;
pub mod runtime;
pub mod scale_in;
pub mod spending;
pub mod tokens;
pub mod webhook;

use warmfleet_core::github::GithubError;
use warmfleet_core::ports::PortError;

/// What can stop a handler, saying whether a later attempt can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Event(#[from] event::EventError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Github(#[from] GithubError),
    #[error("the instance secret {id} is not warmfleet's: {reason}")]
    Secret { id: String, reason: String },
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Event(_) | Error::Secret { .. } => false,
            Error::Port(e) => e.retryable,
            Error::Github(e) => e.is_retryable(),
        }
    }
}

/// What the Runtime API reports for a failed invocation: `errorType` says whether a retry
/// can help (`warmfleet.Retryable` or `warmfleet.Fatal`), `errorMessage` what went wrong.
impl From<Error> for lambda_runtime::Diagnostic {
    fn from(e: Error) -> Self {
        let kind = if e.is_retryable() {
            "Retryable"
        } else {
            "Fatal"
        };
        lambda_runtime::Diagnostic {
            error_type: format!("warmfleet.{kind}"),
            error_message: e.to_string(),
        }
    }
}
