//! How the deployment spends its GitHub App installation's rate limit (GitHub's primary
//! limit: so many requests an hour per installation, 5,000 at the base).
//!
//! The deployment plans to use a share of it (`WARMFLEET_GITHUB_SHARE`, a fifth by default).
//! What cannot wait (a launch's token, a drain's remove token) is never held back; what can
//! (the sweep's full listing of runners, a page per 100 of them) is paced within half of
//! that share, and put off altogether when it would leave less than the other half of what
//! GitHub says is left (the launches of the rest of the window keep theirs), or take the
//! deployment past its share of the window by the account every function adds to
//! (`spending`): what the launches and drains spent comes first.

use std::time::Duration;
use warmfleet_core::github::RateLimit;

/// GitHub's largest page of runners.
const PER_PAGE: u64 = 100;
/// The base limit of an App installation, assumed while GitHub has not said.
const BASE_LIMIT: u64 = 5_000;

/// The deployment's planned part of the installation's rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Of the hourly limit, in (0, 1].
    pub share: f64,
}

/// What the sweep decided about listing every runner this time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Listing {
    /// Listed: its slot began since the previous sweep, and the budget has room.
    Listed,
    /// Not this sweep's turn: a later one in the interval lists.
    #[default]
    NotDue,
    /// Its turn, but listing would eat into what launches keep until the window resets.
    Deferred,
}

impl Budget {
    /// Requests an hour the deployment plans to spend of `limit`.
    fn per_hour(&self, limit: u64) -> f64 {
        self.share * limit as f64
    }

    /// How often a full listing of `runners` runners fits in half of the share: never more
    /// often than every `period` (the sweep's schedule).
    pub fn listing_interval(
        &self,
        runners: usize,
        limit: Option<u64>,
        period: Duration,
    ) -> Duration {
        let for_listings = self.per_hour(limit.unwrap_or(BASE_LIMIT)) / 2.0;
        let pages = listing_pages(runners) as f64;
        let seconds = (pages * 3600.0 / for_listings.max(1.0)).ceil();
        period.max(Duration::from_secs(seconds as u64))
    }

    /// Whether the sweep running at `now` (seconds since the epoch), every `period`, lists
    /// every runner: the first sweep of each `interval`-long slot does, when GitHub's
    /// window (`rate`; `None`: no limit) keeps half the share after its pages, and the
    /// deployment's own requests in that window (`spent`, by its account; `None`: not
    /// accounted) stay within the share with them.
    pub fn listing(
        &self,
        now: i64,
        period: Duration,
        interval: Duration,
        runners: usize,
        rate: Option<RateLimit>,
        spent: Option<u64>,
    ) -> Listing {
        if !slot_begins(now, period, interval) {
            return Listing::NotDue;
        }
        let Some(r) = rate else {
            return Listing::Listed;
        };
        let pages = listing_pages(runners) as f64;
        let share = self.per_hour(r.limit);
        let leaves_launches_theirs = r.remaining as f64 >= pages + share / 2.0;
        let within_share = spent.is_none_or(|s| s as f64 + pages <= share);
        if leaves_launches_theirs && within_share {
            Listing::Listed
        } else {
            Listing::Deferred
        }
    }
}

/// Pages of a listing of `runners` runners (at least one: an empty list is a page too).
pub fn listing_pages(runners: usize) -> u64 {
    (runners as u64).div_ceil(PER_PAGE).max(1)
}

