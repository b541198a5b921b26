//! The agent's configuration: `/etc/warmfleet/agent.toml`, then every
//! `/etc/warmfleet/agent.d/*.toml` in name order, each a fragment whose keys override the
//! ones before; the merged result is validated into `Settings`. A file that does not parse,
//! an unknown key or a bad value is an error naming the file, the key and the reason.
//! docs/usage/agent.md lists every key.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use warmfleet_core::naming::{Deployment, HOOK_BOOTSTRAP, HOOK_DEREGISTRATION, SECRET_PREFIX};

pub const DEFAULT_FILE: &str = "/etc/warmfleet/agent.toml";
pub const DEFAULT_DIR: &str = "/etc/warmfleet/agent.d";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{file}: {reason}")]
    File { file: PathBuf, reason: String },
    #[error("{file}: {key}: {reason}")]
    Key {
        file: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{key} is required (set it in {DEFAULT_FILE} or a file in {DEFAULT_DIR})")]
    Missing { key: String },
}

/// One file's keys, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fragment {
    github_url: Option<String>,
    deployment: Option<String>,
    state_dir: Option<PathBuf>,
    secret_prefix: Option<String>,
    runner_table: Option<String>,
    runner: Option<RunnerFragment>,
    hooks: Option<HooksFragment>,
    timeouts: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunnerFragment {
    dir: Option<PathBuf>,
    user: Option<String>,
    labels: Option<Vec<String>>,
    group: Option<String>,
    mode: Option<String>,
    job_started_hook: Option<PathBuf>,
    job_completed_hook: Option<PathBuf>,
    block_imds: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HooksFragment {
    bootstrap: Option<String>,
    deregistration: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Persistent,
    Ephemeral,
}

/// How long the agent waits for things, each settable under `[timeouts]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// For a credential newer than any used before to appear in the instance's secret.
    pub credential: Duration,
    /// For the listener to say it is listening.
    pub listen: Duration,
    /// For a drain: the running job to finish and the runner to be removed.
    pub drain: Duration,
    /// Between heartbeats of a lifecycle hook the agent is holding.
    pub heartbeat: Duration,
    /// For any one AWS or GitHub call, retries included.
    pub call: Duration,
    /// Before an idle runner's listener is stopped by a drain: for a job GitHub assigned
    /// just before the runner's labels came off to show in the listener's output.
    pub settle: Duration,
    /// How long a persistent runner keeps its scale-in protection after a job, for a
    /// queued job to reach it.
    pub linger: Duration,
}

const TIMEOUT_KEYS: [(&str, u64); 7] = [
    ("credential", 300),
    ("listen", 120),
    ("drain", 24 * 3600),
    ("heartbeat", 600),
    ("call", 30),
    ("settle", 5),
    ("linger", 5),
];

/// The agent's validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `https://github.com/ORG` or `https://github.com/ORG/REPO` (or a GHES equivalent).
    pub github_url: String,
    /// Whose runner this is: it carries the deployment's label too.
    pub deployment: Deployment,
    pub state_dir: PathBuf,
    pub secret_prefix: String,
    /// Where the agent records whether its runner runs a job (a DynamoDB table) instead of
    /// protecting its instance from scale-in for each job: no Auto Scaling call per job.
    pub runner_table: Option<String>,
    pub runner_dir: PathBuf,
    pub runner_user: String,
    /// Labels besides `warmfleet`, the group and the instance id.
    pub labels: Vec<String>,
    /// The runner group persistent runners register into (`config.sh --runnergroup`).
    pub runner_group: Option<String>,
    pub mode: Mode,
    /// The runner's job hooks (`ACTIONS_RUNNER_HOOK_JOB_STARTED` / `_COMPLETED`): scripts
    /// that call `warmfleet-agent hook job-started|job-completed`.
    pub job_started_hook: PathBuf,
    pub job_completed_hook: PathBuf,
    /// Keep the runner user (and its jobs) away from the instance metadata service.
    pub block_imds: bool,
    pub bootstrap_hook: String,
    pub deregistration_hook: String,
    pub timeouts: Timeouts,
}

/// A value and the file that set it.
struct Set<T> {
    value: T,
    file: PathBuf,
}

