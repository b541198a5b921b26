//! `warmfleet-testbed bench-control`: a benchmark (not a test) of the three Lambda binaries,
//! run by the AWS world through the Lambda Runtime API against the GitHub fake, written to a
//! JSON file: each function's cold init time, handler durations, peak memory (VmHWM) and
//! binary size, and GitHub requests per invocation at several runner counts.
//! `make bench` builds the binaries with the dist profile and runs it.

use crate::aws;
use crate::github::{self, state::Settings};
use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use warmfleet_core::github::{GithubClient, GithubCredential, GithubTarget, RetryPolicy};
use warmfleet_core::ports::SecretStore;

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

const PAT: &str = "ghp_benchbenchbenchbenchbenchbenchbench";

fn peak_rss_kib(pid: u64) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the agent benchmark adds to the world: instances that run the agent, the drain the
/// deregistration Lambda sends, and the lifecycle rules.
pub(crate) struct AgentWorld {
    pub instance_command: String,
    pub drain_command: String,
}

/// The GitHub fake and the AWS world (with moto) in this process, the Lambda binaries in
/// its world file.
pub(crate) struct World {
    pub github: String,
    pub aws: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl World {
    pub async fn start(lambdas: &Path, agent: Option<&AgentWorld>) -> anyhow::Result<World> {
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let config = github::Config {
            listen: "127.0.0.1:0".parse()?,
            orgs: vec!["bench".into()],
            repos: vec![],
            enterprises: vec![],
            pats: vec![PAT.into()],
            apps: vec![],
            settings: Settings::default(),
            poll_wait: Duration::from_secs(2),
            webhook: None,
        };
        let gh = tokio::spawn(github::serve(config, shutdown.clone(), move |a| {
            let _ = tx.send(a);
        }));
        let github = format!(
            "http://{}",
            rx.await.context("the GitHub fake did not start")?
        );
        let dir = tempfile::tempdir()?;
        let mut world = String::new();
        let deregistration = match agent {
            Some(a) => format!(
                "WARMFLEET_GROUPS = \"bench\"\nWARMFLEET_DRAIN_COMMAND = {}\n",
                toml::Value::String(a.drain_command.clone())
            ),
            None => "WARMFLEET_GROUPS = \"bench-empty\"\n".to_owned(),
        };
        for (name, binary, extra) in [
            ("registration", "warmfleet-registration", ""),
            (
                "deregistration",
                "warmfleet-deregistration",
                deregistration.as_str(),
            ),
            (
                "record-metric",
                "warmfleet-record-metric",
                "WARMFLEET_GROUPS = \"bench\"\n",
            ),
        ] {
            let path = lambdas.join(binary);
            if !path.exists() {
                bail!(
                    "{} is missing: build the control plane first (make bench does)",
                    path.display()
                );
            }
            world.push_str(&format!(
                "[[function]]\nname = \"{name}\"\ncommand = \"{}\"\ntimeout_seconds = 60\nretries = 0\n\
                 [function.environment]\nWARMFLEET_GITHUB_URL = \"{github}/bench\"\n\
                 WARMFLEET_GITHUB_CREDENTIAL_SECRET = \"warmfleet/github\"\nRUST_LOG = \"warn\"\n{extra}",
                path.display()
            ));
        }
        if agent.is_some() {
            world.push_str(crate::agent_setup::REGISTRATION_RULE);
            world.push_str(crate::agent_setup::DEREGISTRATION_RULE);
        }
        let world_file = dir.path().join("world.toml");
        std::fs::write(&world_file, world)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let config = aws::Config {
            listen: "127.0.0.1:0".parse()?,
            time_scale: 1.0,
            instance_command: agent.map(|a| a.instance_command.clone()),
            state_dir: Some(dir.path().join("state")),
            // Time for an instance's script to set up before its hooks fire.
            boot_delay: if agent.is_some() {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            },
            resume_delay: Duration::ZERO,
            hibernate_delay: Duration::ZERO,
            moto: aws::MotoMode::Auto,
            world_file: Some(world_file),
            seed: Some(1),
        };
        let aws_task = tokio::spawn(aws::serve(config, shutdown.clone(), move |a| {
            let _ = tx.send(a);
        }));
        let aws = format!(
            "http://{}",
            rx.await.context("the AWS world did not start")?
        );
        let http = reqwest::Client::new();
        let endpoints: Value = http
            .get(format!("{aws}/_testbed/aws/endpoints"))
            .send()
            .await?
            .json()
            .await?;
        let moto = endpoints["secretsmanager"].as_str().context("no moto")?;
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_autoscaling::config::Credentials::new(
                "b", "b", None, None, "bench",
            ))
            .endpoint_url(moto)
            .load()
            .await;
        // The groups the functions look after (empty: the benchmark measures the Lambdas'
        // own work, not instances; the agent benchmark makes its own).
        let groups: &[&str] = if agent.is_some() {
            &[]
        } else {
            &["bench", "bench-empty"]
        };
        for group in groups {
            let created = http
                .post(&aws)
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
        warmfleet_core::aws::SecretsManager::new(&sdk)
            .put(
                "warmfleet/github",
                &format!("{{\"token\": \"{PAT}\"}}").into(),
                &[],
            )
            .await?;
        Ok(World {
            github,
            aws,
            http,
            shutdown,
            tasks: vec![gh, aws_task],
            _dir: dir,
        })
    }

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
        let target = GithubTarget::parse(&format!("{}/bench", self.github), None)?;
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
                .json(&json!({"url": format!("{}/bench", self.github),
                    "token": secrecy::ExposeSecret::expose_secret(&token.token),
                    "name": name, "labels": ["warmfleet", "bench", name], "runner_group": null,
                    "replace": false, "ephemeral": false, "no_default_labels": true}))
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!("registering {name}: {}", resp.status());
            }
        }
        Ok(())
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
            let body: Value = resp.json().await?;
            run.github_requests
                .push(self.github_requests().await? - before);
            let calls: Vec<Value> = self
                .http
                .get(format!("{}/_testbed/aws/invocations", self.aws))
                .send()
                .await?
                .json()
                .await?;
            let last = calls
                .iter()
                .rev()
                .find(|c| c["function"] == function)
                .context("no invocation")?;
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

    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn scheduled() -> Value {
    json!({"version": "0", "id": "00000000-0000-4000-8000-00000000beef", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-28T12:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/bench"], "detail": {}})
}

/// A cold launch of an instance the simulator does not know: the credential is minted and
/// stored; completing the hook finds nothing waiting, which the function accepts.
fn launch(n: usize) -> Value {
    json!({"version": "0", "id": format!("00000000-0000-4000-8000-{n:012}"),
        "detail-type": "EC2 Instance-launch Lifecycle Action", "source": "aws.autoscaling",
        "account": "123456789012", "time": "2026-11-28T12:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"LifecycleActionToken": format!("00000000-0000-4000-8000-{n:012}"), "AutoScalingGroupName": "bench",
            "LifecycleHookName": "registration", "EC2InstanceId": format!("i-launch{n:09}"),
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING", "Origin": "EC2", "Destination": "AutoScalingGroup"}})
}

pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let mut runs = vec![];
    for &n in &args.runners {
        eprintln!("==> {n} runners");
        let world = World::start(&args.lambdas, None).await?;
        let result = async {
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
                .measure("registration", "launch, launch, repeat", &launch(1), 1)
                .await?;
            let again = world
                .measure("registration", "launch, then its repeat", &launch(2), 2)
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
