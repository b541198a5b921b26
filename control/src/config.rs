//! Configuration from environment variables, validated when a function starts: a missing or
//! malformed value fails its init with the variable's name and what is wrong.
//! docs/usage/control-plane.md lists every variable.

use crate::budget::Budget;
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_core::naming::Deployment;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

/// Where the variables come from (the process environment, or a map in tests).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

fn optional(env: &dyn Env, var: &'static str) -> Option<String> {
    env.var(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn required(env: &dyn Env, var: &'static str) -> Result<String, ConfigError> {
    optional(env, var).ok_or_else(|| ConfigError {
        var,
        reason: "is required".into(),
    })
}

fn duration(env: &dyn Env, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    match optional(env, var) {
        None => Ok(default),
        Some(v) => humantime::parse_duration(&v).map_err(|e| ConfigError {
            var,
            reason: format!("{v:?} is not a duration like 30s or 5m: {e}"),
        }),
    }
}

/// `value`, unless it is below `min` (`why` says whose bound that is).
fn at_least(
    value: Duration,
    var: &'static str,
    min: Duration,
    why: &str,
) -> Result<Duration, ConfigError> {
    if value < min {
        return Err(ConfigError {
            var,
            reason: format!(
                "{} is below {} ({why})",
                humantime::format_duration(value),
                humantime::format_duration(min)
            ),
        });
    }
    Ok(value)
}

/// A fraction in (0, 1].
fn share(env: &dyn Env, var: &'static str, default: f64) -> Result<f64, ConfigError> {
    let Some(v) = optional(env, var) else {
        return Ok(default);
    };
    match v.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err(ConfigError {
            var,
            reason: format!("{v:?} is not a fraction above 0 and at most 1, like 0.2"),
        }),
    }
}

fn list(env: &dyn Env, var: &'static str) -> Vec<String> {
    optional(env, var)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `WARMFLEET_DEPLOYMENT`: the deployment whose runners these are (none when unset).
fn deployment(env: &dyn Env) -> Result<Deployment, ConfigError> {
    Deployment::parse(&optional(env, "WARMFLEET_DEPLOYMENT").unwrap_or_default()).map_err(
        |reason| ConfigError {
            var: "WARMFLEET_DEPLOYMENT",
            reason,
        },
    )
}

/// What every function needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// `https://github.com/ORG`, `https://github.com/ORG/REPO` or
    /// `https://github.com/enterprises/ENT` (or a GitHub Enterprise Server URL).
    pub github_url: String,
    pub github_api_url: Option<String>,
    /// The Secrets Manager secret holding the PAT or GitHub App credential.
    pub github_secret: String,
    /// Time kept back from the function's deadline to finish (complete a hook with
    /// ABANDON, log, answer).
    pub deadline_margin: Duration,
    /// Whose runners these are: every listing filters on its label.
    pub deployment: Deployment,
    /// `WARMFLEET_JOB_TABLE`: the deployment's table, where every function that talks to
    /// GitHub adds its requests to one account (`spending`), and where the deregistration
    /// takes a runner leaving service out of the idle runners queued jobs may claim; none:
    /// neither (the sweep then paces by GitHub's figures alone).
    pub job_table: Option<String>,
}

impl Common {
    /// Until when an invocation with `deadline` may work: the margin kept back to finish.
    pub fn until(&self, deadline: Instant) -> Instant {
        deadline
            .checked_sub(self.deadline_margin)
            .unwrap_or_else(Instant::now)
    }

    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let github_url = required(env, "WARMFLEET_GITHUB_URL")?;
        if !github_url.starts_with("https://") && !github_url.starts_with("http://") {
            return Err(ConfigError {
                var: "WARMFLEET_GITHUB_URL",
                reason: format!("{github_url:?} is not an http(s) URL"),
            });
        }
        Ok(Common {
            github_url,
            github_api_url: optional(env, "WARMFLEET_GITHUB_API_URL"),
            github_secret: required(env, "WARMFLEET_GITHUB_CREDENTIAL_SECRET")?,
            deadline_margin: duration(env, "WARMFLEET_DEADLINE_MARGIN", Duration::from_secs(3))?,
            deployment: deployment(env)?,
            job_table: optional(env, "WARMFLEET_JOB_TABLE"),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A runner per instance, registered with a registration token, for many jobs.
    Persistent,
    /// A just-in-time runner per instance, for one job.
    Ephemeral,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationSettings {
    pub common: Common,
    pub mode: Mode,
    /// The runner group of JIT runners (1 is the default group).
    pub runner_group_id: u64,
    /// Labels besides `warmfleet`, the group and the instance id.
    pub labels: Vec<String>,
}

impl RegistrationSettings {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let mode = match optional(env, "WARMFLEET_RUNNER_MODE").as_deref() {
            None | Some("persistent") => Mode::Persistent,
            Some("ephemeral") => Mode::Ephemeral,
            Some(other) => {
                return Err(ConfigError {
                    var: "WARMFLEET_RUNNER_MODE",
                    reason: format!("{other:?} is not persistent or ephemeral"),
                })
            }
        };
        let runner_group_id = match optional(env, "WARMFLEET_RUNNER_GROUP_ID") {
            None => 1,
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ConfigError {
                    var: "WARMFLEET_RUNNER_GROUP_ID",
                    reason: format!("{v:?} is not a runner group id (a positive number)"),
                })?,
        };
        Ok(RegistrationSettings {
            common: Common::from_env(env)?,
            mode,
            runner_group_id,
            labels: list(env, "WARMFLEET_RUNNER_LABELS"),
        })
    }
}

/// The groups a scheduled function looks after.
fn groups(env: &dyn Env) -> Result<Vec<String>, ConfigError> {
    let groups = list(env, "WARMFLEET_GROUPS");
    if groups.is_empty() {
        return Err(ConfigError {
            var: "WARMFLEET_GROUPS",
            reason: "is required: the Auto Scaling group names, comma-separated".into(),
        });
    }
    Ok(groups)
}

/// record_metric's settings: it counts from Auto Scaling alone, so it needs no GitHub
/// credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSettings {
    pub groups: Vec<String>,
    /// The job table, where the webhook receiver claims idle runners (none: not noted).
    pub job_table: Option<String>,
    /// `WARMFLEET_RUNNER_TABLE`: where agents record their jobs instead of protecting
    /// their instances; its busy instances count busy too (none: protection alone).
    pub runner_table: Option<String>,
    /// Time kept back from the invocation's deadline to finish.
    pub deadline_margin: Duration,
}

impl MetricSettings {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(MetricSettings {
            groups: groups(env)?,
            job_table: optional(env, "WARMFLEET_JOB_TABLE"),
            runner_table: optional(env, "WARMFLEET_RUNNER_TABLE"),
            deadline_margin: duration(env, "WARMFLEET_DEADLINE_MARGIN", Duration::from_secs(3))?,
        })
    }
}

