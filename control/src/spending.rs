//! One account of what the deployment spends of GitHub's rate limit.
//!
//! GitHub charges every request of an installation to one hourly window, whichever function
//! made it. Each function adds what an invocation spent to that window's total in the
//! deployment's table (`GithubSpending`), the window named by GitHub's last answer
//! (`x-ratelimit-reset`); the sweep, the one spender that can wait, reads the total before
//! it lists (`budget`). Accounting is best effort: no launch or drain fails for it.

use tokio::time::Instant;
use tracing::warn;
use warmfleet_core::patience;
use warmfleet_core::ports::{GithubSpending, RunnerRegistry};

/// Adds the requests `github` made since it had made `before` to the window of its last
/// answer. Nothing to add (no request, or GitHub enforces no limit): nothing written.
pub async fn account<G: RunnerRegistry>(
    spending: Option<&dyn GithubSpending>,
    github: &G,
    before: u64,
    deadline: Instant,
) {
    let (Some(spending), Some(rate)) = (spending, github.rate_limit_seen()) else {
        return;
    };
    let requests = github.api_calls().saturating_sub(before);
    if requests == 0 {
        return;
    }
    if let Err(e) = patience::until(deadline, || spending.spend(rate.reset, requests)).await {
        warn!(error = %e, requests, "GitHub requests not added to the deployment's account");
    }
}
