//! The AWS world's API calls counted by service and operation (what the scale benchmark
//! reports), and throttling on demand (what the retry tests inject): the next `count` calls
//! of an operation answer `Throttling` (HTTP 400, "Rate exceeded"), as Auto Scaling and
//! CloudWatch do when an account's request rate runs over.

use crate::lock;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Calls {
    /// `service:Operation` → calls.
    counts: Mutex<BTreeMap<String, u64>>,
    /// `service:Operation` → calls still to throttle.
    throttled: Mutex<BTreeMap<String, u32>>,
}

impl Calls {
    /// Counts one call; whether it is to be answered with `Throttling`.
    pub fn arrive(&self, service: &str, operation: &str) -> bool {
        let key = format!("{service}:{operation}");
        *lock(&self.counts).entry(key.clone()).or_default() += 1;
        let mut throttled = lock(&self.throttled);
        match throttled.get_mut(&key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.counts).clone()
    }

    /// Throttles the next `count` calls of `key` (`service:Operation`).
    pub fn throttle(&self, key: &str, count: u32) {
        lock(&self.throttled).insert(key.to_owned(), count);
    }
}

/// The message AWS's throttling answers carry.
pub const RATE_EXCEEDED: &str = "Rate exceeded";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_call_and_throttles_only_the_asked_number() {
        let c = Calls::default();
        c.throttle("autoscaling:SetInstanceProtection", 2);
        let got: Vec<bool> = (0..3)
            .map(|_| c.arrive("autoscaling", "SetInstanceProtection"))
            .collect();
        assert_eq!(got, [true, true, false]);
        assert!(!c.arrive("autoscaling", "DescribeAutoScalingGroups"));
        assert_eq!(c.counts()["autoscaling:SetInstanceProtection"], 3);
        assert_eq!(c.counts()["autoscaling:DescribeAutoScalingGroups"], 1);
    }
}
