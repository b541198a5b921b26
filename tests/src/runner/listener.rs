//! `Runner.Listener run`: connects, prints "Listening for Jobs", long-polls for jobs, starts a
//! worker per job, and exits with the real listener's codes. SIGINT/SIGTERM mid-job fails the
//! job with the real runner's shutdown message, as the real runner does.

use super::exit;
use super::files::{self, CredentialsFile, RunnerFile};
use crate::github::rest::JitPayload;
use crate::github::runner_api::{
    BrokerError, JobResult, Poll, PollQuery, SessionOpened, SessionRequest, RUNNER_VERSION_TOO_OLD,
};
use crate::github::state::JobRec;
use anyhow::Context;
use base64::Engine;
use chrono::Utc;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A just-in-time configuration from `generate-jitconfig`.
    #[arg(long, env = "ACTIONS_RUNNER_INPUT_JITCONFIG", hide_env_values = true)]
    pub jitconfig: Option<String>,
    /// How the runner was started (`service` under the service wrapper); informational.
    #[arg(long)]
    pub startuptype: Option<String>,
}

pub const SHUTDOWN_MESSAGE: &str = "The runner has received a shutdown signal. This can happen \
    when the runner service is stopped, or a manually started runner is canceled.";

/// How often a running job is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(5);

struct Identity {
    server: String,
    runner_id: u64,
    name: String,
    credential: String,
    ephemeral: bool,
    /// Local config files to delete after an ephemeral runner's job.
    config_files: bool,
    /// Configured with `--disableupdate` (a JIT runner may always update).
    disable_update: bool,
}