/// The custom termination policy's settings: the runner table alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminationPolicySettings {
    /// `WARMFLEET_RUNNER_TABLE`: where agents record their jobs.
    pub runner_table: String,
}

impl TerminationPolicySettings {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(TerminationPolicySettings {
            runner_table: required(env, "WARMFLEET_RUNNER_TABLE")?,
        })
    }
}

/// The webhook receiver's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The Secrets Manager secret holding the webhook secret (its `AWSPREVIOUS` version is
    /// accepted too, during a rotation).
    pub secret_id: String,
    /// The DynamoDB table of jobs acted on.
    pub job_table: String,
    /// The groups, in the order a job that several could serve is routed by.
    pub groups: Vec<String>,
    /// Labels the runners carry besides `warmfleet` and their group (as the registration
    /// function's `WARMFLEET_RUNNER_LABELS`).
    pub labels: Vec<String>,
    /// The deployment whose label the runners carry too.
    pub deployment: Deployment,
    /// Time kept back from the invocation's deadline to answer.
    pub deadline_margin: Duration,
}

impl WebhookSettings {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(WebhookSettings {
            secret_id: required(env, "WARMFLEET_WEBHOOK_SECRET")?,
            job_table: required(env, "WARMFLEET_JOB_TABLE")?,
            groups: groups(env)?,
            labels: list(env, "WARMFLEET_RUNNER_LABELS"),
            deployment: deployment(env)?,
            deadline_margin: duration(env, "WARMFLEET_DEADLINE_MARGIN", Duration::from_secs(1))?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeregistrationSettings {
    pub common: Common,
    pub groups: Vec<String>,
    /// What SSM runs on an instance to drain it.
    pub drain_command: String,
    /// How long a drain may take (the longest job it waits for).
    pub drain_timeout: Duration,
    /// How long SSM may take to deliver a drain before the instance counts as unreachable.
    pub drain_delivery_timeout: Duration,
    /// How long an instance may be registered without its runner coming online before the
    /// sweep has it replaced.
    pub registration_grace: Duration,
    /// How often the schedule runs the sweep (its listings are paced in these steps).
    pub sweep_period: Duration,
    /// The deployment's part of the GitHub installation's rate limit.
    pub budget: Budget,
    /// `WARMFLEET_RUNNER_TABLE`: where agents record their jobs; the sweep deletes the
    /// records of instances gone, and a runner leaving service that it holds busy was never
    /// one to claim (none: no table).
    pub runner_table: Option<String>,
}

impl DeregistrationSettings {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(DeregistrationSettings {
            common: Common::from_env(env)?,
            groups: groups(env)?,
            drain_command: optional(env, "WARMFLEET_DRAIN_COMMAND")
                .unwrap_or_else(|| "warmfleet-agent drain".to_owned()),
            drain_timeout: duration(
                env,
                "WARMFLEET_DRAIN_TIMEOUT",
                Duration::from_secs(24 * 3600),
            )?,
            drain_delivery_timeout: at_least(
                duration(
                    env,
                    "WARMFLEET_DRAIN_DELIVERY_TIMEOUT",
                    Duration::from_secs(120),
                )?,
                "WARMFLEET_DRAIN_DELIVERY_TIMEOUT",
                Duration::from_secs(30),
                "SSM's shortest delivery timeout",
            )?,
            registration_grace: duration(
                env,
                "WARMFLEET_REGISTRATION_GRACE",
                Duration::from_secs(15 * 60),
            )?,
            sweep_period: at_least(
                duration(env, "WARMFLEET_SWEEP_PERIOD", Duration::from_secs(300))?,
                "WARMFLEET_SWEEP_PERIOD",
                Duration::from_secs(60),
                "EventBridge's shortest schedule",
            )?,
            budget: Budget {
                share: share(env, "WARMFLEET_GITHUB_SHARE", 0.2)?,
            },
            runner_table: optional(env, "WARMFLEET_RUNNER_TABLE"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [(&str, &str); 2] = [
        ("WARMFLEET_GITHUB_URL", "https://github.com/acme"),
        ("WARMFLEET_GITHUB_CREDENTIAL_SECRET", "warmfleet/github"),
    ];

    #[test]
    fn defaults_and_named_errors() {
        let s = RegistrationSettings::from_env(&BASE).unwrap();
        assert_eq!((s.mode, s.runner_group_id), (Mode::Persistent, 1));
        assert_eq!(s.common.deadline_margin, Duration::from_secs(3));
        let e =
            RegistrationSettings::from_env(&[("WARMFLEET_GITHUB_URL", "https://github.com/acme")])
                .unwrap_err();
        assert_eq!(e.var, "WARMFLEET_GITHUB_CREDENTIAL_SECRET");
        let e = RegistrationSettings::from_env(&[
            BASE[0],
            BASE[1],
            ("WARMFLEET_RUNNER_MODE", "sometimes"),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "WARMFLEET_RUNNER_MODE: \"sometimes\" is not persistent or ephemeral"
        );
        let e = MetricSettings::from_env(&BASE).unwrap_err();
        assert_eq!(e.var, "WARMFLEET_GROUPS");
        let m = MetricSettings::from_env(&[("WARMFLEET_GROUPS", "a")]).unwrap();
        assert_eq!(
            (m.groups.as_slice(), m.deadline_margin),
            (&["a".to_owned()][..], Duration::from_secs(3))
        );
        let e = DeregistrationSettings::from_env(&[
            BASE[0],
            BASE[1],
            ("WARMFLEET_GROUPS", "a, b"),
            ("WARMFLEET_DRAIN_TIMEOUT", "soon"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "WARMFLEET_DRAIN_TIMEOUT");
        let d = DeregistrationSettings::from_env(&[BASE[0], BASE[1], ("WARMFLEET_GROUPS", "a, b")])
            .unwrap();
        assert_eq!(d.groups, ["a", "b"]);
        assert_eq!(d.drain_delivery_timeout, Duration::from_secs(120));
        assert_eq!(
            (d.sweep_period, d.budget.share),
            (Duration::from_secs(300), 0.2)
        );
        for bad in ["0", "1.5", "a fifth", "-0.1"] {
            let e = DeregistrationSettings::from_env(&[
                BASE[0],
                BASE[1],
                ("WARMFLEET_GROUPS", "a"),
                ("WARMFLEET_GITHUB_SHARE", bad),
            ])
            .unwrap_err();
            assert_eq!(e.var, "WARMFLEET_GITHUB_SHARE", "{bad}");
            assert!(e.reason.contains("is not a fraction"), "{e}");
        }
        let e = DeregistrationSettings::from_env(&[
            BASE[0],
            BASE[1],
            ("WARMFLEET_GROUPS", "a"),
            ("WARMFLEET_SWEEP_PERIOD", "10s"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "WARMFLEET_SWEEP_PERIOD");
        let e = DeregistrationSettings::from_env(&[
            BASE[0],
            BASE[1],
            ("WARMFLEET_GROUPS", "a"),
            ("WARMFLEET_DRAIN_DELIVERY_TIMEOUT", "10s"),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "WARMFLEET_DRAIN_DELIVERY_TIMEOUT: 10s is below 30s (SSM's shortest delivery timeout)"
        );
    }

    #[test]
    fn a_deployment_is_optional_and_checked() {
        let s = RegistrationSettings::from_env(&BASE).unwrap();
        assert_eq!(s.common.deployment.label(), "warmfleet");
        let s =
            RegistrationSettings::from_env(&[BASE[0], BASE[1], ("WARMFLEET_DEPLOYMENT", "prod")])
                .unwrap();
        assert_eq!(s.common.deployment.label(), "warmfleet-prod");
        let e = RegistrationSettings::from_env(&[
            BASE[0],
            BASE[1],
            ("WARMFLEET_DEPLOYMENT", "Prod EU"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "WARMFLEET_DEPLOYMENT");
        assert!(e.reason.contains("is not a deployment id"), "{e}");
    }

    #[test]
    fn the_webhook_needs_no_github_credential_but_its_secret_table_and_groups() {
        let w = WebhookSettings::from_env(&[
            ("WARMFLEET_WEBHOOK_SECRET", "warmfleet/webhook"),
            ("WARMFLEET_JOB_TABLE", "warmfleet-jobs"),
            ("WARMFLEET_GROUPS", "small,large"),
            ("WARMFLEET_RUNNER_LABELS", "linux, x64"),
        ])
        .unwrap();
        assert_eq!(w.groups, ["small", "large"]);
        assert_eq!(w.labels, ["linux", "x64"]);
        assert_eq!(w.deadline_margin, Duration::from_secs(1));
        let e =
            WebhookSettings::from_env(&[("WARMFLEET_JOB_TABLE", "t"), ("WARMFLEET_GROUPS", "a")])
                .unwrap_err();
        assert_eq!(e.var, "WARMFLEET_WEBHOOK_SECRET");
        let e = WebhookSettings::from_env(&[
            ("WARMFLEET_WEBHOOK_SECRET", "s"),
            ("WARMFLEET_GROUPS", "a"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "WARMFLEET_JOB_TABLE");
    }
}