/// Whether an `interval`-long slot (counted from the epoch) began within the `period` up
/// to `now`: true for exactly one sweep of each slot while sweeps run every `period`.
fn slot_begins(now: i64, period: Duration, interval: Duration) -> bool {
    let interval = interval.as_secs().max(1) as i64;
    let period = period.as_secs() as i64;
    if interval <= period {
        return true;
    }
    now.div_euclid(interval) != (now - period).div_euclid(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    fn rate(limit: u64, remaining: u64) -> Option<RateLimit> {
        Some(RateLimit {
            limit,
            remaining,
            reset: 0,
        })
    }

    #[test]
    fn pages_are_of_a_hundred_and_never_none() {
        assert_eq!(listing_pages(0), 1);
        assert_eq!(listing_pages(100), 1);
        assert_eq!(listing_pages(101), 2);
        assert_eq!(listing_pages(10_000), 100);
    }

    #[test]
    fn small_fleets_list_every_sweep_large_ones_as_the_share_allows() {
        let b = Budget { share: 0.2 };
        assert_eq!(
            b.listing_interval(500, Some(5000), FIVE_MINUTES),
            FIVE_MINUTES
        );
        // 10,000 runners: 100 pages in 500 requests an hour, every 12 minutes.
        assert_eq!(
            b.listing_interval(10_000, Some(5000), FIVE_MINUTES),
            Duration::from_secs(720)
        );
        // A larger limit (an App installed on many repositories) lists more often.
        assert_eq!(
            b.listing_interval(10_000, Some(12_500), FIVE_MINUTES),
            FIVE_MINUTES
        );
        // Unknown: the base limit.
        assert_eq!(
            b.listing_interval(10_000, None, FIVE_MINUTES),
            Duration::from_secs(720)
        );
    }

    #[test]
    fn one_sweep_per_slot_lists() {
        let interval = Duration::from_secs(720);
        let lists: Vec<i64> = (0..48)
            .map(|n| n * 300)
            .filter(|t| slot_begins(*t, FIVE_MINUTES, interval))
            .collect();
        // Four hours of sweeps every five minutes: a listing every 12 minutes, in slots
        // that begin at 0, 720, 1440...: 20 of them.
        assert_eq!(lists.len(), 20, "{lists:?}");
        assert!(lists.windows(2).all(|w| w[1] - w[0] <= 900));
        // Shorter than the schedule: every sweep.
        assert!((0..10).all(|n| slot_begins(n * 300 + 7, FIVE_MINUTES, FIVE_MINUTES)));
    }

    #[test]
    fn a_listing_that_would_eat_into_the_launches_reserve_is_deferred() {
        let b = Budget { share: 0.2 };
        let due = |runners, rate| b.listing(0, FIVE_MINUTES, FIVE_MINUTES, runners, rate, None);
        assert_eq!(due(10_000, rate(5000, 4000)), Listing::Listed);
        // 100 pages leave 500 of 5000 × 0.2 / 2 = 500: just enough.
        assert_eq!(due(10_000, rate(5000, 600)), Listing::Listed);
        assert_eq!(due(10_000, rate(5000, 599)), Listing::Deferred);
        assert_eq!(due(10_000, None), Listing::Listed, "no limit enforced");
        assert_eq!(
            b.listing(
                300,
                FIVE_MINUTES,
                Duration::from_secs(720),
                10_000,
                rate(5000, 5000),
                None
            ),
            Listing::NotDue
        );
    }

    #[test]
    fn a_listing_that_would_take_the_deployment_past_its_share_is_deferred() {
        let b = Budget { share: 0.2 };
        let due = |spent| {
            b.listing(
                0,
                FIVE_MINUTES,
                FIVE_MINUTES,
                10_000,
                rate(5000, 4000),
                spent,
            )
        };
        // A share of 1,000 this window; the listing's 100 pages on top of what every
        // function spent (JIT configurations, drains) must fit in it.
        assert_eq!(due(Some(0)), Listing::Listed);
        assert_eq!(due(Some(900)), Listing::Listed);
        assert_eq!(due(Some(901)), Listing::Deferred);
        // GitHub has plenty left (others share the installation less): still deferred.
        assert_eq!(due(Some(2000)), Listing::Deferred);
        assert_eq!(
            due(None),
            Listing::Listed,
            "not accounted: GitHub's figures alone"
        );
        // No limit enforced: nothing to keep within.
        assert_eq!(
            b.listing(0, FIVE_MINUTES, FIVE_MINUTES, 10_000, None, Some(5000)),
            Listing::Listed
        );
    }
}
