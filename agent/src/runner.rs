//! The actions runner as an external program: `config.sh` to configure and remove it,
//! `bin/Runner.Listener run` to serve. Tokens go through the environment
//! (`ACTIONS_RUNNER_INPUT_TOKEN`, `ACTIONS_RUNNER_INPUT_JITCONFIG`), never argv. The
//! listener's output is appended to a log file the agent reads back (`parse_line` is the
//! pure half), so a restarted agent can pick up a listener that outlived it.

use crate::error::AgentError;
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// What a line of the listener's output tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Listening,
    JobRunning,
    JobFinished,
    /// GitHub refuses the runner's version: the runner's message.
    VersionRefused(String),
}

/// GitHub's refusal of the runner's version, in the runner's output: when it polls for
/// messages with updates disabled ("Runner version v2.330.0 is deprecated and cannot
/// receive messages.", then the listener exits 1), or when it registers below GitHub's
/// floor (`config.sh`: "Your runner version is out of date and can no longer register
/// with GitHub. ..."). The message from "Runner version" / "Your runner version" on.
pub fn version_refused(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let refused = line.contains("is deprecated and cannot receive messages")
            || line.contains("can no longer register with GitHub");
        if !refused {
            return None;
        }
        let at = ["Your runner version", "Runner version"]
            .iter()
            .find_map(|start| line.find(start))
            .unwrap_or(0);
        Some(line[at..].trim().to_owned())
    })
}

/// Reads one line the listener printed (`2026-11-28 12:00:00Z: Listening for Jobs`,
/// `...: Running job: build`, `...: Job build completed with result: Succeeded`).
pub fn parse_line(line: &str) -> Option<Line> {
    let text = line.trim_end();
    if text.ends_with("Listening for Jobs") {
        Some(Line::Listening)
    } else if text.contains(": Running job: ") {
        Some(Line::JobRunning)
    } else if text.contains(" completed with result: ") {
        Some(Line::JobFinished)
    } else {
        version_refused(text).map(Line::VersionRefused)
    }
}

/// Whose identity the runner's processes take.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl RunAs {
    /// The runner user: switched to when the agent runs as root; when it does not, the user
    /// must be the agent's own.
    pub fn lookup(user: &str) -> Result<Option<RunAs>, AgentError> {
        let refused = |reason: String| AgentError::RunnerUser {
            user: user.to_owned(),
            reason,
        };
        let me = nix::unistd::geteuid();
        let found = nix::unistd::User::from_name(user)
            .map_err(|e| refused(format!("cannot be looked up: {e}")))?
            .ok_or_else(|| refused("no such user".into()))?;
        if found.uid == me {
            return Ok(None);
        }
        if !me.is_root() {
            return Err(refused(format!(
                "the agent runs as uid {me} and can only switch users as root"
            )));
        }
        if found.uid.is_root() {
            return Err(refused("the runner must not run as root".into()));
        }
        Ok(Some(RunAs {
            uid: found.uid.as_raw(),
            gid: found.gid.as_raw(),
            home: found.dir,
        }))
    }
}

/// The runner's directory and the way its programs are started.
#[derive(Clone)]
pub struct Runner {
    pub dir: PathBuf,
    pub run_as: Option<RunAs>,
    /// Extra environment of every runner program (job hooks, the agent's socket).
    pub env: Vec<(String, String)>,
}

/// How a `config.sh` run ended.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    /// What it printed, for the log (the runner never prints its token).
    pub output: String,
}

