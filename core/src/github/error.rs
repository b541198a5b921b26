use http::{Method, StatusCode};
use std::time::Duration;

/// Everything that can go wrong talking to GitHub, with what a reader needs to act on it.
/// No variant ever carries a token.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("GitHub configuration: {0}")]
    Config(String),

    #[error("GitHub credential in secret {secret_id}: {reason}")]
    Credential { secret_id: String, reason: String },

    #[error("GitHub rejected the credential for {method} {path} ({status}): {message}")]
    Unauthorized {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },

    #[error("GitHub denied {method} {path} (403): {message}")]
    Forbidden {
        method: Method,
        path: String,
        message: String,
    },

    #[error("GitHub has no {path} (404): {message}")]
    NotFound { path: String, message: String },

    #[error("runner {runner_id} is running a job: GitHub refuses to delete a busy runner")]
    RunnerBusy { runner_id: u64 },

    #[error("GitHub refused {method} {path} ({status}): {message}")]
    Rejected {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },

    #[error(
        "GitHub rate limit on {method} {path}: it lifts in {wait:?}, past the caller's deadline"
    )]
    RateLimited {
        method: Method,
        path: String,
        wait: Duration,
    },

    #[error("GitHub answered {status} to {method} {path} after {attempts} attempts: {message}")]
    Server {
        method: Method,
        path: String,
        status: StatusCode,
        attempts: u32,
        message: String,
    },

    #[error("could not reach GitHub for {method} {path} after {attempts} attempts: {reason}")]
    Transport {
        method: Method,
        path: String,
        attempts: u32,
        reason: String,
    },

    #[error("unexpected answer from GitHub to {method} {path}: {reason}")]
    Decode {
        method: Method,
        path: String,
        reason: String,
    },
}

impl GithubError {
    /// Whether the same call may succeed later (the retries inside the client are spent, but
    /// a caller with more time, e.g. a later Lambda invocation, may try again).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GithubError::RateLimited { .. }
                | GithubError::Server { .. }
                | GithubError::Transport { .. }
        )
    }
}
