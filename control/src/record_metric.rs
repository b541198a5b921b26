//! The record_metric Lambda (every minute): how many runners of each group are idle, busy
//! and offline, published to CloudWatch for the scaling alarms.
//!
//! One GitHub listing (the deployment's label; 100 per page, conditional requests so an unchanged
//! list costs no rate limit) and one DescribeAutoScalingGroups serve every group the
//! deployment looks after; runners are told apart by their group label. A runner is busy
//! when GitHub says so or when its instance is protected from scale-in (the agent protects
//! it for the length of each job, and GitHub's flag lags); idle when online, not busy, and
//! its instance InService.

use crate::config::MetricSettings;
use crate::Error;
use std::collections::BTreeMap;
use tokio::time::Instant;
use tracing::info;
use warmfleet_core::github::{Runner, RunnerStatus};
use warmfleet_core::naming::{
    METRIC_ALL_RUNNERS_BUSY, METRIC_BUSY_RUNNERS, METRIC_GITHUB_API_CALLS,
    METRIC_GITHUB_RATE_LIMIT_REMAINING, METRIC_IDLE_RUNNERS, METRIC_OFFLINE_RUNNERS,
};
use warmfleet_core::patience;
use warmfleet_core::ports::{InstanceStatus, Lifecycle, Metrics, RunnerRegistry};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub idle: u32,
    pub busy: u32,
    pub offline: u32,
}

impl Counts {
    /// Every runner busy (and at least one): jobs are likely waiting for a runner.
    pub fn all_busy(&self) -> bool {
        self.idle == 0 && self.busy > 0
    }
}

/// Counts one group's runners against its instances.
pub fn count(runners: &[&Runner], instances: &BTreeMap<&str, &InstanceStatus>) -> Counts {
    let mut c = Counts::default();
    for r in runners {
        let instance = instances.get(r.name.as_str());
        if r.status != RunnerStatus::Online {
            c.offline += 1;
        } else if r.busy || instance.is_some_and(|i| i.protected_from_scale_in) {
            c.busy += 1;
        } else if instance.is_some_and(|i| i.lifecycle_state == "InService") {
            c.idle += 1;
        }
    }
    c
}

pub struct RecordMetric<L, G, M> {
    pub lifecycle: L,
    pub github: G,
    pub metrics: M,
    pub settings: MetricSettings,
}