#[derive(Default)]
struct Merged {
    github_url: Option<Set<String>>,
    deployment: Option<Set<String>>,
    state_dir: Option<Set<PathBuf>>,
    secret_prefix: Option<Set<String>>,
    runner_table: Option<Set<String>>,
    runner_dir: Option<Set<PathBuf>>,
    runner_user: Option<Set<String>>,
    labels: Option<Set<Vec<String>>>,
    runner_group: Option<Set<String>>,
    mode: Option<Set<String>>,
    job_started_hook: Option<Set<PathBuf>>,
    job_completed_hook: Option<Set<PathBuf>>,
    block_imds: Option<Set<bool>>,
    bootstrap_hook: Option<Set<String>>,
    deregistration_hook: Option<Set<String>>,
    timeouts: BTreeMap<String, Set<String>>,
}

fn set<T>(slot: &mut Option<Set<T>>, value: Option<T>, file: &Path) {
    if let Some(value) = value {
        *slot = Some(Set {
            value,
            file: file.to_owned(),
        });
    }
}

impl Merged {
    fn add(&mut self, f: Fragment, file: &Path) {
        set(&mut self.github_url, f.github_url, file);
        set(&mut self.deployment, f.deployment, file);
        set(&mut self.state_dir, f.state_dir, file);
        set(&mut self.secret_prefix, f.secret_prefix, file);
        set(&mut self.runner_table, f.runner_table, file);
        let r = f.runner.unwrap_or_default();
        set(&mut self.runner_dir, r.dir, file);
        set(&mut self.runner_user, r.user, file);
        set(&mut self.labels, r.labels, file);
        set(&mut self.runner_group, r.group, file);
        set(&mut self.mode, r.mode, file);
        set(&mut self.job_started_hook, r.job_started_hook, file);
        set(&mut self.job_completed_hook, r.job_completed_hook, file);
        set(&mut self.block_imds, r.block_imds, file);
        let h = f.hooks.unwrap_or_default();
        set(&mut self.bootstrap_hook, h.bootstrap, file);
        set(&mut self.deregistration_hook, h.deregistration, file);
        for (k, v) in f.timeouts.unwrap_or_default() {
            self.timeouts.insert(
                k,
                Set {
                    value: v,
                    file: file.to_owned(),
                },
            );
        }
    }
}

