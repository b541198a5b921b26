//! warmfleet-agent: parses the command line, sets up logging, and runs one command.
//! docs/usage/agent.md describes every command, flag and configuration key.

use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use warmfleet_agent::cli::{Cli, Command};
use warmfleet_agent::config::{self, Settings};
use warmfleet_agent::control::{self, Request};
use warmfleet_agent::driver::{Driver, Stop, HANDOVER_EXIT_CODE};
use warmfleet_agent::record;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warmfleet-agent: cannot start its runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("warmfleet-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARMFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd (JOURNAL_STREAM is set) straight to the journal with structured fields.
    let journald = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| tracing_journald::layer().ok())
        .map(|l| l.with_syslog_identifier("warmfleet-agent".into()));
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .init();
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    Ok(config::load(&cli.config, &cli.config_dir)?)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run => {
            // Whatever the runner and its jobs write (its key, `.runner`, `_diag`, the
            // workspace) is theirs alone; the agent's own files too.
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            let settings = settings(&cli)?;
            let driver = Driver::new(settings)?;
            Ok(match driver.run().await? {
                Stop::Drained => ExitCode::SUCCESS,
                Stop::Handover => ExitCode::from(HANDOVER_EXIT_CODE),
            })
        }
        Command::Drain { timeout } => {
            let settings = settings(&cli)?;
            let wait = timeout.unwrap_or(settings.timeouts.drain);
            let socket = control::socket(&settings.state_dir);
            let reply = drain(&socket, wait).await?;
            println!("{}", reply.message);
            Ok(if reply.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status { json } => {
            let settings = settings(&cli)?;
            let socket = control::socket(&settings.state_dir);
            let (running, record) =
                match control::ask(&socket, &Request::Status, Duration::from_secs(5)).await {
                    Ok(reply) => (true, reply.status),
                    Err(_) => (false, record::load(&settings.state_dir)?),
                };
            let record = record.context("the agent has not run on this instance yet")?;
            if *json {
                let mut value = serde_json::to_value(&record)?;
                value["running"] = running.into();
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print_status(running, &record);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Hook { hook, socket } => {
            let socket = match socket {
                Some(s) => s.clone(),
                None => control::socket(&settings(&cli)?.state_dir),
            };
            // Never fail the job: without the agent the job runs unprotected.
            match control::ask(
                &socket,
                &Request::Hook { hook: *hook },
                Duration::from_secs(60),
            )
            .await
            {
                Ok(reply) if reply.ok => {}
                Ok(reply) => eprintln!("warmfleet-agent: {}", reply.message),
                Err(e) => {
                    eprintln!("warmfleet-agent: {e}; the job runs without scale-in protection")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::SleepHook { phase, .. } => {
            let settings = settings(&cli)?;
            let socket = control::socket(&settings.state_dir);
            // Never hold up the machine's sleep or wake.
            let request = Request::Sleep { phase: *phase };
            match control::ask(&socket, &request, Duration::from_secs(10)).await {
                Ok(reply) if reply.ok => {}
                Ok(reply) => eprintln!("warmfleet-agent: {}", reply.message),
                Err(e) => eprintln!("warmfleet-agent: {e}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How long `drain` waits for an agent that is not answering (restarting after a crash).
const AGENT_RESTART: Duration = Duration::from_secs(120);

/// Asks for a drain and waits for its end; a drain is idempotent, so when the agent goes
/// away mid-drain (restarted by systemd) it is asked again.
async fn drain(socket: &std::path::Path, wait: Duration) -> anyhow::Result<control::Reply> {
    let until = tokio::time::Instant::now() + wait;
    let mut unanswered_since = None;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match control::ask(socket, &Request::Drain, left).await {
            Ok(reply) => return Ok(reply),
            Err(e @ control::AskError::Timeout(_)) => return Err(e.into()),
            Err(e) => {
                let since = *unanswered_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > AGENT_RESTART || left.is_zero() {
                    return Err(e.into());
                }
                eprintln!("warmfleet-agent: {e}; asking again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn print_status(running: bool, r: &record::Record) {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!(
        "agent:        {}",
        if running { "running" } else { "not running" }
    );
    println!("state:        {} ({})", r.state.name(), r.state.describe());
    println!("instance:     {}", or_none(&r.instance_id));
    println!("group:        {}", or_none(&r.group));
    println!("runner:       {}", or_none(&r.runner_name));
    println!(
        "job:          {}",
        if r.job_in_progress {
            "in progress"
        } else {
            "none"
        }
    );
    println!("protected:    {}", r.protected);
    println!("last hook:    {}", or_none(&r.last_hook));
    println!("last error:   {}", or_none(&r.last_error));
    println!("updated:      {}", r.updated_at);
}