impl<L: Lifecycle, G: RunnerRegistry, M: Metrics> RecordMetric<L, G, M> {
    pub async fn handle(&self, deadline: Instant) -> Result<BTreeMap<String, Counts>, Error> {
        let until = deadline
            .checked_sub(self.settings.common.deadline_margin)
            .unwrap_or_else(Instant::now);
        let calls_before = self.github.api_calls();
        let fleet = self.settings.common.deployment.label();
        let runners = self.github.runners(Some(&fleet), until).await?;
        let groups = &self.settings.groups;
        let instances = patience::until(until, || self.lifecycle.instances(groups)).await?;
        let calls = self.github.api_calls() - calls_before;
        let mut out = BTreeMap::new();
        for group in groups {
            let mine: Vec<&Runner> = runners.iter().filter(|r| r.has_label(group)).collect();
            let by_id: BTreeMap<&str, &InstanceStatus> = instances
                .iter()
                .filter(|i| &i.group == group)
                .map(|i| (i.instance_id.as_str(), i))
                .collect();
            let c = count(&mine, &by_id);
            let mut values = vec![
                (METRIC_IDLE_RUNNERS, f64::from(c.idle)),
                (METRIC_BUSY_RUNNERS, f64::from(c.busy)),
                (METRIC_OFFLINE_RUNNERS, f64::from(c.offline)),
                (METRIC_ALL_RUNNERS_BUSY, f64::from(u8::from(c.all_busy()))),
                (METRIC_GITHUB_API_CALLS, calls as f64),
            ];
            if let Some(left) = self.github.rate_limit_remaining() {
                values.push((METRIC_GITHUB_RATE_LIMIT_REMAINING, left as f64));
            }
            patience::until(until, || self.metrics.publish(group, &values)).await?;
            info!(
                group,
                idle = c.idle,
                busy = c.busy,
                offline = c.offline,
                github_calls = calls,
                "published"
            );
            out.insert(group.clone(), c);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Common;
    use crate::fakes;
    use std::time::Duration;
    use warmfleet_core::naming::Deployment;

    fn runner(id: u64, name: &str, group: &str, online: bool, busy: bool) -> Runner {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "os": "Linux", "status": if online { "online" } else { "offline" },
            "busy": busy, "labels": [{"name": "warmfleet"}, {"name": group}, {"name": name}]
        }))
        .unwrap()
    }

    fn instance(id: &str, group: &str, state: &str, protected: bool) -> InstanceStatus {
        InstanceStatus {
            instance_id: id.into(),
            group: group.into(),
            lifecycle_state: state.into(),
            protected_from_scale_in: protected,
        }
    }

    type Handler = RecordMetric<fakes::Asg, fakes::Github, fakes::Cloudwatch>;

    fn handler(deployment: Deployment, groups: &[&str]) -> Handler {
        RecordMetric {
            lifecycle: fakes::Asg::default(),
            github: fakes::Github::default(),
            metrics: fakes::Cloudwatch::default(),
            settings: MetricSettings {
                common: Common {
                    github_url: "https://github.com/acme".into(),
                    github_api_url: None,
                    github_secret: "gh".into(),
                    deployment,
                    deadline_margin: Duration::from_millis(100),
                },
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            },
        }
    }

    #[tokio::test]
    async fn counts_each_group_from_one_listing_and_one_describe() {
        let h = handler(Deployment::default(), &["a", "b"]);
        *h.github.runners.lock().unwrap() = vec![
            runner(1, "i-idle", "a", true, false),
            runner(2, "i-busy", "a", true, true),
            runner(3, "i-protected", "a", true, false),
            runner(4, "i-offline", "a", false, false),
            runner(5, "i-draining", "a", true, false),
            runner(6, "i-b", "b", true, false),
        ];
        *h.lifecycle.instances.lock().unwrap() = vec![
            instance("i-idle", "a", "InService", false),
            instance("i-busy", "a", "InService", true),
            instance("i-protected", "a", "InService", true),
            instance("i-offline", "a", "InService", false),
            instance("i-draining", "a", "Terminating:Wait", false),
            instance("i-b", "b", "InService", false),
        ];
        let out = h
            .handle(Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            out["a"],
            Counts {
                idle: 1,
                busy: 2,
                offline: 1
            }
        );
        assert_eq!(
            out["b"],
            Counts {
                idle: 1,
                busy: 0,
                offline: 0
            }
        );
        assert_eq!(*h.lifecycle.describes.lock().unwrap(), 1);
        let published = h.metrics.published.lock().unwrap();
        assert_eq!(published.len(), 2, "one PutMetricData per group");
        assert!(published[0].1.contains(&("IdleRunners".to_owned(), 1.0)));
        assert!(published[0]
            .1
            .contains(&("GitHubRateLimitRemaining".to_owned(), 4999.0)));
        assert!(published[0].1.contains(&("AllRunnersBusy".to_owned(), 0.0)));
    }

    #[tokio::test]
    async fn counts_only_its_own_deployments_runners() {
        let h = handler(Deployment::parse("prod").unwrap(), &["a"]);
        let of = |deployment: &str, mut r: Runner| {
            let label = serde_json::json!({"name": format!("warmfleet-{deployment}")});
            r.labels.push(serde_json::from_value(label).unwrap());
            r
        };
        *h.github.runners.lock().unwrap() = vec![
            of("prod", runner(1, "i-prod", "a", true, false)),
            // Staging's group `a`, in another account: neither offline nor busy here.
            of("staging", runner(2, "i-staging", "a", true, false)),
            of("staging", runner(3, "i-staging-2", "a", false, false)),
            of("staging", runner(4, "i-staging-3", "a", true, true)),
        ];
        *h.lifecycle.instances.lock().unwrap() = vec![instance("i-prod", "a", "InService", false)];
        let out = h
            .handle(Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            out["a"],
            Counts {
                idle: 1,
                busy: 0,
                offline: 0
            }
        );
    }

    #[test]
    fn all_busy_needs_a_busy_runner_and_no_idle_one() {
        let c = |idle, busy| Counts {
            idle,
            busy,
            offline: 0,
        };
        assert!(c(0, 2).all_busy());
        assert!(!c(1, 2).all_busy());
        assert!(!c(0, 0).all_busy(), "an empty fleet has no demand to show");
    }
}
