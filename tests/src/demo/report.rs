//! The demo's report: what happened to the jobs, the instances, GitHub and AWS, computed
//! from the worlds' records (the GitHub fake's jobs, the Auto Scaling effects log).

use crate::github::state::{JobRec, Outcome};
use crate::github::webhooks::{DeliveryRec, Fault};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct Report {
    pub jobs: JobCounts,
    /// World seconds from queued to started, over the jobs that started.
    pub job_wait_seconds: Percentiles,
    /// The same waits, summed, by what the group could do meanwhile.
    pub job_wait_split: WaitSplit,
    pub instances: InstanceCounts,
    pub instance_seconds: InstanceSeconds,
    /// Capacity changes the alarms' step policies made.
    pub scaling: ScalingCounts,
    /// GitHub's `workflow_job` deliveries to the receiver (none without the webhook).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookCounts>,
    pub github: GithubCounts,
    pub aws: AwsCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos: Option<BTreeMap<&'static str, u32>>,
    /// The fleet file's `[refresh]`, when it asks for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<super::rollout::RefreshReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct JobCounts {
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub killed: usize,
    pub never_started: usize,
    /// Of those never started: asking for labels no runner of the fleet carries, so
    /// legitimately still queued.
    pub unroutable: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

#[derive(Debug, Default, PartialEq, Serialize)]
pub struct WaitSplit {
    /// World seconds jobs waited that a group at its max size could have cut: waiting for
    /// an instance or a runner (see `wait_split`).
    pub scaling: f64,
    /// World seconds jobs waited because even a group at its max size had no runner for
    /// them.
    pub at_max: f64,
    /// Jobs that waited at the max size at all.
    pub jobs_waiting_at_max: usize,
}

#[derive(Debug, Default, PartialEq, Serialize)]
pub struct WebhookCounts {
    /// `workflow_job` deliveries the receiver answered (redeliveries and forgeries too).
    pub received: usize,
    /// Answered with 2xx.
    pub accepted: usize,
    /// Answered with 4xx: a bad signature, a body it cannot read.
    pub rejected: usize,
    /// Answered with 5xx, or not at all: GitHub shows these as failed.
    pub failed: usize,
    /// Chaos: never sent.
    pub dropped: usize,
    /// Chaos: held back, so that later ones overtook them.
    pub delayed: usize,
    /// Chaos: sent again with the same GUID.
    pub duplicated: usize,
    /// Chaos: signed with another secret.
    pub forged: usize,
    /// Forgeries the receiver accepted (must be 0).
    pub forged_accepted: usize,
    /// Forgeries that got no 4xx because the receiver was down (chaos crashed it): neither
    /// refused nor acted on.
    pub forged_failed: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct InstanceCounts {
    /// Instances started from nothing (into service or into the warm pool).
    pub cold_launches: usize,
    /// Warm-pool instances that went into service.
    pub warm_resumes: usize,
    /// Launches ended by an abandoned lifecycle action (or its timeout), by the scaling
    /// activities' causes.
    pub abandoned: usize,
    pub terminated: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct InstanceSeconds {
    pub in_service: f64,
    /// In the warm pool, in any of its states.
    pub warm: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct ScalingCounts {
    /// By the idle-runner alarm's policy.
    pub scale_outs: usize,
    pub scale_ins: usize,
    /// One instance each, by the webhook receiver for a queued job.
    pub webhook_scale_outs: usize,
    /// Times a scale-in asked the group's custom termination policy which instances to
    /// take (`runner_table`; 0 without).
    pub termination_policy_asks: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct GithubCounts {
    /// REST requests warmfleet made (the fake's request log, refused and faulted ones too).
    pub api_calls: usize,
    pub orphan_runners_at_end: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct AwsCounts {
    pub leaked_secrets_at_end: usize,
    pub pending_hooks_at_end: usize,
    /// The agents' `SetInstanceProtection` calls per job that started (none when none
    /// started).
    pub protection_calls_per_job: Option<f64>,
    /// Calls by `service:Operation` to the services the testbed's AWS world serves itself
    /// (Auto Scaling, CloudWatch, SSM; not moto's Secrets Manager and DynamoDB), the demo's
    /// own set-up and checks included.
    pub calls: BTreeMap<String, u64>,
}

/// Per started job, to the hundredth.
pub fn per_job(calls: u64, started: usize) -> Option<f64> {
    (started > 0).then(|| (calls as f64 / started as f64 * 100.0).round() / 100.0)
}

impl Report {
    /// Every job succeeded or is legitimately queued, none killed, nothing left behind, and
    /// a rollout (if any) replaced every old instance.
    pub fn clean(&self) -> bool {
        let rolled_out = self.refresh.as_ref().is_none_or(|r| {
            r.status == "off" || (r.status == "Successful" && r.old_instances_at_end == 0)
        });
        self.jobs.succeeded + self.jobs.unroutable == self.jobs.total
            && self.jobs.killed == 0
            && self.github.orphan_runners_at_end == 0
            && self.aws.leaked_secrets_at_end == 0
            && self.aws.pending_hooks_at_end == 0
            && self.webhook.as_ref().map_or(0, |w| w.forged_accepted) == 0
            && rolled_out
    }
}

/// World seconds as the report shows them: to the tenth (what the world's clock and the
/// fakes' timestamps can tell apart), not `88.88999999999999`.
pub fn tenths(seconds: f64) -> f64 {
    (seconds * 10.0).round() / 10.0
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    tenths(sorted[i.min(sorted.len() - 1)])
}

/// Counts outcomes and queue waits (real seconds × `time_scale`); a job is unroutable when
/// it asks for a label outside `runner_labels` (lowercase).
pub fn jobs(
    jobs: &[JobRec],
    time_scale: f64,
    runner_labels: &[String],
) -> (JobCounts, Percentiles) {
    let mut counts = JobCounts {
        total: jobs.len(),
        ..JobCounts::default()
    };
    let mut waits: Vec<f64> = Vec::new();
    for job in jobs {
        match job.outcome {
            Outcome::Succeeded => counts.succeeded += 1,
            Outcome::Failed => counts.failed += 1,
            Outcome::Killed => counts.killed += 1,
            Outcome::Queued | Outcome::Running => {}
        }
        match job.started_at {
            Some(start) => {
                let real = (start - job.queued_at).num_milliseconds() as f64 / 1000.0;
                waits.push(real * time_scale);
            }
            None => {
                counts.never_started += 1;
                if !routable(&job.labels, runner_labels) {
                    counts.unroutable += 1;
                }
            }
        }
    }
    waits.sort_by(f64::total_cmp);
    let p = Percentiles {
        p50: percentile(&waits, 0.5),
        p95: percentile(&waits, 0.95),
        max: tenths(waits.last().copied().unwrap_or(0.0)),
    };
    (counts, p)
}

/// A job on the world's clock (seconds): queued, started, finished.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub queued: f64,
    pub started: Option<f64>,
    pub finished: Option<f64>,
}

/// Splits the waits by what held each job back. At a moment of a job's wait, it waits
/// because of the max size when the jobs running then plus those waiting that were queued
/// no later than it (itself included) outnumber `max`: even a full group has no runner for
/// it. Otherwise it waits for scaling: an instance to come, a runner to register. Sampled
/// every tenth of a world second.
pub fn wait_split(jobs: &[Span], max: u32) -> WaitSplit {
    const STEP: f64 = 0.1;
    let running = |t: f64| {
        jobs.iter()
            .filter(|k| k.started.is_some_and(|s| s <= t) && k.finished.is_none_or(|f| t < f))
            .count()
    };
    let mut split = WaitSplit::default();
    for (i, j) in jobs.iter().enumerate() {
        let Some(started) = j.started else { continue };
        let mut at_max = 0.0;
        let mut t = j.queued;
        while t < started {
            let ahead = jobs
                .iter()
                .enumerate()
                .filter(|(n, k)| {
                    (k.queued < j.queued || (k.queued == j.queued && *n <= i))
                        && k.queued <= t
                        && k.started.is_none_or(|s| t < s)
                })
                .count();
            let dt = STEP.min(started - t);
            if running(t) + ahead > max as usize {
                at_max += dt;
            }
            t += dt;
        }
        split.at_max += at_max;
        split.scaling += started - j.queued - at_max;
        if at_max > 0.0 {
            split.jobs_waiting_at_max += 1;
        }
    }
    split.at_max = tenths(split.at_max);
    split.scaling = tenths(split.scaling);
    split
}

/// Counts the `workflow_job` deliveries of the GitHub fake's record.
pub fn webhooks(deliveries: &[DeliveryRec]) -> WebhookCounts {
    let mut c = WebhookCounts::default();
    for d in deliveries.iter().filter(|d| d.event == "workflow_job") {
        match d.fault {
            Some(Fault::Dropped) => c.dropped += 1,
            Some(Fault::Delayed) => c.delayed += 1,
            Some(Fault::Duplicate) => c.duplicated += 1,
            Some(Fault::Forged) => c.forged += 1,
            None => {}
        }
        match d.status {
            Some(s) => {
                c.received += 1;
                match s {
                    200..=299 => {
                        c.accepted += 1;
                        if d.fault == Some(Fault::Forged) {
                            c.forged_accepted += 1;
                        }
                    }
                    400..=499 => c.rejected += 1,
                    _ => {
                        c.failed += 1;
                        if d.fault == Some(Fault::Forged) {
                            c.forged_failed += 1;
                        }
                    }
                }
            }
            None if d.fault == Some(Fault::Forged) => {
                c.failed += 1;
                c.forged_failed += 1;
            }
            None if d.fault != Some(Fault::Dropped) => c.failed += 1,
            None => {}
        }
    }
    c
}

/// Whether a runner carrying `runner_labels` (lowercase) can take a job asking for `labels`.
pub fn routable(labels: &[String], runner_labels: &[String]) -> bool {
    labels
        .iter()
        .all(|l| runner_labels.contains(&l.to_lowercase()))
}

fn is_warm(state: &str) -> bool {
    state.starts_with("Warmed") && state != "WarmedTerminated"
}

/// Instance counts and seconds from the Auto Scaling effects log (`GET
/// /_testbed/aws/effects`: `{"at": world seconds, "effect": {"StateChanged": {...}}}`) up to
/// world time `end`. `abandoned` is left to the caller: a scale-in of a launching instance
/// makes the same state change, only the scaling activity's cause tells them apart.
pub fn instances(effects: &[Value], end: f64) -> (InstanceCounts, InstanceSeconds) {
    let mut counts = InstanceCounts::default();
    let mut secs = InstanceSeconds::default();
    // Per instance: its state (None before the first change) and since when.
    let mut open: BTreeMap<String, (Option<String>, f64)> = BTreeMap::new();
    let add = |state: &str, from: f64, to: f64, secs: &mut InstanceSeconds| {
        if state == "InService" {
            secs.in_service += to - from;
        } else if is_warm(state) {
            secs.warm += to - from;
        }
    };
    for e in effects {
        let at = e["at"].as_f64().unwrap_or_default();
        let effect = &e["effect"];
        if let Some(id) = effect["Start"]["instance"].as_str() {
            counts.cold_launches += 1;
            open.insert(id.to_owned(), (None, at));
        }
        let change = &effect["StateChanged"];
        let (Some(id), Some(from), Some(to)) = (
            change["instance"].as_str(),
            change["from"].as_str(),
            change["to"].as_str(),
        ) else {
            continue;
        };
        if let Some((_, since)) = open.get(id) {
            add(from, *since, at, &mut secs);
        }
        if matches!(from, "WarmedHibernated" | "WarmedStopped" | "WarmedRunning") && to == "Pending"
        {
            counts.warm_resumes += 1;
        }
        if matches!(to, "Terminated" | "WarmedTerminated") {
            counts.terminated += 1;
            open.remove(id);
        } else {
            open.insert(id.to_owned(), (Some(to.to_owned()), at));
        }
    }
    for (state, since) in open.values() {
        if let Some(state) = state {
            add(state, *since, end.max(*since), &mut secs);
        }
    }
    secs.in_service = tenths(secs.in_service);
    secs.warm = tenths(secs.warm);
    (counts, secs)
}

/// Instances still held in a lifecycle hook's wait state, from the same log.
pub fn pending_hooks(effects: &[Value]) -> usize {
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for e in effects {
        let change = &e["effect"]["StateChanged"];
        if let (Some(id), Some(to)) = (change["instance"].as_str(), change["to"].as_str()) {
            last.insert(id, to);
        }
    }
    last.values().filter(|s| s.ends_with("Wait")).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_per_job_are_over_the_jobs_that_started() {
        assert_eq!(per_job(56, 40), Some(1.4));
        assert_eq!(per_job(2, 3), Some(0.67));
        assert_eq!(per_job(5, 0), None);
    }

    fn change(at: f64, id: &str, from: &str, to: &str) -> Value {
        json!({"at": at, "effect": {"StateChanged": {"instance": id, "from": from, "to": to}}})
    }

    #[test]
    fn instance_time_and_counts_follow_the_effects() {
        let effects = vec![
            json!({"at": 0.0, "effect": {"Start": {"instance": "i-1"}}}),
            change(40.0, "i-1", "WarmedPending", "WarmedPendingWait"),
            change(45.0, "i-1", "WarmedPendingWait", "WarmedPendingProceed"),
            change(55.0, "i-1", "WarmedPendingProceed", "WarmedHibernated"),
            change(100.0, "i-1", "WarmedHibernated", "Pending"),
            json!({"at": 100.0, "effect": {"Resume": {"instance": "i-1"}}}),
            change(105.0, "i-1", "Pending", "PendingWait"),
            change(106.0, "i-1", "PendingWait", "PendingProceed"),
            change(106.0, "i-1", "PendingProceed", "InService"),
            json!({"at": 10.0, "effect": {"Start": {"instance": "i-2"}}}),
            change(50.0, "i-2", "Pending", "PendingWait"),
            change(60.0, "i-2", "PendingWait", "Terminating"),
            change(61.0, "i-2", "Terminating", "TerminatingWait"),
            change(62.0, "i-2", "TerminatingWait", "TerminatingProceed"),
            change(63.0, "i-2", "TerminatingProceed", "Terminated"),
            json!({"at": 64.0, "effect": {"Start": {"instance": "i-3"}}}),
            change(70.0, "i-3", "Pending", "PendingWait"),
        ];
        let (c, s) = instances(&effects, 206.0);
        assert_eq!(c.cold_launches, 3);
        assert_eq!(c.warm_resumes, 1);
        assert_eq!(c.terminated, 1);
        assert_eq!(s.warm, 100.0, "Warmed:Pending from the start to the resume");
        assert_eq!(s.in_service, 100.0, "from 106 to the end at 206");
        assert_eq!(pending_hooks(&effects), 1, "i-3 waits in Pending:Wait");
    }

    #[test]
    fn waits_are_in_world_seconds_and_unroutable_jobs_are_told_apart() {
        let at = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let job = |queued: i64, started: Option<i64>, outcome, labels: &[&str]| JobRec {
            id: 1,
            name: "j".into(),
            scope: "orgs/acme".into(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            duration_secs: 1.0,
            fail: false,
            queued_at: at(queued),
            started_at: started.map(at),
            finished_at: None,
            runner_id: None,
            runner_name: None,
            outcome,
            message: None,
            renewed_at: None,
        };
        let runner = vec!["warmfleet".to_owned(), "linux".to_owned()];
        let (c, w) = jobs(
            &[
                job(0, Some(1), Outcome::Succeeded, &["Linux"]),
                job(0, Some(3), Outcome::Killed, &["linux"]),
                job(0, None, Outcome::Queued, &["gpu"]),
                job(0, None, Outcome::Queued, &["linux"]),
            ],
            10.0,
            &runner,
        );
        assert_eq!(
            (
                c.total,
                c.succeeded,
                c.killed,
                c.never_started,
                c.unroutable
            ),
            (4, 1, 1, 2, 1)
        );
        assert_eq!((w.p50, w.max), (30.0, 30.0));
    }

    #[test]
    fn a_wait_is_at_max_only_while_a_full_group_could_not_run_the_job() {
        let job = |queued: f64, started: f64, finished: f64| Span {
            queued,
            started: Some(started),
            finished: Some(finished),
        };
        // Max 2. Jobs 1 and 2 wait for instances (0-10); job 3 has no room until job 1
        // ends at 30, then waits 5 more for a runner; job 4 never started.
        let jobs = [
            job(0.0, 10.0, 30.0),
            job(0.0, 10.0, 50.0),
            job(5.0, 35.0, 60.0),
            Span {
                queued: 40.0,
                started: None,
                finished: None,
            },
        ];
        let split = wait_split(&jobs, 2);
        assert_eq!(split.jobs_waiting_at_max, 1);
        assert_eq!(split.at_max, 25.0, "job 3 from 5 to 30");
        assert_eq!(split.scaling, 10.0 + 10.0 + 5.0);
        assert_eq!(wait_split(&jobs, 3).at_max, 0.0, "three fit");
    }

    #[test]
    fn deliveries_are_counted_by_answer_and_by_chaos() {
        let d = |fault: Option<Fault>, status: Option<u16>| DeliveryRec {
            hook_id: 1,
            guid: "g".into(),
            event: "workflow_job".into(),
            fault,
            status,
        };
        let mut ping = d(None, Some(200));
        ping.event = "ping".into();
        let c = webhooks(&[
            ping,
            d(None, Some(200)),
            d(Some(Fault::Duplicate), Some(200)),
            d(Some(Fault::Delayed), Some(503)),
            d(Some(Fault::Dropped), None),
            d(Some(Fault::Forged), Some(401)),
            d(Some(Fault::Forged), Some(202)),
            d(Some(Fault::Forged), Some(502)),
            d(None, None),
        ]);
        assert_eq!(
            c,
            WebhookCounts {
                received: 6,
                accepted: 3,
                rejected: 1,
                failed: 3,
                dropped: 1,
                delayed: 1,
                duplicated: 1,
                forged: 3,
                forged_accepted: 1,
                forged_failed: 1,
            }
        );
    }

    #[test]
    fn world_seconds_are_shown_to_the_tenth() {
        assert_eq!(tenths(88.88999999999999), 88.9);
        assert_eq!(
            serde_json::to_string(&Percentiles {
                p50: tenths(88.88999999999999),
                p95: tenths(207.04999),
                max: tenths(0.04),
            })
            .unwrap(),
            r#"{"p50":88.9,"p95":207.0,"max":0.0}"#
        );
        let effects = vec![
            json!({"at": 0.0, "effect": {"Start": {"instance": "i-1"}}}),
            change(0.1, "i-1", "Pending", "InService"),
        ];
        let (_, s) = instances(&effects, 0.3);
        assert_eq!(s.in_service, 0.2, "0.3 - 0.1 is 0.19999999999999998 in f64");
    }
}
