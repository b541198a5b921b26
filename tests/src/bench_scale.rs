//! `warmfleet-testbed bench-scale`: the control plane at fleet scale (not a test), written
//! to `target/bench/scale.json` and printed as a table.
//!
//! For each fleet size the AWS world holds that many instances in service (the group is
//! created at that size; no process runs in them: test set-up, as the issue allows) and the
//! GitHub fake as many runners, registered through its runner protocol under the
//! instances' names; a tenth of the instances are protected (running a job), and every
//! instance has a record in the runner table (the same tenth busy: both busy signals of the
//! module, so that the functions read both). Then the real Lambda binaries run on the
//! world: record_metric three times, the sweep twice (its first listing reads every page
//! anew, the worst case of a fleet whose every page changed; the second finds them
//! unchanged), twenty launches through the registration function with the group's shared
//! token secret, and the group's custom termination policy asked for 100 instances of all
//! of them. How long moto takes to scan the table (what the functions' figures include of
//! the fake) is timed from outside. What they cost is read from the fakes: GitHub
//! requests as GitHub charges them (neither 304s nor `GET /rate_limit`), the AWS world's
//! calls per operation. From those, the sweep's pacing (`budget`) and the job stream, it
//! computes the deployment's GitHub requests an hour and AWS calls a minute.
//!
//! Not counted by the world: moto's Secrets Manager and DynamoDB calls; the report gives
//! them from the code (`per_job_from_code`, `per_minute_from_code`, `per_sweep_from_code`).
//! The receiver's `ExecutePolicy` is counted once per job (the module's default); with
//! `webhook_claims_idle_runners` only for the jobs of a minute beyond the idle runners
//! record_metric counted, given beside it.

use crate::bench::{launch, peak_rss_kib, scheduled};
use crate::world::{Spec, World, ORG, PAT, RUNNER_TABLE};
use anyhow::bail;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_control::budget::Budget;
use warmfleet_core::aws::RunnerTable;
use warmfleet_core::github::{GithubClient, GithubCredential, GithubTarget, RetryPolicy};
use warmfleet_core::ports::Occupancy;

const GROUP: &str = "scale";
/// The module's sweep schedule and default share of the rate limit.
const SWEEP_PERIOD: Duration = Duration::from_secs(300);
const SHARE: f64 = 0.2;
/// A shared token is handed out while it has 45 of its 60 minutes left: a new one every
/// 15 minutes, per kind (registration, remove), while launches and drains go on.
const TOKENS_PER_HOUR_PER_KIND: f64 = 4.0;
const LAUNCHES: usize = 20;

#[derive(Debug, clap::Args)]
pub struct BenchScaleArgs {
    /// Where the Lambda binaries are (`target/dist` after `cargo build --profile dist`).
    #[arg(long, default_value = "target/dist")]
    pub lambdas: PathBuf,
    /// Fleet sizes: runners and instances.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    pub runners: Vec<usize>,
    /// Job starts a minute for every 10,000 runners (the job stream the figures assume).
    #[arg(long, default_value_t = 1000)]
    pub jobs_per_minute_per_10k: usize,
    /// The JSON report.
    #[arg(long, default_value = "target/bench/scale.json")]
    pub out: PathBuf,
}

/// One invocation: its duration, GitHub requests charged, AWS calls by operation.
#[derive(Debug, Serialize)]
struct Invocation {
    duration_ms: f64,
    github_charged: u64,
    aws_calls: BTreeMap<String, u64>,
    response: Value,
}

#[derive(Debug, Serialize)]
struct FunctionFigures {
    init_ms: Option<f64>,
    peak_rss_kib: Option<u64>,
    invocations: Vec<Invocation>,
}

