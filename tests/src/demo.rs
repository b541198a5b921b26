//! The README's main job, for now: one runner's whole round trip on the local world. The
//! fake GitHub starts, warmfleet's GitHub client mints a registration token, the fake runner
//! registers with it (token through the environment, never argv), takes jobs, is stopped and
//! removed with a remove token; a report says what happened.

use crate::github::{
    self,
    control::NewJob,
    state::{JobRec, Outcome, Settings},
};
use anyhow::{bail, Context};
use serde::Serialize;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use warmfleet_core::github::{GithubClient, GithubCredential, GithubTarget, RetryPolicy};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Jobs to queue.
    #[arg(long, default_value_t = 5)]
    pub jobs: u32,
    /// How long each job runs, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub job_seconds: f64,
    /// Also write the report here, as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub jobs: JobCounts,
    pub job_wait_seconds: Percentiles,
    pub github: GithubCounts,
}

#[derive(Debug, Default, Serialize)]
pub struct JobCounts {
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub killed: usize,
    pub never_started: usize,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct GithubCounts {
    pub api_calls: u64,
    pub orphan_runners_at_end: usize,
}

/// Counts outcomes and queue waits of a set of jobs.
pub fn summarize(jobs: &[JobRec]) -> (JobCounts, Percentiles) {
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
            Some(start) => waits.push((start - job.queued_at).num_milliseconds() as f64 / 1000.0),
            None => counts.never_started += 1,
        }
    }
    waits.sort_by(f64::total_cmp);
    let pick = |q: f64| -> f64 {
        if waits.is_empty() {
            return 0.0;
        }
        let i = ((waits.len() as f64 - 1.0) * q).round() as usize;
        waits[i.min(waits.len() - 1)]
    };
    (
        counts,
        Percentiles {
            p50: pick(0.5),
            p95: pick(0.95),
            max: waits.last().copied().unwrap_or(0.0),
        },
    )
}

fn step(text: &str) {
    println!("==> {text}");
}

pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let pat = github::state::random_token("ghp_", 36);
    let shutdown = CancellationToken::new();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let config = github::Config {
        listen: "127.0.0.1:0".parse()?,
        orgs: vec!["demo-org".into()],
        repos: vec![],
        enterprises: vec![],
        pats: vec![pat.clone()],
        apps: vec![],
        settings: Settings::default(),
        poll_wait: Duration::from_secs(2),
        webhook: None,
    };
    let server = tokio::spawn(github::serve(config, shutdown.clone(), move |addr| {
        let _ = addr_tx.send(addr);
    }));
    let addr = addr_rx.await.context("the GitHub fake did not start")?;
    let base = format!("http://{addr}");
    step(&format!(
        "GitHub fake serving organisation demo-org at {base}"
    ));

    let result = round_trip(&args, &base, &pat).await;
    shutdown.cancel();
    let _ = server.await;
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    let ok = report.jobs.succeeded == report.jobs.total && report.github.orphan_runners_at_end == 0;
    Ok(if ok { 0 } else { 1 })
}

async fn round_trip(args: &DemoArgs, base: &str, pat: &str) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir().context("creating the runner directory")?;
    let me = std::env::current_exe().context("finding this program's path")?;
    crate::runner::install(dir.path(), &me)?;
    step(&format!(
        "fake runner installed in {}",
        dir.path().display()
    ));

    let deadline = || Instant::now() + Duration::from_secs(30);
    let target = GithubTarget::parse(&format!("{base}/demo-org"), None)?;
    let client = GithubClient::connect(
        target,
        &GithubCredential::Token(pat.to_owned().into()),
        RetryPolicy::default(),
        deadline(),
    )
    .await?;
    let token = client.registration_token(deadline()).await?;
    step(&format!(
        "registration token minted, expires {}",
        token.expires_at
    ));

    let status = tokio::process::Command::new(dir.path().join("config.sh"))
        .args([
            "--unattended",
            "--url",
            &format!("{base}/demo-org"),
            "--name",
            "demo-runner",
        ])
        .args([
            "--labels",
            "warmfleet,demo",
            "--no-default-labels",
            "--replace",
        ])
        .env(
            "ACTIONS_RUNNER_INPUT_TOKEN",
            secrecy::ExposeSecret::expose_secret(&token.token),
        )
        .stdout(Stdio::null())
        .status()
        .await
        .context("running config.sh")?;
    if !status.success() {
        bail!("config.sh failed: {status}");
    }
    step("runner configured");

    let mut listener = tokio::process::Command::new(dir.path().join("bin/Runner.Listener"))
        .arg("run")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the listener")?;
    let stdout = listener.stdout.take().context("listener stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let listening = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("Listening for Jobs") {
                return Ok::<bool, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    if !matches!(listening, Ok(Ok(true))) {
        bail!("the listener never said it was listening");
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    step("listener connected and listening");

    let http = reqwest::Client::new();
    for i in 0..args.jobs {
        http.post(format!("{base}/_testbed/jobs"))
            .json(&NewJob {
                scope: None,
                name: Some(format!("demo-{}", i + 1)),
                labels: vec!["warmfleet".into()],
                duration_secs: args.job_seconds,
                fail: false,
            })
            .send()
            .await?
            .error_for_status()?;
    }
    step(&format!("{} jobs queued", args.jobs));
    let started = Instant::now();
    let mut shown = usize::MAX;
    let jobs = loop {
        let jobs: Vec<JobRec> = http
            .get(format!("{base}/_testbed/jobs"))
            .send()
            .await?
            .json()
            .await?;
        let done = jobs
            .iter()
            .filter(|j| !matches!(j.outcome, Outcome::Queued | Outcome::Running))
            .count();
        if done != shown {
            print!("\r    jobs done {done}/{}", jobs.len());
            use std::io::Write;
            let _ = std::io::stdout().flush();
            shown = done;
        }
        if done == jobs.len() {
            println!();
            break jobs;
        }
        if started.elapsed()
            > Duration::from_secs(60)
                + Duration::from_secs_f64(args.job_seconds * f64::from(args.jobs))
        {
            println!();
            bail!("jobs did not finish in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let runners = client.list_runners(Some("warmfleet"), deadline()).await?;
    for r in &runners {
        step(&format!(
            "GitHub lists runner {} ({:?}, busy: {})",
            r.name, r.status, r.busy
        ));
    }

    if let Some(pid) = listener.id() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
    }
    let code = listener.wait().await?;
    step(&format!("listener stopped ({code})"));

    let remove = client.remove_token(deadline()).await?;
    let status = tokio::process::Command::new(dir.path().join("config.sh"))
        .arg("remove")
        .env(
            "ACTIONS_RUNNER_INPUT_TOKEN",
            secrecy::ExposeSecret::expose_secret(&remove.token),
        )
        .stdout(Stdio::null())
        .status()
        .await?;
    if !status.success() {
        bail!("config.sh remove failed: {status}");
    }
    let left = client.list_runners(None, deadline()).await?;
    step(&format!(
        "runner removed; GitHub lists {} runners",
        left.len()
    ));

    let (counts, waits) = summarize(&jobs);
    Ok(Report {
        jobs: counts,
        job_wait_seconds: waits,
        github: GithubCounts {
            api_calls: client.api_calls(),
            orphan_runners_at_end: left.len(),
        },
    })
}
