//! When to try a GitHub call again, and how long to wait first.

use super::types::RateLimit;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use http::{HeaderMap, StatusCode};
use std::time::Duration;

/// How the client retries: transient failures (5xx, network) a bounded number of times with
/// exponential backoff and jitter; rate limits are waited out for as long as the caller's
/// deadline allows.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts for one call on 5xx and network errors, the first included.
    pub max_attempts: u32,
    /// First backoff delay; it doubles per attempt, with jitter.
    pub min_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// Wait for a secondary rate limit that names no time (GitHub: "at least one minute").
    pub secondary_limit_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            secondary_limit_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    pub(crate) fn backoff(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }
}

/// How long a rate-limited answer asks us to wait, or `None` if it is no rate limit.
///
/// GitHub's rules: `retry-after` wins; else `x-ratelimit-remaining: 0` means wait until
/// `x-ratelimit-reset` (epoch seconds); else a 429, or a 403 that says "rate limit", is a
/// secondary limit to wait at least a minute for.
pub(crate) fn rate_limit_wait(
    status: StatusCode,
    headers: &HeaderMap,
    message: &str,
    now_epoch_secs: u64,
    policy: &RetryPolicy,
) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(secs) = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    if header("x-ratelimit-remaining").map(str::trim) == Some("0") {
        if let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.trim().parse::<u64>().ok())
        {
            // One second more: the reset time is rounded down to whole seconds.
            return Some(Duration::from_secs(
                reset.saturating_sub(now_epoch_secs) + 1,
            ));
        }
    }
    if status == StatusCode::TOO_MANY_REQUESTS || message.to_lowercase().contains("rate limit") {
        return Some(policy.secondary_limit_wait);
    }
    None
}

/// The primary (`core`) rate limit as an answer's `x-ratelimit-limit`, `-remaining` and
/// `-reset` headers state it; `None` when any is missing or not a number (GitHub Enterprise
/// Server with rate limiting off sends none), or when `x-ratelimit-resource` names another
/// of GitHub's buckets (each has a window of its own).
pub(crate) fn stated_rate_limit(headers: &HeaderMap) -> Option<RateLimit> {
    let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    if text("x-ratelimit-resource").is_some_and(|r| r != "core") {
        return None;
    }
    Some(RateLimit {
        limit: text("x-ratelimit-limit")?.parse().ok()?,
        remaining: text("x-ratelimit-remaining")?.parse().ok()?,
        reset: text("x-ratelimit-reset")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn reads_githubs_rate_limit_signals() {
        let p = RetryPolicy::default();
        let wait = |status: u16, h: &[(&'static str, &'static str)], msg: &str| {
            rate_limit_wait(
                StatusCode::from_u16(status).unwrap(),
                &headers(h),
                msg,
                1000,
                &p,
            )
        };
        assert_eq!(
            wait(429, &[("retry-after", "7")], ""),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            wait(
                403,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1030")
                ],
                ""
            ),
            Some(Duration::from_secs(31))
        );
        assert_eq!(
            wait(403, &[], "You have exceeded a secondary rate limit"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(wait(429, &[], ""), Some(Duration::from_secs(60)));
        assert_eq!(
            wait(403, &[("x-ratelimit-remaining", "12")], "Forbidden"),
            None
        );
        assert_eq!(wait(502, &[("retry-after", "1")], ""), None);
    }

    #[test]
    fn backoff_is_bounded_and_capped() {
        let p = RetryPolicy {
            max_attempts: 4,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            ..RetryPolicy::default()
        };
        let delays: Vec<Duration> = p.backoff().collect();
        assert_eq!(delays.len(), 3);
        // Jitter adds up to one more delay on top of each capped step.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(600)),
            "{delays:?}"
        );
    }

    #[test]
    fn reads_the_rate_limit_an_answer_states() {
        let full = headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4990"),
            ("x-ratelimit-reset", "1764000000"),
        ]);
        assert_eq!(
            stated_rate_limit(&full),
            Some(RateLimit {
                limit: 5000,
                remaining: 4990,
                reset: 1_764_000_000
            })
        );
        let partial = headers(&[("x-ratelimit-remaining", "4990")]);
        assert_eq!(stated_rate_limit(&partial), None);
        let garbled = headers(&[
            ("x-ratelimit-limit", "lots"),
            ("x-ratelimit-remaining", "4990"),
            ("x-ratelimit-reset", "1764000000"),
        ]);
        assert_eq!(stated_rate_limit(&garbled), None);
        // Another bucket (runner registration has its own), another window.
        let mut other = full.clone();
        other.insert(
            "x-ratelimit-resource",
            "actions_runner_registration".parse().unwrap(),
        );
        assert_eq!(stated_rate_limit(&other), None);
        let mut core = full.clone();
        core.insert("x-ratelimit-resource", "core".parse().unwrap());
        assert_eq!(stated_rate_limit(&core), stated_rate_limit(&full));
    }
}