impl Runner {
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(program);
        c.current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        // std drops root's supplementary groups when it switches the uid.
        if let Some(r) = &self.run_as {
            c.uid(r.uid).gid(r.gid).env("HOME", &r.home);
        }
        c
    }

    /// Whether `config.sh` has configured this directory (`.runner` exists).
    pub fn configured(&self) -> bool {
        self.dir.join(".runner").exists()
    }

    async fn config_sh(
        &self,
        args: &[&str],
        token: Option<&SecretString>,
    ) -> std::io::Result<Outcome> {
        let mut c = self.command(self.dir.join("config.sh"));
        c.args(args);
        if let Some(t) = token {
            c.env("ACTIONS_RUNNER_INPUT_TOKEN", t.expose_secret());
        }
        let out = c.output().await?;
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok(Outcome {
            success: out.status.success(),
            output: output.trim().to_owned(),
        })
    }

    /// `config.sh --unattended ...` with the token in the environment.
    pub async fn configure(
        &self,
        url: &str,
        name: &str,
        labels: &[String],
        group: Option<&str>,
        token: &SecretString,
    ) -> std::io::Result<Outcome> {
        let labels = labels.join(",");
        let mut args = vec![
            "--unattended",
            "--url",
            url,
            "--name",
            name,
            "--labels",
            &labels,
            "--no-default-labels",
            "--replace",
            "--disableupdate",
            "--work",
            "_work",
        ];
        if let Some(g) = group {
            args.extend(["--runnergroup", g]);
        }
        self.config_sh(&args, Some(token)).await
    }

    /// `config.sh remove`: with a remove token, also at GitHub; without, locally only.
    pub async fn remove(&self, token: Option<&SecretString>) -> std::io::Result<Outcome> {
        match token {
            Some(t) => self.config_sh(&["remove"], Some(t)).await,
            None => self.config_sh(&["remove", "--local"], None).await,
        }
    }

    /// Starts `bin/Runner.Listener run` with its output appended to `log`.
    pub fn start_listener(
        &self,
        log: &Path,
        jit_config: Option<&SecretString>,
    ) -> std::io::Result<tokio::process::Child> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut c = self.command(self.dir.join("bin/Runner.Listener"));
        c.arg("run")
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(false);
        if let Some(j) = jit_config {
            c.env("ACTIONS_RUNNER_INPUT_JITCONFIG", j.expose_secret());
        }
        c.spawn()
    }
}

/// When a process started (clock ticks after boot: field 22 of `/proc/PID/stat`), read
/// from that file's text; `None` for a zombie or unreadable text.
pub fn parse_start(stat: &str) -> Option<u64> {
    // The command (field 2) may hold spaces and parentheses: count from its last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if *fields.first()? == "Z" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// When `pid` started, if it runs.
pub fn started_at(pid: u32) -> Option<u64> {
    parse_start(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether the process started at `started` as `pid` still runs: a later process that
/// reuses the pid has another start time.
pub fn still_running(pid: u32, started: u64) -> bool {
    started_at(pid) == Some(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listeners_output() {
        let fixture = include_str!("../tests/fixtures/listener.log");
        let seen: Vec<Line> = fixture.lines().filter_map(parse_line).collect();
        assert_eq!(seen, [Line::Listening, Line::JobRunning, Line::JobFinished]);
    }

    #[test]
    fn knows_github_refusing_the_runners_version() {
        // The listener's words since v2.303 (with v2.303-2.332's typo), and the fallback
        // of v2.314-2.336 for a 403 without a broker error.
        for line in [
            "An error occurred: Runner version v2.330.0 is deprecated and cannot receive messages.",
            "An error occured: Runner version v2.320.0 is deprecated and cannot receive messages.",
            "Error: Forbidden Runner version v2.317.0 is deprecated and cannot receive messages.",
        ] {
            let Some(Line::VersionRefused(m)) = parse_line(line) else {
                panic!("{line}: not seen as a refusal");
            };
            assert!(m.starts_with("Runner version v2.3"), "{m}");
        }
        // config.sh below the registration floor: its output, several lines.
        let config = "Http response code: NotFound from 'POST https://api.github.com/actions/runner-registration'\n\
                      ERROR: Your runner version is out of date and can no longer register with GitHub. \
                      The minimum runner version required to register with GitHub Actions is now 2.329.0.\n\
                      Response status code does not indicate success: 404 (Not Found).";
        let m = version_refused(config).unwrap();
        assert!(m.starts_with("Your runner version is out of date") && m.ends_with("2.329.0."));
        assert_eq!(
            version_refused("Http response code: NotFound\nNot Found"),
            None
        );
        assert_eq!(parse_line("2026-11-28 12:00:00Z: Exiting..."), None);
    }

    #[test]
    fn reads_a_process_start_time_and_knows_a_zombie() {
        let stat = "4242 (Runner.List (x)) S 1 4242 4242 0 -1 4194560 815 0 0 0 3 1 0 0 20 0 \
                    12 0 987654 123456789 2100 18446744073709551615";
        assert_eq!(parse_start(stat), Some(987654));
        assert_eq!(parse_start(&stat.replace(") S ", ") Z ")), None);
        assert_eq!(parse_start("garbage"), None);
        assert!(started_at(std::process::id()).is_some());
    }
}
