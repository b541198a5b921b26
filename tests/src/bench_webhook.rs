//! The webhook receiver's part of `bench-control`: signed `workflow_job` deliveries through
//! its function URL, as GitHub sends them, and what each cost: cold init, handler time,
//! peak memory, and the capacity they added — duplicates and forgeries must add none, which
//! bounds the over-provisioning they can cause.

use crate::github::state::{JobEvent, JobRec};
use crate::github::webhooks::{signature, workflow_job_payload};
use crate::world::{World, WEBHOOK_FUNCTION};
use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use warmfleet_core::naming;

/// The group the deliveries scale: its runners carry `warmfleet` and its name.
pub const GROUP: &str = "bench-webhook";
/// New jobs queued, one delivery each.
const NEW_JOBS: u64 = 20;
/// Deliveries of an already queued job: GitHub's Redeliver (same GUID) and duplicates.
const REPEATS: u64 = 10;
const FORGED: u64 = 5;

#[derive(Debug, Serialize)]
pub struct Kind {
    what: &'static str,
    deliveries: u64,
    /// The receiver's HTTP answers, by status.
    statuses: BTreeMap<u16, u64>,
    duration_ms_p50: f64,
    duration_ms_max: f64,
    /// The group's desired capacity these deliveries added.
    capacity_added: i64,
    /// The AWS world's API calls they made, per delivery (DynamoDB is moto's: not counted).
    pub aws_calls_per_delivery: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct WebhookBench {
    init_ms: Option<f64>,
    peak_rss_kib: Option<u64>,
    pub kinds: Vec<Kind>,
}

/// The kinds of delivery measured.
#[derive(Clone, Copy)]
enum Plan {
    /// `queued`, a new job each.
    New,
    /// `queued` for the first job again: half GitHub's Redeliver (its first GUID), half
    /// duplicates with new GUIDs.
    Again,
    /// `in_progress`: the queue time is published.
    Started,
    /// `queued` for jobs that do not exist, signed with another secret.
    Forged,
}

impl Plan {
    fn describe(self) -> (&'static str, u64) {
        match self {
            Plan::New => ("queued, a new job each", NEW_JOBS),
            Plan::Again => ("queued again: redelivered and duplicated", REPEATS),
            Plan::Started => ("in_progress (publishes the queue time)", NEW_JOBS),
            Plan::Forged => ("forged (another secret)", FORGED),
        }
    }

    /// The `i`th delivery's event and GUID.
    fn delivery(self, i: u64) -> (JobEvent, String) {
        match self {
            Plan::New => (job(i + 1, "queued"), format!("new-{i}")),
            Plan::Again if i % 2 == 0 => (job(1, "queued"), "new-0".into()),
            Plan::Again => (job(1, "queued"), format!("dup-{i}")),
            Plan::Started => (job(i + 1, "in_progress"), format!("run-{i}")),
            Plan::Forged => (job(1_000 + i, "queued"), format!("forged-{i}")),
        }
    }
}

fn job(id: u64, action: &'static str) -> JobEvent {
    let now = chrono::Utc::now();
    let mut job = JobRec::queued(
        id,
        "repos/acme/app",
        vec!["warmfleet".into(), GROUP.into()],
        now,
    );
    job.started_at = (action != "queued").then_some(now);
    JobEvent { action, job }
}

impl World {
    /// The job policy the module gives the group, and a group big enough that no delivery
    /// meets its max size.
    pub async fn webhook_group(&self) -> anyhow::Result<()> {
        for params in [
            vec![
                ("Action", "CreateAutoScalingGroup"),
                ("AutoScalingGroupName", GROUP),
                ("MinSize", "0"),
                ("MaxSize", "1000"),
            ],
            vec![
                ("Action", "PutScalingPolicy"),
                ("AutoScalingGroupName", GROUP),
                ("PolicyName", naming::POLICY_JOB_QUEUED),
                ("PolicyType", "SimpleScaling"),
                ("AdjustmentType", "ChangeInCapacity"),
                ("ScalingAdjustment", "1"),
                ("Cooldown", "0"),
            ],
        ] {
            let mut form = params;
            form.push(("Version", "2011-01-01"));
            let resp = self.http.post(&self.aws).form(&form).send().await?;
            if !resp.status().is_success() {
                bail!("{}: {}", form[0].1, resp.text().await?);
            }
        }
        Ok(())
    }