#[derive(Debug, Serialize)]
struct Size {
    runners: usize,
    jobs_per_minute: f64,
    setup_seconds: f64,
    record_metric: FunctionFigures,
    sweep: FunctionFigures,
    registration: FunctionFigures,
    /// The termination-policy function answering Auto Scaling: 100
    /// instances of every one in service.
    termination_policy: FunctionFigures,
    /// Instances it named (100 unless its 1.5 s ran out first).
    termination_policy_chose: usize,
    /// moto's `Scan` of the whole runner table, timed from the benchmark (part of
    /// record_metric's and the sweep's durations here; not of DynamoDB's).
    runner_table_scan_ms: f64,
    /// How often the sweep lists every runner at the module's defaults.
    sweep_listing_interval_s: u64,
    github_per_hour: BTreeMap<&'static str, f64>,
    /// At the module's defaults (`webhook_claims_idle_runners` and `use_runner_table` off).
    aws_per_minute: BTreeMap<String, f64>,
    /// With `use_runner_table`: the agents' DynamoDB writes instead of their Auto Scaling
    /// calls.
    aws_per_minute_with_runner_table: BTreeMap<String, f64>,
    /// The receiver's `ExecutePolicy` a minute with `webhook_claims_idle_runners` on.
    execute_policy_per_minute_with_claims: f64,
}

