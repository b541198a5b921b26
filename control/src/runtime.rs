//! What the `main`s share: logging, the AWS configuration, the GitHub client, and
//! turning a Lambda deadline into a tokio one.

use crate::config::Common;
use anyhow::Context;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use warmfleet_core::aws::SecretsManager;
use warmfleet_core::github::{GithubError, GithubTarget, Reloading, RetryPolicy};

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

/// Runs a function's initialisation; a failure is reported to the Runtime API's
/// `/init/error` (so the invocation's error names what is wrong, as with any runtime)
/// before the process exits with it.
pub async fn init<T>(
    build: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let err = match build.await {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    let message = format!("{err:#}");
    tracing::error!(error = %message, "initialisation failed");
    if let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") {
        let body = serde_json::json!({"errorType": "warmfleet.InitError", "errorMessage": message});
        let sent = reqwest::Client::new()
            .post(format!("http://{api}/2018-06-01/runtime/init/error"))
            .header("Lambda-Runtime-Function-Error-Type", "warmfleet.InitError")
            .json(&body)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Err(e) = sent {
            tracing::error!(error = %e, "could not report the init error");
        }
    }
    Err(err)
}

/// The invocation's deadline (epoch milliseconds, from the Runtime API) as an `Instant`.
pub fn deadline(epoch_ms: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_millis(epoch_ms).saturating_sub(now);
    Instant::now() + left
}

/// The GitHub client, with the credential read from its secret at init and again whenever
/// GitHub refuses it (a rotation reaches warm functions too).
pub async fn github(
    common: &Common,
    secrets: SecretsManager,
) -> anyhow::Result<Reloading<SecretsManager>> {
    let target = GithubTarget::parse(&common.github_url, common.github_api_url.as_deref())
        .context("WARMFLEET_GITHUB_URL")?;
    // Init has 10 seconds on Lambda.
    let until = Instant::now() + Duration::from_secs(8);
    Reloading::connect(
        secrets,
        &common.github_secret,
        target,
        RetryPolicy::default(),
        until,
    )
    .await
    .map_err(|e| match e {
        e @ GithubError::Credential { .. } => {
            anyhow::Error::new(e).context("WARMFLEET_GITHUB_CREDENTIAL_SECRET")
        }
        e => anyhow::Error::new(e).context("connecting to GitHub"),
    })
}