fn bad(s: &Set<impl Sized>, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        file: s.file.clone(),
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn text(
    slot: Option<Set<String>>,
    key: &str,
    default: Option<&str>,
) -> Result<String, ConfigError> {
    match slot {
        Some(s) if s.value.trim().is_empty() => Err(bad(&s, key, "must not be empty")),
        Some(s) => Ok(s.value),
        None => default
            .map(str::to_owned)
            .ok_or_else(|| ConfigError::Missing {
                key: key.to_owned(),
            }),
    }
}

impl Merged {
    fn validate(self) -> Result<Settings, ConfigError> {
        let github_url = match self.github_url {
            Some(s) if !(s.value.starts_with("https://") || s.value.starts_with("http://")) => {
                return Err(bad(
                    &s,
                    "github_url",
                    format!("{:?} is not an http(s) URL", s.value),
                ))
            }
            other => text(other, "github_url", None)?,
        };
        let mode = match self.mode {
            None => Mode::Persistent,
            Some(s) => match s.value.as_str() {
                "persistent" => Mode::Persistent,
                "ephemeral" => Mode::Ephemeral,
                other => {
                    return Err(bad(
                        &s,
                        "runner.mode",
                        format!("{other:?} is not persistent or ephemeral"),
                    ))
                }
            },
        };
        let labels = match self.labels {
            None => vec![],
            Some(s) => {
                if let Some(l) = s
                    .value
                    .iter()
                    .find(|l| l.trim().is_empty() || l.contains(','))
                {
                    return Err(bad(
                        &s,
                        "runner.labels",
                        format!("{l:?} is not a label (empty, or holds a comma)"),
                    ));
                }
                s.value
            }
        };
        let mut timeouts = BTreeMap::new();
        for (k, s) in &self.timeouts {
            let Some((_, _)) = TIMEOUT_KEYS.iter().find(|(name, _)| name == k) else {
                let known: Vec<&str> = TIMEOUT_KEYS.iter().map(|(n, _)| *n).collect();
                return Err(bad(
                    s,
                    &format!("timeouts.{k}"),
                    format!("unknown timeout; known: {}", known.join(", ")),
                ));
            };
            let d = humantime::parse_duration(&s.value).map_err(|e| {
                bad(
                    s,
                    &format!("timeouts.{k}"),
                    format!("{:?} is not a duration like 30s or 5m: {e}", s.value),
                )
            })?;
            if d.is_zero() {
                return Err(bad(s, &format!("timeouts.{k}"), "must be more than zero"));
            }
            timeouts.insert(k.as_str(), d);
        }
        let timeout = |k: &str| {
            timeouts.get(k).copied().unwrap_or_else(|| {
                Duration::from_secs(
                    TIMEOUT_KEYS
                        .iter()
                        .find(|(n, _)| *n == k)
                        .map_or(60, |(_, d)| *d),
                )
            })
        };
        let runner_user = text(self.runner_user, "runner.user", Some("runner"))?;
        let deployment = match self.deployment {
            None => Deployment::default(),
            Some(s) => Deployment::parse(&s.value).map_err(|e| bad(&s, "deployment", e))?,
        };
        Ok(Settings {
            github_url,
            deployment,
            state_dir: self
                .state_dir
                .map_or_else(|| PathBuf::from("/var/lib/warmfleet"), |s| s.value),
            secret_prefix: text(self.secret_prefix, "secret_prefix", Some(SECRET_PREFIX))?,
            runner_table: self
                .runner_table
                .map(|s| text(Some(s), "runner_table", None))
                .transpose()?,
            runner_dir: self
                .runner_dir
                .map_or_else(|| PathBuf::from("/opt/actions-runner"), |s| s.value),
            runner_user,
            labels,
            runner_group: self.runner_group.map(|s| s.value),
            mode,
            job_started_hook: self.job_started_hook.map_or_else(
                || PathBuf::from("/usr/lib/warmfleet/job-started.sh"),
                |s| s.value,
            ),
            job_completed_hook: self.job_completed_hook.map_or_else(
                || PathBuf::from("/usr/lib/warmfleet/job-completed.sh"),
                |s| s.value,
            ),
            block_imds: self.block_imds.is_none_or(|s| s.value),
            bootstrap_hook: text(self.bootstrap_hook, "hooks.bootstrap", Some(HOOK_BOOTSTRAP))?,
            deregistration_hook: text(
                self.deregistration_hook,
                "hooks.deregistration",
                Some(HOOK_DEREGISTRATION),
            )?,
            timeouts: Timeouts {
                credential: timeout("credential"),
                listen: timeout("listen"),
                drain: timeout("drain"),
                heartbeat: timeout("heartbeat"),
                call: timeout("call"),
                settle: timeout("settle"),
                linger: timeout("linger"),
            },
        })
    }
}

fn read(file: &Path) -> Result<Fragment, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::File {
        file: file.to_owned(),
        reason: format!("cannot be read: {e}"),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        file: file.to_owned(),
        reason: e.to_string().trim_end().replace('\n', " "),
    })
}

