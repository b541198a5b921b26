//! The demo's fleet file (`--config FILE`, TOML). Its keys mirror the deployment's settings;
//! every key has a default, so no file is needed. docs/usage/demo.md lists them.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Persistent runners take job after job; ephemeral ones one job, then a new instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Persistent,
    Ephemeral,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Persistent => "persistent",
            Mode::Ephemeral => "ephemeral",
        }
    }
}

/// The state warm instances wait in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PoolState {
    Hibernated,
    Stopped,
    Running,
}

/// A named arrival pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Evenly spread over the length, with jitter.
    Steady,
    /// Five bursts of jobs queued within seconds of each other, quiet in between.
    Bursts,
    /// Few jobs early and late, most around the middle (a half sine).
    Workday,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleet {
    /// The Auto Scaling group's name.
    pub group: String,
    pub min_size: u32,
    pub max_size: u32,
    /// Idle runners the alarms keep: fewer scales out, more (for 3 periods) scales in.
    pub idle_runner_target: u32,
    pub runner_mode: Mode,
    /// Runners also carry `self-hosted`, `Linux` and `X64` (the testbed's instances are
    /// x86_64), as the module's `runner_default_labels` makes them.
    pub runner_default_labels: bool,
    /// Labels besides `warmfleet`, the group, the instance id and the default ones.
    pub runner_labels: Vec<String>,
    /// The most instances one scale-out adds: one per missing idle runner, up to this many.
    pub scale_out_max_step: u32,
    /// Minutes `IdleRunners` must stay below the target before a scale-out.
    pub scale_out_evaluation_periods: u32,
    /// Minutes `IdleRunners` must stay above the target before a scale-in; default 1 with
    /// the webhook (a queued job brings an instance back from the pool in seconds, so a
    /// surplus is not worth keeping), 3 without.
    pub scale_in_evaluation_periods: Option<u32>,
    /// The most instances one scale-in removes: one per idle runner above the target, up
    /// to this many.
    pub scale_in_max_step: u32,
    /// How long a new instance counts as warming up for the scale-out policy.
    #[serde(with = "humantime_serde")]
    pub instance_warmup: Duration,
    /// World time a new instance boots before its launch hooks fire.
    #[serde(with = "humantime_serde")]
    pub boot_delay: Duration,
    /// World time a hibernated instance takes to resume.
    #[serde(with = "humantime_serde")]
    pub resume_delay: Duration,
    /// World time an instance takes to hibernate.
    #[serde(with = "humantime_serde")]
    pub hibernate_delay: Duration,
    /// GitHub's `workflow_job` webhooks reach the receiver, which adds one instance per
    /// queued job at once; off, only the idle-runner alarms scale out.
    pub webhook: bool,
    /// The receiver claims the idle runners record_metric counted before adding instances
    /// (the module's `webhook_claims_idle_runners`).
    pub claim_idle: bool,
    /// Agents record their jobs in the runner table instead of protecting their instances,
    /// and the group's custom termination policy (the termination-policy function) takes only
    /// idle runners (the module's `use_runner_table`).
    pub runner_table: bool,
    pub warm_pool: WarmPool,
    /// A rollout of a new launch template version while the workload runs (`rollout.rs`).
    pub refresh: Refresh,
    pub workload: Workload,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Refresh {
    /// World time after the fleet's creation at which launch template version 2 is
    /// applied, as `terraform apply` with a new AMI would; no rollout when unset.
    #[serde(with = "humantime_serde::option")]
    pub at: Option<Duration>,
    /// The module's `instance_refresh`: an instance refresh follows the new version (off:
    /// only new instances get it).
    pub instance_refresh: bool,
    /// The module's `instance_refresh_max_healthy_percentage`.
    pub max_healthy_percentage: u32,
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh {
            at: None,
            instance_refresh: true,
            max_healthy_percentage: 110,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmPool {
    pub enabled: bool,
    /// Warm instances kept at least; default the idle target + 1.
    pub min_size: Option<u32>,
    /// Instances in service and warm together at most; default (as the module's) the
    /// group's max size plus the pool's minimum, so that an instance a scale-in returns
    /// fits beside the ready ones.
    pub max_prepared_capacity: Option<u32>,
    pub pool_state: PoolState,
    /// Scale-in returns an instance to the pool instead of terminating it.
    pub reuse_on_scale_in: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    pub pattern: Pattern,
    /// Jobs per `length`, and in all unless `--jobs` says otherwise (more take more
    /// lengths, at the same rate).
    pub jobs: u32,
    /// World time over which `jobs` jobs arrive.
    #[serde(with = "humantime_serde")]
    pub length: Duration,
    /// World time from the fleet's creation to the workload's start (a fleet in use has
    /// had time to fill its warm pool); default 0.
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    /// Mean job length (each is 0.5-1.5 times this).
    #[serde(with = "humantime_serde")]
    pub job_duration: Duration,
    /// Labels every job asks for.
    pub labels: Vec<String>,
    /// Jobs from a CSV file instead of the pattern (relative to the fleet file).
    pub csv: Option<PathBuf>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            group: "runners".into(),
            min_size: 1,
            max_size: 6,
            idle_runner_target: 1,
            runner_mode: Mode::Persistent,
            runner_default_labels: true,
            runner_labels: vec![],
            scale_out_max_step: 3,
            scale_out_evaluation_periods: 1,
            scale_in_evaluation_periods: None,
            scale_in_max_step: 1,
            instance_warmup: Duration::from_secs(60),
            boot_delay: Duration::from_secs(40),
            resume_delay: Duration::from_secs(5),
            hibernate_delay: Duration::from_secs(10),
            webhook: true,
            claim_idle: false,
            runner_table: false,
            warm_pool: WarmPool::default(),
            refresh: Refresh::default(),
            workload: Workload::default(),
        }
    }
}

impl Default for WarmPool {
    fn default() -> Self {
        WarmPool {
            enabled: true,
            min_size: None,
            max_prepared_capacity: None,
            pool_state: PoolState::Hibernated,
            reuse_on_scale_in: true,
        }
    }
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            pattern: Pattern::Bursts,
            jobs: 40,
            length: Duration::from_secs(20 * 60),
            start: Duration::ZERO,
            job_duration: Duration::from_secs(120),
            // The usual form, as workflows written for any self-hosted runner have it.
            labels: ["self-hosted", "linux", "x64"].map(String::from).to_vec(),
            csv: None,
        }
    }
}

