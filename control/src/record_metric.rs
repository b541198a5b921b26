//! The record_metric Lambda (every minute): how many runners of each group are idle and
//! busy, published to CloudWatch for the scaling alarms.
//!
//! Counted from the fleet, one DescribeAutoScalingGroups for every group, and no GitHub
//! request: an instance enters service only once its runner is registered and listening
//! (the agent completes the launch hook then), and the agent marks its runner busy for
//! each job (and a short linger after): it protects its instance from scale-in, or, with a
//! runner table, records it there (one Scan of the table a minute). In service and marked
//! busy is a busy runner; in service and not, an idle one. GitHub's own busy
//! flag lags the job, and listing it costs a request per 100 runners. What only GitHub
//! knows (a runner offline while its instance is in service, a registration without an
//! instance) the deregistration sweep finds and publishes.

use crate::config::MetricSettings;
use crate::Error;
use std::collections::{BTreeMap, BTreeSet};
use tokio::time::Instant;
use tracing::{info, warn};
use warmfleet_core::naming::{METRIC_ALL_RUNNERS_BUSY, METRIC_BUSY_RUNNERS, METRIC_IDLE_RUNNERS};
use warmfleet_core::patience;
use warmfleet_core::ports::{InstanceStatus, JobLedger, Lifecycle, Metrics, Occupancy};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub idle: u32,
    pub busy: u32,
}

impl Counts {
    /// Every runner busy (and at least one): jobs are likely waiting for a runner.
    pub fn all_busy(&self) -> bool {
        self.idle == 0 && self.busy > 0
    }
}

/// Counts one group's runners from its instances: only those in service have a runner
/// that takes jobs; one is busy when its instance is protected or the runner table holds
/// it busy (`recorded_busy`).
pub fn count<'a>(
    instances: impl IntoIterator<Item = &'a InstanceStatus>,
    recorded_busy: &BTreeSet<String>,
) -> Counts {
    let mut c = Counts::default();
    for i in instances {
        if i.lifecycle_state != "InService" {
            continue;
        }
        if i.protected_from_scale_in || recorded_busy.contains(&i.instance_id) {
            c.busy += 1;
        } else {
            c.idle += 1;
        }
    }
    c
}

pub struct RecordMetric<L, M, D> {
    pub lifecycle: L,
    pub metrics: M,
    /// Where the webhook receiver claims idle runners (the job table), when there is one.
    pub ledger: Option<D>,
    /// Where agents record their jobs instead of protecting their instances (the runner
    /// table), when there is one.
    pub occupancy: Option<Box<dyn Occupancy>>,
    pub settings: MetricSettings,
}