/// Loads `file` (it must exist) and then the `*.toml` files of `dir` in name order (the
/// directory may be absent).
pub fn load(file: &Path, dir: &Path) -> Result<Settings, ConfigError> {
    let mut merged = Merged::default();
    merged.add(read(file)?, file);
    let mut dropins: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => {
            return Err(ConfigError::File {
                file: dir.to_owned(),
                reason: format!("cannot be read: {e}"),
            })
        }
    };
    dropins.sort();
    for d in dropins {
        merged.add(read(&d)?, &d);
    }
    merged.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(main: &str, dropins: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, main).unwrap();
        let d = dir.path().join("agent.d");
        std::fs::create_dir(&d).unwrap();
        for (name, text) in dropins {
            std::fs::write(d.join(name), text).unwrap();
        }
        (dir, file, d)
    }

    #[test]
    fn drop_ins_override_in_name_order_and_defaults_fill_the_rest() {
        let (_dir, file, d) = files(
            "github_url = \"https://github.com/acme\"\n[runner]\nlabels = [\"linux\"]\n",
            &[
                (
                    "20-mode.toml",
                    "[runner]\nmode = \"ephemeral\"\n[timeouts]\ndrain = \"2h\"\n",
                ),
                (
                    "10-labels.toml",
                    "[runner]\nlabels = [\"gpu\"]\nmode = \"persistent\"\n",
                ),
                ("ignored.conf", "nonsense"),
            ],
        );
        let s = load(&file, &d).unwrap();
        assert_eq!(s.labels, ["gpu"]);
        assert_eq!(s.mode, Mode::Ephemeral);
        assert_eq!(s.timeouts.drain, Duration::from_secs(7200));
        assert_eq!(s.timeouts.listen, Duration::from_secs(120));
        assert_eq!(s.bootstrap_hook, "bootstrap");
        assert_eq!(s.secret_prefix, "warmfleet");
        assert_eq!(s.runner_user, "runner");
        assert_eq!(s.deployment.label(), "warmfleet");
        assert_eq!(
            s.runner_table, None,
            "protection, unless a runner table is named"
        );
    }

    #[test]
    fn a_runner_table_is_named_by_a_drop_in_and_may_not_be_blank() {
        let (_dir, file, d) = files(
            "github_url = \"https://github.com/acme\"\n",
            &[("50-cloud-init.toml", "runner_table = \"ci-runners\"\n")],
        );
        assert_eq!(
            load(&file, &d).unwrap().runner_table.as_deref(),
            Some("ci-runners")
        );
        let (_dir, file, d) = files(
            "github_url = \"https://github.com/acme\"\n",
            &[("50-cloud-init.toml", "runner_table = \" \"\n")],
        );
        let e = load(&file, &d).unwrap_err().to_string();
        assert!(
            e.contains("50-cloud-init.toml: runner_table: must not be empty"),
            "{e}"
        );
    }

    #[test]
    fn a_deployment_gives_its_label_or_is_refused_by_file_and_key() {
        let (_dir, file, d) = files(
            "github_url = \"https://github.com/acme\"\n",
            &[("50-cloud-init.toml", "deployment = \"1a2b3c4d\"\n")],
        );
        assert_eq!(
            load(&file, &d).unwrap().deployment.label(),
            "warmfleet-1a2b3c4d"
        );
        let (_dir, file, d) = files(
            "github_url = \"https://github.com/acme\"\n",
            &[("50-cloud-init.toml", "deployment = \"Prod EU\"\n")],
        );
        let e = load(&file, &d).unwrap_err().to_string();
        assert!(
            e.contains("50-cloud-init.toml: deployment: \"Prod EU\" is not a deployment id"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let (_dir, file, d) = files(
            "github_url = \"https://github.com/acme\"\n",
            &[("50-bad.toml", "[timeouts]\ndrain = \"soon\"\n")],
        );
        let e = load(&file, &d).unwrap_err().to_string();
        assert!(
            e.contains("50-bad.toml: timeouts.drain: \"soon\" is not a duration"),
            "{e}"
        );

        let (_dir, file, d) = files(
            "github_url = \"https://github.com/acme\"\n[runner]\nmdoe = \"x\"\n",
            &[],
        );
        let e = load(&file, &d).unwrap_err().to_string();
        assert!(
            e.contains("agent.toml") && e.contains("unknown field `mdoe`"),
            "{e}"
        );

        let (_dir, file, d) = files("[runner]\nmode = \"ephemeral\"\n", &[]);
        assert_eq!(
            load(&file, &d).unwrap_err(),
            ConfigError::Missing {
                key: "github_url".into()
            }
        );

        let (_dir, file, d) = files("github_url = \"github.com/acme\"\n", &[]);
        let e = load(&file, &d).unwrap_err().to_string();
        assert!(
            e.contains("github_url: \"github.com/acme\" is not an http(s) URL"),
            "{e}"
        );

        let (_dir, file, d) = files(
            "github_url = \"https://github.com/acme\"\n[timeouts]\nlisten = \"0s\"\n",
            &[],
        );
        assert!(load(&file, &d)
            .unwrap_err()
            .to_string()
            .contains("timeouts.listen: must be more than zero"));

        let e = load(
            Path::new("/nonexistent/agent.toml"),
            Path::new("/nonexistent/agent.d"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/agent.toml: cannot be read"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn the_packaged_default_loads_once_github_url_is_set() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent/agent.toml");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load(&file, dir.path()).unwrap_err(),
            ConfigError::Missing {
                key: "github_url".into()
            }
        );
        std::fs::write(
            dir.path().join("10-cloud-init.toml"),
            "github_url = \"https://github.com/acme\"\n",
        )
        .unwrap();
        let s = load(&file, dir.path()).unwrap();
        assert_eq!(s.timeouts.credential, Duration::from_secs(300));
        assert_eq!(s.runner_dir, PathBuf::from("/opt/actions-runner"));
    }
}