    async fn desired(&self) -> anyhow::Result<i64> {
        let asg = aws_sdk_autoscaling::Client::new(&self.sdk);
        let out = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(GROUP)
            .send()
            .await?;
        out.auto_scaling_groups()
            .first()
            .and_then(|g| g.desired_capacity())
            .map(i64::from)
            .context("the webhook's group is gone")
    }

    /// Posts one delivery to the receiver's function URL; its HTTP status.
    async fn deliver(&self, secret: &str, guid: &str, body: &str) -> anyhow::Result<u16> {
        let resp = self
            .http
            .post(format!("{}/_function_url/{WEBHOOK_FUNCTION}/", self.aws))
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", guid)
            .header("x-hub-signature-256", signature(secret, body.as_bytes()))
            .body(body.to_owned())
            .send()
            .await?;
        Ok(resp.status().as_u16())
    }

    async fn webhook_calls(&self) -> anyhow::Result<Vec<Value>> {
        let calls: Vec<Value> = self.aws_control("invocations").await?;
        Ok(calls
            .into_iter()
            .filter(|c| c["function"] == WEBHOOK_FUNCTION)
            .collect())
    }

    /// Sends each kind of delivery and reads what the invocations cost.
    pub async fn bench_webhook(&self) -> anyhow::Result<WebhookBench> {
        let secrets = aws_sdk_secretsmanager::Client::new(&self.secrets_sdk);
        let secret = secrets
            .get_secret_value()
            .secret_id(&self.webhook_secret)
            .send()
            .await?
            .secret_string()
            .context("the webhook secret has no string")?
            .to_owned();
        let mut kinds = vec![];
        // The hook's ping came first.
        let mut seen = self.webhook_calls().await?.len();
        for plan in [Plan::New, Plan::Again, Plan::Started, Plan::Forged] {
            let (what, n) = plan.describe();
            let before = self.desired().await?;
            let calls_before: BTreeMap<String, u64> = self.aws_control("calls").await?;
            let mut statuses = BTreeMap::new();
            for i in 0..n {
                let (event, guid) = plan.delivery(i);
                let key = match plan {
                    Plan::Forged => "not-the-secret",
                    _ => secret.as_str(),
                };
                let body = workflow_job_payload(&event).to_string();
                *statuses
                    .entry(self.deliver(key, &guid, &body).await?)
                    .or_default() += 1;
            }
            let mine = self.webhook_calls().await?;
            let mut durations: Vec<f64> = mine[seen..]
                .iter()
                .filter_map(|c| c["duration_ms"].as_f64())
                .collect();
            seen = mine.len();
            durations.sort_by(f64::total_cmp);
            let calls = crate::bench_scale::since(&calls_before, &self.aws_control("calls").await?);
            let aws_calls_per_delivery = calls
                .into_iter()
                .filter(|(_, c)| *c > 0)
                .map(|(op, c)| (op, c as f64 / n as f64))
                .collect();
            kinds.push(Kind {
                aws_calls_per_delivery,
                what,
                deliveries: n,
                statuses,
                duration_ms_p50: durations.get(durations.len() / 2).copied().unwrap_or(0.0),
                duration_ms_max: durations.last().copied().unwrap_or(0.0),
                capacity_added: self.desired().await? - before,
            });
        }
        let mine = self.webhook_calls().await?;
        Ok(WebhookBench {
            init_ms: mine.iter().find_map(|c| c["init_ms"].as_f64()),
            peak_rss_kib: mine
                .iter()
                .filter_map(|c| c["pid"].as_u64())
                .filter_map(crate::bench::peak_rss_kib)
                .max(),
            kinds,
        })
    }
}
