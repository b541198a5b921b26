//! Calls to AWS retried while a deadline allows: exponential backoff with jitter, only for
//! errors that say a retry can help.

use crate::ports::PortError;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Runs `call` until it succeeds, fails for good, or the next try would end past `deadline`.
pub async fn until<T, F, Fut>(deadline: Instant, call: F) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times();
    call.retry(backoff.build())
        .sleep(tokio::time::sleep)
        .when(|e: &PortError| e.retryable)
        .adjust(move |_, next| next.filter(|d| Instant::now() + *d < deadline))
        .notify(|e, d| tracing::warn!(error = %e, retry_in = ?d, "AWS call failed; retrying"))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn error(retryable: bool) -> PortError {
        PortError {
            service: "test",
            operation: "op",
            resource: "r".into(),
            message: "m".into(),
            retryable,
        }
    }

    #[tokio::test]
    async fn retries_what_may_pass_until_the_deadline_and_nothing_else() {
        let tries = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_millis(600);
        let out: Result<(), _> = until(deadline, || async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err(error(true))
        })
        .await;
        assert!(out.is_err());
        assert!(
            Instant::now() <= deadline + Duration::from_secs(1),
            "no sleep runs past the deadline"
        );
        assert!(tries.load(Ordering::Relaxed) >= 2);

        let tries = AtomicU32::new(0);
        let out: Result<(), _> = until(Instant::now() + Duration::from_secs(5), || async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err(error(false))
        })
        .await;
        assert!(out.is_err());
        assert_eq!(
            tries.load(Ordering::Relaxed),
            1,
            "a final error is not retried"
        );
    }
}
