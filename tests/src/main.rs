//! `warmfleet-testbed`: runs the parts of the local world. See docs/development/testbed.md.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;
use warmfleet_testbed::github::{self, state::Settings};
use warmfleet_testbed::{aws, demo, runner};

#[derive(Parser)]
#[command(
    name = "warmfleet-testbed",
    version,
    about = "The local world warmfleet is tested in"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the fake GitHub.
    Github(GithubArgs),
    /// The fake actions runner.
    #[command(subcommand)]
    Runner(RunnerCommand),
    /// Serve the AWS world (Auto Scaling, EventBridge, Lambda, SSM, CloudWatch; moto's
    /// Secrets Manager).
    Aws(AwsArgs),
    /// Run the main job: the whole fleet on the local world through a workload, then a report.
    Demo(demo::DemoArgs),
    /// Benchmark the control plane's Lambda binaries (init, durations, memory, GitHub
    /// requests at several runner counts) into a JSON file.
    BenchControl(warmfleet_testbed::bench::BenchArgs),
    /// Benchmark the agent: resume overhead, idle memory and CPU (target/bench/agent.json).
    BenchAgent(warmfleet_testbed::bench_agent::BenchAgentArgs),
    /// Benchmark the control plane at fleet scale: GitHub requests an hour, AWS calls a
    /// minute, each function's duration and memory at 1,000 to 50,000 runners
    /// (target/bench/scale.json).
    BenchScale(warmfleet_testbed::bench_scale::BenchScaleArgs),
}

#[derive(clap::Args)]
struct GithubArgs {
    /// Address to listen on; port 0 picks a free one (the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// An organisation that exists (repeatable).
    #[arg(long = "org")]
    orgs: Vec<String>,
    /// A repository that exists, OWNER/NAME (repeatable).
    #[arg(long = "repo")]
    repos: Vec<String>,
    /// An enterprise that exists, by slug (repeatable).
    #[arg(long = "enterprise")]
    enterprises: Vec<String>,
    /// A personal access token the fake accepts (repeatable).
    #[arg(long = "pat", env = "WARMFLEET_TESTBED_PAT", hide_env_values = true)]
    pats: Vec<String>,
    /// A GitHub App id (repeatable; pairs with --app-key in order).
    #[arg(long = "app-id")]
    app_ids: Vec<u64>,
    /// The PEM private key of the app given by the matching --app-id.
    #[arg(long = "app-key")]
    app_keys: Vec<PathBuf>,
    /// Life of registration, remove and installation tokens.
    #[arg(long, default_value = "1h", value_parser = duration)]
    token_ttl: chrono::Duration,
    /// A runner that has not polled for this long shows offline.
    #[arg(long, default_value = "30s", value_parser = duration)]
    offline_after: chrono::Duration,
    /// An offline persistent runner is deleted after this long.
    #[arg(long, default_value = "14d", value_parser = duration)]
    offline_max_age: chrono::Duration,
    /// An offline ephemeral runner is deleted after this long.
    #[arg(long, default_value = "1d", value_parser = duration)]
    ephemeral_offline_max_age: chrono::Duration,
    /// A running job not renewed for this long fails as lost.
    #[arg(long, default_value = "60s", value_parser = duration)]
    job_lock_timeout: chrono::Duration,
    /// Requests per hour per credential.
    #[arg(long, default_value_t = 5000)]
    rate_limit: u32,
    /// How long a listener's poll waits for a job.
    #[arg(long, default_value = "20s", value_parser = std_duration)]
    poll_wait: std::time::Duration,
    /// Send `workflow_job` webhooks here.
    #[arg(long, requires = "webhook_secret")]
    webhook_url: Option<String>,
    /// Sign webhooks with this secret (X-Hub-Signature-256).
    #[arg(long, env = "WARMFLEET_TESTBED_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
}