impl Fleet {
    /// Reads a fleet file; `None`: the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Fleet> {
        let Some(path) = path else {
            return Ok(Fleet::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the fleet file {}", path.display()))?;
        let mut fleet: Fleet = toml::from_str(&text)
            .with_context(|| format!("in the fleet file {}", path.display()))?;
        if let (Some(csv), Some(dir)) = (&fleet.workload.csv, path.parent()) {
            fleet.workload.csv = Some(dir.join(csv));
        }
        fleet
            .check()
            .with_context(|| format!("in the fleet file {}", path.display()))?;
        Ok(fleet)
    }

    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.max_size == 0 || self.min_size > self.max_size {
            bail!(
                "min_size ({}) must be at most max_size ({}), and max_size at least 1",
                self.min_size,
                self.max_size
            );
        }
        if self.idle_runner_target > self.max_size {
            bail!(
                "idle_runner_target ({}) is more than max_size ({})",
                self.idle_runner_target,
                self.max_size
            );
        }
        if self.scale_in_evaluation_periods == Some(0) || self.scale_out_evaluation_periods == 0 {
            bail!(
                "scale_in_evaluation_periods and scale_out_evaluation_periods must be at least 1"
            );
        }
        if self.scale_out_max_step == 0 || self.scale_in_max_step == 0 {
            bail!("scale_out_max_step and scale_in_max_step must be at least 1");
        }
        if self.group.is_empty() || self.group.contains('/') {
            bail!(
                "group {:?} must be a non-empty name without '/'",
                self.group
            );
        }
        if !(100..=200).contains(&self.refresh.max_healthy_percentage) {
            bail!(
                "refresh.max_healthy_percentage ({}) must be 100 to 200",
                self.refresh.max_healthy_percentage
            );
        }
        if self.workload.job_duration.is_zero() || self.workload.length.is_zero() {
            bail!("workload.job_duration and workload.length must be more than 0");
        }
        Ok(())
    }