impl<L: Lifecycle, M: Metrics, D: JobLedger> RecordMetric<L, M, D> {
    pub async fn handle(&self, deadline: Instant) -> Result<BTreeMap<String, Counts>, Error> {
        let until = deadline
            .checked_sub(self.settings.deadline_margin)
            .unwrap_or_else(Instant::now);
        let groups = &self.settings.groups;
        let instances = patience::until(until, || self.lifecycle.instances(groups)).await?;
        let recorded_busy = match &self.occupancy {
            Some(occupancy) => patience::until(until, || occupancy.busy()).await?,
            None => BTreeSet::new(),
        };
        let mut out = BTreeMap::new();
        for group in groups {
            let c = count(
                instances.iter().filter(|i| &i.group == group),
                &recorded_busy,
            );
            let values = [
                (METRIC_IDLE_RUNNERS, f64::from(c.idle)),
                (METRIC_BUSY_RUNNERS, f64::from(c.busy)),
                (METRIC_ALL_RUNNERS_BUSY, f64::from(u8::from(c.all_busy()))),
            ];
            patience::until(until, || self.metrics.publish(group, &values)).await?;
            if let Some(ledger) = &self.ledger {
                // The scaling alarms do not need it: a failure costs the receiver's claims
                // for a minute (it adds instances instead), never the metrics.
                if let Err(e) = patience::until(until, || ledger.set_idle(group, c.idle)).await {
                    warn!(group, error = %e, "noting the idle runners for the receiver failed");
                }
            }
            info!(group, idle = c.idle, busy = c.busy, "published");
            out.insert(group.clone(), c);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes;
    use std::time::Duration;

    fn instance(id: &str, group: &str, state: &str, protected: bool) -> InstanceStatus {
        InstanceStatus {
            instance_id: id.into(),
            group: group.into(),
            lifecycle_state: state.into(),
            protected_from_scale_in: protected,
        }
    }

    fn handler(groups: &[&str]) -> RecordMetric<fakes::Asg, fakes::Cloudwatch, fakes::Ledger> {
        RecordMetric {
            lifecycle: fakes::Asg::default(),
            metrics: fakes::Cloudwatch::default(),
            ledger: Some(fakes::Ledger::default()),
            occupancy: None,
            settings: MetricSettings {
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                job_table: Some("jobs".into()),
                runner_table: None,
                deadline_margin: Duration::from_millis(100),
            },
        }
    }

    #[tokio::test]
    async fn counts_each_group_from_one_describe_by_state_and_protection() {
        let h = handler(&["a", "b"]);
        *h.lifecycle.instances.lock().unwrap() = vec![
            instance("i-idle", "a", "InService", false),
            instance("i-busy", "a", "InService", true),
            instance("i-busy-2", "a", "InService", true),
            // Not taking jobs: launching (or resuming), draining, leaving.
            instance("i-booting", "a", "Pending:Wait", false),
            instance("i-resuming", "a", "Pending:Proceed", false),
            instance("i-draining", "a", "Terminating:Wait", true),
            instance("i-gone", "a", "Terminating", false),
            instance("i-b", "b", "InService", false),
            // A group this deployment does not look after.
            instance("i-c", "c", "InService", true),
        ];
        let out = h
            .handle(Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out["a"], Counts { idle: 1, busy: 2 });
        assert_eq!(out["b"], Counts { idle: 1, busy: 0 });
        assert_eq!(out.len(), 2);
        // The webhook receiver claims these before adding instances.
        let noted = h.ledger.as_ref().unwrap().idle.lock().unwrap().clone();
        assert_eq!(noted, [("a".to_owned(), 1), ("b".to_owned(), 1)].into());
        assert_eq!(*h.lifecycle.describes.lock().unwrap(), 1);
        let published = h.metrics.published.lock().unwrap();
        assert_eq!(published.len(), 2, "one PutMetricData per group");
        assert_eq!(published[0].0, "a");
        assert_eq!(
            published[0].1,
            [
                ("IdleRunners".to_owned(), 1.0),
                ("BusyRunners".to_owned(), 2.0),
                ("AllRunnersBusy".to_owned(), 0.0)
            ]
        );
    }

    #[tokio::test]
    async fn a_runner_recorded_busy_in_the_runner_table_counts_busy_though_unprotected() {
        let mut h = handler(&["a"]);
        *h.lifecycle.instances.lock().unwrap() = vec![
            instance("i-recorded-busy", "a", "InService", false),
            instance("i-recorded-idle", "a", "InService", false),
            instance("i-protected", "a", "InService", true),
            instance("i-no-record", "a", "InService", false),
            // Busy in the table, but no longer taking jobs.
            instance("i-leaving", "a", "Terminating:Wait", false),
        ];
        h.occupancy = Some(Box::new(fakes::Runners {
            busy: [
                ("i-recorded-busy".to_owned(), true),
                ("i-recorded-idle".to_owned(), false),
                ("i-leaving".to_owned(), true),
            ]
            .into(),
            ..Default::default()
        }));
        let out = h
            .handle(Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out["a"], Counts { idle: 2, busy: 2 });
    }

    #[tokio::test]
    async fn an_empty_group_publishes_zeros_so_the_alarms_keep_their_data() {
        let h = handler(&["a"]);
        let out = h
            .handle(Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out["a"], Counts::default());
        assert_eq!(h.metrics.published.lock().unwrap().len(), 1);
    }

    #[test]
    fn all_busy_needs_a_busy_runner_and_no_idle_one() {
        let c = |idle, busy| Counts { idle, busy };
        assert!(c(0, 2).all_busy());
        assert!(!c(1, 2).all_busy());
        assert!(!c(0, 0).all_busy(), "an empty fleet has no demand to show");
    }
}
