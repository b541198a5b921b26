//! `warmfleet-testbed bench-control`: a benchmark (not a test) of the four Lambda binaries,
//! run by the AWS world through the Lambda Runtime API against the GitHub fake, written to a
//! JSON file: each function's cold init time, handler durations, peak memory (VmHWM) and
//! binary size, and GitHub requests per invocation at several runner counts; the webhook
//! receiver's, once, through its function URL (bench_webhook.rs).
//! `make bench` builds the binaries with the dist profile and runs it.

use crate::bench_webhook;
use crate::world::{Spec, World, ORG, PAT, WEBHOOK_FUNCTION};
use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_core::github::{GithubClient, GithubCredential, GithubTarget, RetryPolicy};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Where the Lambda binaries are (`target/dist` after `cargo build --profile dist`).
    #[arg(long, default_value = "target/dist")]
    pub lambdas: PathBuf,
    /// Where their zips are (`packaging/lambda/zip.py` makes them), for their sizes.
    #[arg(long)]
    pub zips: Option<PathBuf>,
    /// Runner counts to measure at.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub runners: Vec<usize>,
    /// The JSON report.
    #[arg(long, default_value = "target/bench/control.json")]
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Run {
    runners: usize,
    /// Per function: cold init, then each invocation's duration and GitHub requests.
    functions: Vec<FunctionRun>,
}

#[derive(Debug, Serialize)]
struct FunctionRun {
    function: &'static str,
    what: &'static str,
    init_ms: Option<f64>,
    duration_ms: Vec<f64>,
    github_requests: Vec<usize>,
    peak_rss_kib: Option<u64>,
    outcome: Vec<String>,
}

pub(crate) fn peak_rss_kib(pid: u64) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl World {
    async fn github_requests(&self) -> anyhow::Result<usize> {
        let log: Vec<Value> = self
            .http
            .get(format!("{}/_testbed/requests", self.github))
            .send()
            .await?
            .json()
            .await?;
        // The log holds REST API requests only (the runner protocol is not GitHub's API).
        Ok(log.len())
    }

    /// Registers `n` runners labelled for group `bench`, as the agent would.
    async fn runners(&self, n: usize) -> anyhow::Result<()> {
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
        for i in 0..n {
            let name = format!("i-bench{i:05}");
            let resp = self
                .http
                .post(format!("{}/_runner/register", self.github))
                .json(&json!({"url": format!("{}/{ORG}", self.github),
                    "token": secrecy::ExposeSecret::expose_secret(&token.token),
                    "name": name, "labels": ["warmfleet", "bench", name], "runner_group": null,
                    "replace": false, "ephemeral": false, "no_default_labels": true,
                    "version": crate::runner::VERSION}))
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!("registering {name}: {}", resp.status());
            }
        }
        Ok(())
    }

    /// Invokes a function through the Invoke API: whether it failed, and its answer.
    pub(crate) async fn invoke(
        &self,
        function: &str,
        event: &Value,
    ) -> anyhow::Result<(bool, Value)> {
        let resp = self
            .http
            .post(format!(
                "{}/2015-03-31/functions/{function}/invocations",
                self.aws
            ))
            .json(event)
            .send()
            .await?;
        let failed = resp.headers().contains_key("x-amz-function-error");
        Ok((failed, resp.json().await?))
    }

    /// The world's record of a function's last invocation (duration, init, pid).
    pub(crate) async fn last_invocation(&self, function: &str) -> anyhow::Result<Value> {
        let calls: Vec<Value> = self.aws_control("invocations").await?;
        calls
            .into_iter()
            .rev()
            .find(|c| c["function"] == function)
            .context("no invocation")
    }

    /// Invokes a function `times` times with `event`; what each cost.
    async fn measure(
        &self,
        function: &'static str,
        what: &'static str,
        event: &Value,
        times: usize,
    ) -> anyhow::Result<FunctionRun> {
        let mut run = FunctionRun {
            function,
            what,
            init_ms: None,
            duration_ms: vec![],
            github_requests: vec![],
            peak_rss_kib: None,
            outcome: vec![],
        };
        for _ in 0..times {
            let before = self.github_requests().await?;
            let (failed, body) = self.invoke(function, event).await?;
            run.github_requests
                .push(self.github_requests().await? - before);
            let last = self.last_invocation(function).await?;
            run.duration_ms
                .push(last["duration_ms"].as_f64().unwrap_or_default());
            if let Some(init) = last["init_ms"].as_f64() {
                run.init_ms = Some(init);
            }
            if let Some(pid) = last["pid"].as_u64() {
                run.peak_rss_kib = peak_rss_kib(pid).or(run.peak_rss_kib);
            }
            run.outcome.push(if failed {
                format!("error: {body}")
            } else {
                body.to_string()
            });
        }
        Ok(run)
    }
}