fn stamp() -> String {
    Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn identity(root: &Path, args: &RunArgs) -> Result<Identity, String> {
    if let Some(jit) = &args.jitconfig {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(jit.trim())
            .map_err(|_| "The JIT configuration is not valid base64.".to_owned())?;
        let p: JitPayload = serde_json::from_slice(&bytes)
            .map_err(|_| "The JIT configuration is not valid.".to_owned())?;
        return Ok(Identity {
            server: p.server,
            runner_id: p.runner_id,
            name: p.runner_name,
            credential: p.credential,
            ephemeral: true,
            config_files: false,
            disable_update: false,
        });
    }
    let runner: RunnerFile = files::read(&root.join(files::RUNNER))
        .map_err(|_| "Not configured. Run config.(sh/cmd) to configure the runner.".to_owned())?;
    let creds: CredentialsFile = files::read(&root.join(files::CREDENTIALS))
        .map_err(|_| "Not configured. Run config.(sh/cmd) to configure the runner.".to_owned())?;
    Ok(Identity {
        server: runner.server_url,
        runner_id: runner.agent_id,
        name: runner.agent_name,
        credential: creds.data.credential,
        ephemeral: runner.ephemeral,
        config_files: true,
        disable_update: runner.disable_update,
    })
}

enum Stop {
    Signal,
}

pub async fn run(root: &Path, args: RunArgs) -> anyhow::Result<i32> {
    let me = match identity(root, &args) {
        Ok(me) => me,
        Err(message) => {
            eprintln!("{message}");
            return Ok(exit::TERMINATED);
        }
    };
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("HTTP client")?;

    // Connect: one session at a time per runner; retry while the old one lingers.
    let mut attempts = 0;
    let session = loop {
        attempts += 1;
        let resp = client
            .post(format!("{}/_runner/sessions", me.server))
            .json(&SessionRequest {
                runner_id: me.runner_id,
                credential: me.credential.clone(),
            })
            .send()
            .await;
        let wait = match resp {
            Ok(r) if r.status().is_success() => break r.json::<SessionOpened>().await?.session_id,
            Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => {
                println!("{}: A session for this runner already exists.", stamp());
                Duration::from_secs(1)
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                eprintln!("{}: Failed to create a session ({status}): {text}", stamp());
                return Ok(exit::TERMINATED);
            }
            Err(e) => {
                println!(
                    "{}: GitHub Actions is currently unreachable ({e}); retrying.",
                    stamp()
                );
                Duration::from_secs(2)
            }
        };
        if attempts >= 60 {
            return Ok(exit::RETRYABLE);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sigterm.recv() => return Ok(exit::STOPPED),
            _ = sigint.recv() => return Ok(exit::STOPPED),
        }
    };
    println!("\n√ Connected to GitHub\n");
    println!("Current runner version: '{}'", super::VERSION);
    println!("{}: Listening for Jobs", stamp());

    let base = format!("{}/_runner/sessions/{session}", me.server);
    let code = loop {
        let poll = tokio::select! {
            r = client
                .get(format!("{base}/message"))
                .query(&PollQuery { version: super::VERSION.into(), disable_update: me.disable_update })
                .send() => r,
            _ = sigterm.recv() => break exit::STOPPED,
            _ = sigint.recv() => break exit::STOPPED,
        };
        let resp = match poll {
            Ok(r) => r,
            Err(e) => {
                println!(
                    "{}: GitHub Actions is currently unreachable ({e}); retrying.",
                    stamp()
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            continue;
        }
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            eprintln!(
                "{}: The runner registration has been deleted from the server, please re-configure.",
                stamp()
            );
            break exit::TERMINATED;
        }
        if resp.status() == reqwest::StatusCode::FORBIDDEN {
            // The one 403 of a message poll: too old a runner that may not update itself.
            // The real listener writes GitHub's message on stderr and exits 1.
            if let Ok(e) = resp.json::<BrokerError>().await {
                if e.error_kind == RUNNER_VERSION_TOO_OLD {
                    eprintln!("An error occurred: {}", e.message);
                    break exit::TERMINATED;
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        if !resp.status().is_success() {
            println!(
                "{}: Unexpected answer {}; retrying.",
                stamp(),
                resp.status()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        match resp.json::<Poll>().await {
            Ok(Poll::Update) => {
                println!(
                    "{}: Runner update in progress, do not shutdown runner.",
                    stamp()
                );
                break if me.ephemeral {
                    exit::EPHEMERAL_UPDATING
                } else {
                    exit::UPDATING
                };
            }
            Ok(Poll::Job { job }) => {
                let stopped =
                    run_job(root, &client, &base, &me, *job, &mut sigterm, &mut sigint).await?;
                if let Some(Stop::Signal) = stopped {
                    break exit::STOPPED;
                }
                if me.ephemeral {
                    if me.config_files {
                        super::configure::remove_local(root)?;
                    }
                    break exit::STOPPED;
                }
            }
            Err(e) => {
                println!("{}: Unreadable message ({e}); retrying.", stamp());
            }
        }
    };
    // Going offline; an ephemeral runner may already be gone server-side.
    let _ = client.delete(&base).send().await;
    println!("{}: Exiting...", stamp());
    Ok(code)
}

fn worker_path(root: &Path) -> PathBuf {
    root.join("bin").join("Runner.Worker")
}

/// Runs one job in a worker process; `Some(Stop::Signal)` if a signal ended it.
async fn run_job(
    root: &Path,
    client: &reqwest::Client,
    base: &str,
    me: &Identity,
    job: JobRec,
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<Option<Stop>> {
    // The real listener takes a moment between accepting a job and saying so (it starts
    // the worker first); `WARMFLEET_TESTBED_JOB_START_MS` gives the fake that moment. A
    // stop within it cancels the job, as a stop mid-job does.
    let start_delay = std::env::var("WARMFLEET_TESTBED_JOB_START_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let stopped_before = match start_delay {
        Some(d) => tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = sigterm.recv() => true,
            _ = sigint.recv() => true,
        },
        None => false,
    };
    let (result, stop) = if stopped_before {
        cancelled()
    } else {
        println!("{}: Running job: {}", stamp(), job.name);
        let mut worker = tokio::process::Command::new(worker_path(root))
            .env("RUNNER_NAME", &me.name)
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", worker_path(root).display()))?;
        if let Some(mut stdin) = worker.stdin.take() {
            stdin.write_all(&serde_json::to_vec(&job)?).await?;
        }
        let mut renew = tokio::time::interval(RENEW_EVERY);
        loop {
            tokio::select! {
                status = worker.wait() => {
                    let ok = status.map(|s| s.success()).unwrap_or(false);
                    break (JobResult { succeeded: ok, shutdown: false, message: None }, None);
                }
                _ = renew.tick() => {
                    let _ = client.post(format!("{base}/jobs/{}/renew", job.id)).send().await;
                }
                _ = sigterm.recv() => break shutdown(&mut worker).await,
                _ = sigint.recv() => break shutdown(&mut worker).await,
            }
        }
    };
    let verdict = if result.succeeded {
        "Succeeded"
    } else {
        "Failed"
    };
    if let Some(m) = &result.message {
        println!("{}: {m}", stamp());
    }
    let _ = client
        .post(format!("{base}/jobs/{}/finish", job.id))
        .json(&result)
        .send()
        .await;
    println!(
        "{}: Job {} completed with result: {verdict}",
        stamp(),
        job.name
    );
    Ok(stop)
}

async fn shutdown(worker: &mut tokio::process::Child) -> (JobResult, Option<Stop>) {
    if let Some(pid) = worker.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), worker.wait()).await;
    let _ = worker.start_kill();
    cancelled()
}

/// A job ended by a stop of the listener.
fn cancelled() -> (JobResult, Option<Stop>) {
    (
        JobResult {
            succeeded: false,
            shutdown: true,
            message: Some(SHUTDOWN_MESSAGE.into()),
        },
        Some(Stop::Signal),
    )
}