#[derive(clap::Args)]
struct AwsArgs {
    /// Address to listen on; port 0 picks a free one (the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// World seconds per real second (hook timeouts, lifetimes): 60 runs a minute a second.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Run this in every instance, by `sh -c`, in the instance's root directory, with
    /// AWS_EC2_METADATA_SERVICE_ENDPOINT set to its IMDS.
    #[arg(long)]
    instance_command: Option<String>,
    /// Keep instance roots here (default: a temporary directory removed on exit).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// World time a new instance boots before its launch hooks fire.
    #[arg(long, default_value = "40s", value_parser = std_duration)]
    boot_delay: std::time::Duration,
    /// World time a hibernated instance takes to resume.
    #[arg(long, default_value = "5s", value_parser = std_duration)]
    resume_delay: std::time::Duration,
    /// World time an instance takes to hibernate before it counts as warm.
    #[arg(long, default_value = "10s", value_parser = std_duration)]
    hibernate_delay: std::time::Duration,
    /// The moto_server to serve Secrets Manager with (default: from PATH, else installed on
    /// first use into a venv under ~/.cache/warmfleet).
    #[arg(long, conflicts_with = "no_moto")]
    moto_server: Option<PathBuf>,
    /// Serve no Secrets Manager.
    #[arg(long)]
    no_moto: bool,
    /// A world file: Lambda functions and EventBridge rules to create at start (TOML; see
    /// docs/development/testbed.md).
    #[arg(long)]
    world: Option<PathBuf>,
    /// Seed for the world's randomness (event delivery faults), for repeatable runs.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Subcommand)]
enum RunnerCommand {
    /// Lay out a runner directory (config.sh, run.sh, bin/...).
    Install {
        /// The directory to create.
        dir: PathBuf,
    },
    /// What bin/Runner.Listener runs (config.sh and run.sh call it).
    Listener {
        #[arg(long)]
        root: PathBuf,
        #[command(subcommand)]
        command: ListenerCommand,
    },
    /// What bin/Runner.Worker runs: one job, read from standard input.
    Worker {
        #[arg(long)]
        root: PathBuf,
    },
}

#[derive(Subcommand)]
enum ListenerCommand {
    /// config.sh
    Configure(runner::ConfigureArgs),
    /// config.sh remove
    Remove(runner::RemoveArgs),
    /// run.sh
    Run(runner::RunArgs),
}

fn std_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 30s, 5m, 1h, 14d: {e}"))
}

fn duration(s: &str) -> Result<chrono::Duration, String> {
    chrono::Duration::from_std(std_duration(s)?).map_err(|e| e.to_string())
}

async fn serve_github(args: GithubArgs) -> anyhow::Result<i32> {
    if args.app_ids.len() != args.app_keys.len() {
        anyhow::bail!(
            "give one --app-key per --app-id ({} ids, {} keys)",
            args.app_ids.len(),
            args.app_keys.len()
        );
    }
    if args.orgs.is_empty() && args.repos.is_empty() && args.enterprises.is_empty() {
        anyhow::bail!("name at least one --org, --repo or --enterprise");
    }
    if let Some(bad) = args.repos.iter().find(|r| r.split('/').count() != 2) {
        anyhow::bail!("--repo {bad:?}: expected OWNER/NAME");
    }
    let config = github::Config {
        listen: args.listen,
        orgs: args.orgs,
        repos: args.repos,
        enterprises: args.enterprises,
        pats: args.pats,
        apps: args.app_ids.into_iter().zip(args.app_keys).collect(),
        settings: Settings {
            token_ttl: args.token_ttl,
            offline_after: args.offline_after,
            offline_max_age: args.offline_max_age,
            ephemeral_offline_max_age: args.ephemeral_offline_max_age,
            job_lock_timeout: args.job_lock_timeout,
            rate_limit: args.rate_limit,
        },
        poll_wait: args.poll_wait,
        webhook: args
            .webhook_url
            .zip(args.webhook_secret)
            .map(|(url, secret)| github::Webhook { url, secret }),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    github::serve(config, shutdown, |addr| {
        println!("warmfleet-testbed github listening on http://{addr}");
        let _ = std::io::stdout().flush();
    })
    .await?;
    Ok(0)
}

async fn stop_on_signal(token: CancellationToken) {
    warmfleet_testbed::interrupted().await;
    token.cancel();
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Github(args) => serve_github(args).await,
        Command::Runner(RunnerCommand::Install { dir }) => {
            let me = std::env::current_exe().context("finding this program's path")?;
            runner::install(&dir, &me)?;
            println!("runner installed in {}", dir.display());
            Ok(0)
        }
        Command::Runner(RunnerCommand::Listener { root, command }) => match command {
            ListenerCommand::Configure(a) => runner::configure(&root, a).await,
            ListenerCommand::Remove(a) => runner::remove(&root, a).await,
            ListenerCommand::Run(a) => runner::run(&root, a).await,
        },
        Command::Runner(RunnerCommand::Worker { root }) => runner::work(&root).await,
        Command::Aws(args) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let config = aws::Config {
                listen: args.listen,
                time_scale: args.time_scale,
                instance_command: args.instance_command,
                state_dir: args.state_dir,
                boot_delay: args.boot_delay,
                resume_delay: args.resume_delay,
                hibernate_delay: args.hibernate_delay,
                moto: match (args.no_moto, args.moto_server) {
                    (true, _) => aws::MotoMode::Off,
                    (false, Some(path)) => aws::MotoMode::Path(path),
                    (false, None) => aws::MotoMode::Auto,
                },
                world_file: args.world,
                seed: args.seed,
                bare_instances: false,
            };
            aws::serve(config, shutdown, |addr| {
                println!("warmfleet-testbed aws listening on http://{addr}");
                let _ = std::io::stdout().flush();
            })
            .await?;
            Ok(0)
        }
        Command::Demo(args) => demo::run(args).await,
        Command::BenchControl(args) => warmfleet_testbed::bench::run(args).await,
        Command::BenchAgent(args) => warmfleet_testbed::bench_agent::run(args).await,
        Command::BenchScale(args) => warmfleet_testbed::bench_scale::run(args).await,
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warmfleet-testbed: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