/// `after` less `before`, per key.
pub(crate) fn since(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

impl World {
    /// GitHub requests charged so far (the fake's request log, as GitHub charges).
    async fn github_charged(&self) -> anyhow::Result<u64> {
        let log: Vec<Value> = self.github_control("requests").await?;
        Ok(log
            .iter()
            .filter(|r| r["status"] != 304 && r["path"] != "/rate_limit")
            .count() as u64)
    }

    async fn invoke_measured(&self, function: &str, event: &Value) -> anyhow::Result<Invocation> {
        let (gh, aws) = (
            self.github_charged().await?,
            self.aws_control::<BTreeMap<String, u64>>("calls").await?,
        );
        let (failed, response) = self.invoke(function, event).await?;
        if failed {
            bail!("{function} failed: {response}");
        }
        let last = self.last_invocation(function).await?;
        Ok(Invocation {
            duration_ms: last["duration_ms"].as_f64().unwrap_or_default(),
            github_charged: self.github_charged().await? - gh,
            aws_calls: since(&aws, &self.aws_control("calls").await?),
            response,
        })
    }

    async fn figures(&self, function: &str, events: &[Value]) -> anyhow::Result<FunctionFigures> {
        let mut invocations = vec![];
        for e in events {
            invocations.push(self.invoke_measured(function, e).await?);
        }
        let calls: Vec<Value> = self.aws_control("invocations").await?;
        let mine = calls.iter().filter(|c| c["function"] == function);
        Ok(FunctionFigures {
            init_ms: mine.clone().find_map(|c| c["init_ms"].as_f64()),
            peak_rss_kib: mine
                .filter_map(|c| c["pid"].as_u64())
                .filter_map(peak_rss_kib)
                .max(),
            invocations,
        })
    }

    /// The group at `n` instances in service, a tenth of them protected and recorded busy
    /// (the rest recorded idle), a runner for each, registered through the fake's runner
    /// protocol under its instance's name; the instances' ids.
    async fn fleet(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let asg = aws_sdk_autoscaling::Client::new(&self.sdk);
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(GROUP)
            .min_size(0)
            .max_size(n as i32)
            .desired_capacity(n as i32)
            .send()
            .await?;
        let until = Instant::now() + Duration::from_secs(600);
        let ids = loop {
            let out = asg
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(GROUP)
                .send()
                .await?;
            let instances = out
                .auto_scaling_groups()
                .first()
                .map(|g| g.instances().to_vec())
                .unwrap_or_default();
            let ids: Vec<String> = instances
                .iter()
                .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
                .filter_map(|i| i.instance_id().map(str::to_owned))
                .collect();
            if ids.len() == n {
                break ids;
            }
            if Instant::now() > until {
                bail!("{} of {n} instances in service after 10 minutes", ids.len());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        for batch in ids.iter().step_by(10).collect::<Vec<_>>().chunks(50) {
            asg.set_instance_protection()
                .auto_scaling_group_name(GROUP)
                .set_instance_ids(Some(batch.iter().map(|s| (*s).clone()).collect()))
                .protected_from_scale_in(true)
                .send()
                .await?;
        }
        // As the agents with a runner table: every instance has run a job, the same tenth
        // runs one now.
        let table = RunnerTable::new(&self.secrets_sdk, RUNNER_TABLE);
        let mut tasks = tokio::task::JoinSet::new();
        let numbered: Vec<(usize, String)> = ids.iter().cloned().enumerate().collect();
        for chunk in numbered.chunks(numbered.len().div_ceil(8).max(1)) {
            let (table, chunk) = (table.clone(), chunk.to_vec());
            tasks.spawn(async move {
                for (n, id) in chunk {
                    table.record(&id, GROUP, n % 10 == 0).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let target = GithubTarget::parse(&format!("{}/{ORG}", self.github), None)?;
        let client = GithubClient::connect(
            target,
            &GithubCredential::Token(PAT.to_owned().into()),
            RetryPolicy::default(),
            Instant::now() + Duration::from_secs(10),
        )
        .await?;
        let token = client
            .registration_token(Instant::now() + Duration::from_secs(10))
            .await?;
        let token = secrecy::ExposeSecret::expose_secret(&token.token).to_owned();
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in ids.chunks(ids.len().div_ceil(8).max(1)) {
            let (http, url, token) = (self.http.clone(), self.github.clone(), token.clone());
            let names = chunk.to_vec();
            tasks.spawn(async move {
                for name in names {
                    let resp = http
                        .post(format!("{url}/_runner/register"))
                        .json(&json!({"url": format!("{url}/{ORG}"), "token": token,
                            "name": name, "labels": ["warmfleet", GROUP, name], "runner_group": null,
                            "replace": false, "ephemeral": false, "no_default_labels": true,
                            "version": crate::runner::VERSION}))
                        .send()
                        .await?;
                    if !resp.status().is_success() {
                        bail!("registering {name}: {}", resp.status());
                    }
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(ids)
    }
}

/// Auto Scaling's question to the group's custom termination policy: `capacity` of these
/// instances, in one zone, on a scale-in; as AWS, at most 30,000 of them, and
/// `HasMoreInstances` when there are more.
fn termination_request(ids: &[String], capacity: usize) -> Value {
    const AT_MOST: usize = 30_000;
    json!({
        "AutoScalingGroupName": GROUP,
        "CapacityToTerminate": [{"AvailabilityZone": crate::aws::ZONE, "Capacity": capacity,
            "InstanceMarketOption": "on-demand"}],
        "Instances": ids.iter().take(AT_MOST).map(|id| json!({"AvailabilityZone": crate::aws::ZONE,
            "InstanceId": id, "InstanceType": "m7g.large", "InstanceMarketOption": "on-demand"}))
            .collect::<Vec<_>>(),
        "Cause": "SCALE_IN",
        "HasMoreInstances": ids.len() > AT_MOST,
    })
}

/// Each per-minute figure of `calls` (one invocation's), `times` a minute.
fn add(per_minute: &mut BTreeMap<String, f64>, calls: &BTreeMap<String, u64>, times: f64) {
    for (op, n) in calls {
        *per_minute.entry(op.clone()).or_default() += *n as f64 * times;
    }
}

/// The webhook receiver's AWS calls per job (a `queued` and an `in_progress` delivery),
/// measured once through its function URL.
async fn webhook_per_job(args: &BenchScaleArgs) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut spec = Spec::lambdas(args.lambdas.clone(), &[crate::bench_webhook::GROUP]);
    spec.webhook = true;
    let world = World::start(&spec).await?;
    let result = async {
        world.webhook_group().await?;
        let bench = world.bench_webhook().await?;
        let mut per_job = BTreeMap::new();
        // The first kind is a new job queued, the third its start (bench_webhook's order).
        for kind in [&bench.kinds[0], &bench.kinds[2]] {
            for (op, n) in &kind.aws_calls_per_delivery {
                *per_job.entry(op.clone()).or_default() += n;
            }
        }
        anyhow::Ok(per_job)
    }
    .await;
    world.stop().await;
    result
}

pub async fn run(args: BenchScaleArgs) -> anyhow::Result<i32> {
    eprintln!("==> the webhook receiver's calls per job");
    let webhook = webhook_per_job(&args).await?;
    let budget = Budget { share: SHARE };
    let mut sizes = vec![];
    for &n in &args.runners {
        eprintln!("==> {n} runners");
        let started = Instant::now();
        let mut spec = Spec::lambdas(args.lambdas.clone(), &[GROUP]);
        // Every sweep lists here (its pacing is computed below, at the module's schedule).
        spec.function_env.push((
            "deregistration",
            "WARMFLEET_SWEEP_PERIOD".into(),
            "1h".into(),
        ));
        spec.function_timeout = 900.0;
        spec.bare_instances = true;
        spec.runner_table = true;
        let world = World::start(&spec).await?;
        let result = async {
            let ids = world.fleet(n).await?;
            let setup_seconds = started.elapsed().as_secs_f64();
            eprintln!("    set up in {setup_seconds:.0} s");
            let record_metric = world
                .figures("record-metric", &[scheduled(), scheduled(), scheduled()])
                .await?;
            let sweep = world
                .figures("deregistration", &[scheduled(), scheduled()])
                .await?;
            let launches: Vec<Value> = (0..LAUNCHES).map(|n| launch(GROUP, n)).collect();
            let registration = world.figures("registration", &launches).await?;
            let mut termination_policy = world
                .figures(
                    crate::world::TERMINATION_POLICY_FUNCTION,
                    &[termination_request(&ids, 100)],
                )
                .await?;
            let termination_policy_chose = termination_policy.invocations[0].response
                ["InstanceIDs"]
                .as_array()
                .map_or(0, Vec::len);
            // How many it named is the figure; not their hundred ids.
            termination_policy.invocations[0].response =
                json!({ "InstanceIDs": termination_policy_chose });
            let scan = Instant::now();
            RunnerTable::new(&world.secrets_sdk, RUNNER_TABLE)
                .busy()
                .await?;
            let runner_table_scan_ms = scan.elapsed().as_secs_f64() * 1000.0;
            let interval = budget.listing_interval(n, Some(5000), SWEEP_PERIOD);
            let listings_per_hour = 3600.0 / interval.as_secs_f64();
            let jobs_per_minute = n as f64 / 10_000.0 * args.jobs_per_minute_per_10k as f64;
            let github_per_hour = BTreeMap::from([
                (
                    "record_metric",
                    record_metric.invocations[0].github_charged as f64 * 60.0,
                ),
                (
                    "sweep listings (every page changed)",
                    sweep.invocations[0].github_charged as f64 * listings_per_hour,
                ),
                (
                    "registration and remove tokens",
                    2.0 * TOKENS_PER_HOUR_PER_KIND,
                ),
                ("webhook receiver", 0.0),
            ]);
            let mut aws_per_minute = BTreeMap::new();
            add(
                &mut aws_per_minute,
                &record_metric.invocations[1].aws_calls,
                1.0,
            );
            add(
                &mut aws_per_minute,
                &sweep.invocations[1].aws_calls,
                60.0 / SWEEP_PERIOD.as_secs_f64(),
            );
            // Each job: the agent protects its instance and lifts it after (2 calls).
            *aws_per_minute
                .entry("autoscaling:SetInstanceProtection".into())
                .or_default() += 2.0 * jobs_per_minute;
            // The receiver's calls per queued job, as the module's default has it (an
            // instance for every job); with claims, `ExecutePolicy` only for the jobs beyond
            // the idle runners record_metric counted.
            for (op, per_job) in &webhook {
                *aws_per_minute.entry(op.clone()).or_default() += per_job * jobs_per_minute;
            }
            // With the runner table the agents write DynamoDB instead, as many times.
            let mut aws_per_minute_with_runner_table = aws_per_minute.clone();
            aws_per_minute_with_runner_table.remove("autoscaling:SetInstanceProtection");
            aws_per_minute_with_runner_table.insert(
                "dynamodb:UpdateItem (the agents, on the runner table)".into(),
                2.0 * jobs_per_minute,
            );
            let idle = record_metric.invocations[1].response[GROUP]["idle"]
                .as_f64()
                .unwrap_or_default();
            let execute_policy_per_minute_with_claims = webhook
                .get("autoscaling:ExecutePolicy")
                .map_or(0.0, |per_job| per_job * (jobs_per_minute - idle).max(0.0));
            anyhow::Ok(Size {
                runners: n,
                jobs_per_minute,
                setup_seconds,
                record_metric,
                sweep,
                registration,
                termination_policy,
                termination_policy_chose,
                runner_table_scan_ms,
                sweep_listing_interval_s: interval.as_secs(),
                github_per_hour,
                aws_per_minute,
                aws_per_minute_with_runner_table,
                execute_policy_per_minute_with_claims,
            })
        }
        .await;
        world.stop().await;
        let size = result?;
        print_size(&size);
        sizes.push(size);
    }
    let report = json!({
        "lambdas": args.lambdas,
        "share": SHARE,
        "sweep_period_s": SWEEP_PERIOD.as_secs(),
        "webhook_aws_calls_per_job": webhook,
        "per_job_from_code": {
            "autoscaling:SetInstanceProtection": 2,
            "dynamodb:UpdateItem (webhook ledger: queued, in_progress; the idle claim)": 5,
        },
        "per_minute_from_code": {
            "dynamodb:UpdateItem (record_metric notes each group's idle runners)": 1,
            "dynamodb:Scan (record_metric reads the runner table, a page per MB)": 1,
        },
        "per_sweep_from_code": {
            "secretsmanager:ListSecrets": "one per 100 instance secrets, on sweeps that list",
            "secretsmanager:GetSecretValue": "one per instance the terminate hook holds",
        },
        "sizes": sizes,
    });
    crate::bench::write_report(&args.out, &report)?;
    Ok(0)
}

fn print_size(s: &Size) {
    let p50 = |f: &FunctionFigures| {
        let mut d: Vec<f64> = f.invocations.iter().map(|i| i.duration_ms).collect();
        d.sort_by(f64::total_cmp);
        d.get(d.len() / 2).copied().unwrap_or_default()
    };
    eprintln!(
        "    record_metric {:.0} ms ({} KiB peak), sweep cold {:.0} ms / warm {:.0} ms ({} KiB), listing every {} s",
        p50(&s.record_metric),
        s.record_metric.peak_rss_kib.unwrap_or_default(),
        s.sweep.invocations[0].duration_ms,
        s.sweep.invocations[1].duration_ms,
        s.sweep.peak_rss_kib.unwrap_or_default(),
        s.sweep_listing_interval_s,
    );
    eprintln!(
        "    termination policy {:.0} ms ({} KiB peak) chose {}; moto scans the runner table in {:.0} ms",
        s.termination_policy.invocations[0].duration_ms,
        s.termination_policy.peak_rss_kib.unwrap_or_default(),
        s.termination_policy_chose,
        s.runner_table_scan_ms,
    );
    let total: f64 = s.github_per_hour.values().sum();
    eprintln!(
        "    GitHub requests an hour: {total:.0} {:?}",
        s.github_per_hour
    );
    eprintln!(
        "    AWS calls a minute: {:?} (ExecutePolicy with claims: {:.0})",
        s.aws_per_minute, s.execute_policy_per_minute_with_claims
    );
}