    /// Minutes above the idle target before a scale-in (see the field).
    pub fn scale_in_periods(&self) -> u32 {
        self.scale_in_evaluation_periods
            .unwrap_or(if self.webhook { 1 } else { 3 })
    }

    /// The scale-in alarm's period (seconds) and evaluation periods, as the module sets
    /// them: one minute above the target is one 10-second period on the latest count (a
    /// high-resolution alarm acts within seconds of record_metric's count, not a minute
    /// later); more minutes are that many one-minute periods.
    pub fn scale_in_alarm_periods(&self) -> (i32, u32) {
        match self.scale_in_periods() {
            1 => (10, 1),
            n => (60, n),
        }
    }

    /// Instances in service and warm together at most (see the field).
    pub fn warm_pool_max_prepared(&self) -> u32 {
        self.warm_pool
            .max_prepared_capacity
            .unwrap_or(self.max_size + self.warm_pool_min())
    }

    /// Warm instances kept at least.
    pub fn warm_pool_min(&self) -> u32 {
        self.warm_pool
            .min_size
            .unwrap_or(self.idle_runner_target + 1)
    }

    /// The labels the agent registers with and the Lambdas mint for, as the module's
    /// `modules/labels` makes them: the default ones, then the others not already among them
    /// (GitHub compares labels without case).
    pub fn labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = if self.runner_default_labels {
            ["self-hosted", "Linux", "X64"].map(String::from).to_vec()
        } else {
            vec![]
        };
        for l in &self.runner_labels {
            if !labels.iter().any(|d| d.eq_ignore_ascii_case(l)) {
                labels.push(l.clone());
            }
        }
        labels
    }

    /// Labels a runner of this fleet carries (lowercase), besides its instance id.
    pub fn runner_label_set(&self) -> Vec<String> {
        let mut labels = vec!["warmfleet".to_owned(), self.group.to_lowercase()];
        labels.extend(self.labels().iter().map(|l| l.to_lowercase()));
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fleet.toml");
        std::fs::write(
            &file,
            "max_size = 3\nrunner_mode = \"ephemeral\"\n[warm_pool]\nenabled = false\n\
             [workload]\npattern = \"workday\"\nlength = \"1h\"\ncsv = \"jobs.csv\"\n",
        )
        .unwrap();
        let f = Fleet::load(Some(&file)).unwrap();
        assert_eq!(f.max_size, 3);
        assert_eq!(f.min_size, 1);
        assert_eq!(f.runner_mode, Mode::Ephemeral);
        assert!(!f.warm_pool.enabled);
        assert_eq!(f.warm_pool_min(), 2);
        assert_eq!(f.workload.pattern, Pattern::Workday);
        assert_eq!(f.workload.length, Duration::from_secs(3600));
        assert_eq!(f.workload.csv, Some(dir.path().join("jobs.csv")));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fleet.toml");
        for (text, expected) in [
            ("max_sise = 3\n", "unknown field `max_sise`"),
            (
                "min_size = 4\nmax_size = 3\n",
                "min_size (4) must be at most max_size (3)",
            ),
            (
                "runner_mode = \"sometimes\"\n",
                "unknown variant `sometimes`",
            ),
            ("[workload]\nlength = \"soon\"\n", "soon"),
            (
                "idle_runner_target = 9\n",
                "idle_runner_target (9) is more than max_size (6)",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = format!("{:#}", Fleet::load(Some(&file)).unwrap_err());
            assert!(e.contains(expected), "{text:?}: {e}");
            assert!(e.contains("fleet.toml"), "{e}");
        }
        let e = format!(
            "{:#}",
            Fleet::load(Some(&dir.path().join("none.toml"))).unwrap_err()
        );
        assert!(e.contains("none.toml"), "{e}");
    }
}