/// A scheduled event, as EventBridge delivers one.
pub(crate) fn scheduled() -> Value {
    json!({"version": "0", "id": "00000000-0000-4000-8000-00000000beef", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-28T12:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/bench"], "detail": {}})
}

/// A cold launch into `group` of an instance the simulator does not know: the credential is
/// minted and stored; completing the hook finds nothing waiting, which the function accepts.
pub(crate) fn launch(group: &str, n: usize) -> Value {
    json!({"version": "0", "id": format!("00000000-0000-4000-8000-{n:012}"),
        "detail-type": "EC2 Instance-launch Lifecycle Action", "source": "aws.autoscaling",
        "account": "123456789012", "time": "2026-11-28T12:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"LifecycleActionToken": format!("00000000-0000-4000-8000-{n:012}"), "AutoScalingGroupName": group,
            "LifecycleHookName": "registration", "EC2InstanceId": format!("i-0launch{n:011x}"),
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING", "Origin": "EC2", "Destination": "AutoScalingGroup"}})
}

pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let mut runs = vec![];
    let mut webhook = None;
    for &n in &args.runners {
        eprintln!("==> {n} runners");
        // The sweep looks after an empty group: it measures its listing, and leaves the
        // runners registered here alone.
        let mut spec = Spec::lambdas(args.lambdas.clone(), &["bench"]);
        spec.function_env.push((
            "deregistration",
            "WARMFLEET_GROUPS".into(),
            "bench-empty".into(),
        ));
        // The webhook receiver's figures do not depend on the runners: measured once.
        let with_webhook = webhook.is_none();
        if with_webhook {
            spec.webhook = true;
            spec.function_env.push((
                WEBHOOK_FUNCTION,
                "WARMFLEET_GROUPS".into(),
                bench_webhook::GROUP.into(),
            ));
        }
        let world = World::start(&spec).await?;
        for group in ["bench", "bench-empty"] {
            let created = world
                .http
                .post(&world.aws)
                .form(&[
                    ("Action", "CreateAutoScalingGroup"),
                    ("Version", "2011-01-01"),
                    ("AutoScalingGroupName", group),
                    ("MinSize", "0"),
                    ("MaxSize", "1"),
                ])
                .send()
                .await?;
            if !created.status().is_success() {
                bail!("creating group {group}: {}", created.text().await?);
            }
        }
        let result = async {
            if with_webhook {
                eprintln!("==> the webhook receiver");
                world.webhook_group().await?;
                webhook = Some(world.bench_webhook().await?);
            }
            world.runners(n).await?;
            let mut functions = vec![
                world
                    .measure("record-metric", "scheduled", &scheduled(), 3)
                    .await?,
            ];
            functions.push(
                world
                    .measure("deregistration", "sweep", &scheduled(), 2)
                    .await?,
            );
            let mut registration = world
                .measure(
                    "registration",
                    "launch, launch, repeat",
                    &launch("bench", 1),
                    1,
                )
                .await?;
            let again = world
                .measure(
                    "registration",
                    "launch, then its repeat",
                    &launch("bench", 2),
                    2,
                )
                .await?;
            registration.duration_ms.extend(again.duration_ms);
            registration.github_requests.extend(again.github_requests);
            registration.outcome.extend(again.outcome);
            registration.peak_rss_kib = again.peak_rss_kib.or(registration.peak_rss_kib);
            functions.push(registration);
            anyhow::Ok(Run {
                runners: n,
                functions,
            })
        }
        .await;
        world.stop().await;
        runs.push(result?);
    }
    let sizes: Vec<Value> = [
        "warmfleet-registration",
        "warmfleet-deregistration",
        "warmfleet-record-metric",
        "warmfleet-webhook",
        "warmfleet-termination-policy",
    ]
    .iter()
    .map(|b| {
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).ok();
        json!({"binary": b, "bytes": size(args.lambdas.join(b)),
                   "zip_bytes": args.zips.as_ref().and_then(|z| size(z.join(format!("{b}.zip"))))})
    })
    .collect();
    let report = json!({
        "lambdas": args.lambdas,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "binaries": sizes,
        "runs": runs,
        "webhook": webhook,
    });
    write_report(&args.out, &report)?;
    Ok(0)
}

/// Writes a benchmark's JSON report to `out` and prints it.
pub(crate) fn write_report(out: &Path, report: &Value) -> anyhow::Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{text}");
    Ok(())
}
