//! The command line (docs/usage/agent.md); also the source of the packaged man page.

use crate::config;
use crate::control::{self, JobHook, SleepPhase};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "warmfleet-agent",
    version,
    about = "Registers, supervises and drains a GitHub Actions runner on an EC2 instance of a warmfleet Auto Scaling group"
)]
pub struct Cli {
    /// The main configuration file.
    #[arg(long, global = true, env = "WARMFLEET_AGENT_CONFIG", hide_env_values = true, default_value = config::DEFAULT_FILE)]
    pub config: PathBuf,
    /// Drop-in directory: its *.toml files override the main file, in name order.
    #[arg(long, global = true, env = "WARMFLEET_AGENT_CONFIG_DIR", hide_env_values = true, default_value = config::DEFAULT_DIR)]
    pub config_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the service (systemd Type=notify).
    ///
    /// READY once the runner listens, STATUS on every state change. SIGTERM is a drain: the
    /// running job finishes, the runner is removed, then the agent exits 0. SIGUSR2 hands
    /// over to a new agent (a package upgrade): the agent saves its state and exits 75
    /// without draining, and the next one adopts the running listener.
    Run,
    /// Stop taking jobs, let the running job finish, remove the runner and complete the
    /// terminate hook if the instance is terminating. Exits 0 once drained.
    Drain {
        /// How long to wait for the drain (default: the timeouts.drain setting).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Show the agent's state, runner, job, last hook and last error.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Called by the runner's job hooks.
    Hook {
        #[arg(value_enum)]
        hook: JobHook,
        /// The agent's socket (the agent sets WARMFLEET_AGENT_SOCKET for the runner).
        #[arg(long, env = control::SOCKET_ENV, hide_env_values = true)]
        socket: Option<PathBuf>,
    },
    /// Called by systemd-sleep around hibernation: `pre` or `post` (then the sleep kind).
    SleepHook {
        #[arg(value_enum)]
        phase: SleepPhase,
        /// hibernate, suspend... (given by systemd-sleep; ignored).
        kind: Option<String>,
    },
}
