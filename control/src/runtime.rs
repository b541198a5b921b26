//! What the three `main`s share: logging, the AWS configuration, the GitHub client, and
//! turning a Lambda deadline into a tokio one.

use crate::config::Common;
use anyhow::Context;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use warmfleet_core::github::{GithubClient, GithubCredential, GithubTarget, RetryPolicy};
use warmfleet_core::ports::SecretStore;

/// JSON logs to stdout (CloudWatch Logs), level from `RUST_LOG` (default info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .without_time()
        .init();
}

/// The invocation's deadline (epoch milliseconds, from the Runtime API) as an `Instant`.
pub fn deadline(epoch_ms: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_millis(epoch_ms).saturating_sub(now);
    Instant::now() + left
}

/// The GitHub client, with the credential read from its secret once, at init.
pub async fn github(common: &Common, secrets: &dyn SecretStore) -> anyhow::Result<GithubClient> {
    let target = GithubTarget::parse(&common.github_url, common.github_api_url.as_deref())
        .context("WARMFLEET_GITHUB_URL")?;
    let credential = GithubCredential::load(secrets, &common.github_secret)
        .await
        .context("WARMFLEET_GITHUB_CREDENTIAL_SECRET")?;
    // Init has 10 seconds on Lambda.
    let until = Instant::now() + Duration::from_secs(8);
    GithubClient::connect(target, &credential, RetryPolicy::default(), until)
        .await
        .context("connecting to GitHub")
}
