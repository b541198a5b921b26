//! How an instance of the testbed runs the real `warmfleet-agent`, as the .deb and cloud-init
//! would set it up: the fake runner installed in `opt/actions-runner`, the agent's
//! configuration in `etc/warmfleet/`, the packaged system-sleep hook, then the agent. Used by
//! the agent's integration tests and its benchmark and the demo.

use std::path::{Path, PathBuf};

/// The shell script an instance runs (by `sh`, in its root directory).
pub struct AgentSetup {
    /// The `warmfleet-agent` binary.
    pub agent: PathBuf,
    /// The `warmfleet-testbed` binary (it installs the fake runner).
    pub testbed: PathBuf,
    /// The repository's `packaging/agent` (job hooks and the sleep hook).
    pub packaging: PathBuf,
    pub github_url: String,
    /// The deployment's id (the agent's `deployment`); empty: none.
    pub deployment: String,
    /// The runner's labels besides those the agent always gives it.
    pub labels: Vec<String>,
    /// The agent's `runner_table`: where it records its jobs instead of protecting its
    /// instance; `None`: protection.
    pub runner_table: Option<String>,
    /// More lines of the agent's configuration (after `[runner]`'s keys).
    pub extra_config: String,
    /// Shell lines run before the agent (e.g. `export ...`).
    pub env: String,
    /// The runner's user; `None`: the agent's own. Another user needs the agent to run as
    /// root: the runner's directory is given to that user and the world's directories
    /// above the instance made traversable.
    pub runner_user: Option<String>,
    /// Restart the agent when it fails, as systemd's `Restart=on-failure` would; otherwise
    /// its exit code is written to `agent.exit`.
    pub supervise: bool,
}

/// The EventBridge rule that sends launch events of the `registration` hook to the
/// registration Lambda (world-file TOML).
pub const REGISTRATION_RULE: &str = r#"
[[rule]]
name = "registration"
event_pattern = { source = ["aws.autoscaling"], detail-type = ["EC2 Instance-launch Lifecycle Action"], detail = { LifecycleHookName = ["registration"] } }
targets = ["registration"]
"#;

/// The same for terminate events of the `deregistration` hook.
pub const DEREGISTRATION_RULE: &str = r#"
[[rule]]
name = "deregistration"
event_pattern = { source = ["aws.autoscaling"], detail-type = ["EC2 Instance-terminate Lifecycle Action"], detail = { LifecycleHookName = ["deregistration"] } }
targets = ["deregistration"]
"#;

/// The heartbeat timeout of every hook `lifecycle_hooks` makes (world seconds).
pub const HOOK_HEARTBEAT_SECONDS: i32 = 600;

/// Lifecycle hooks as the Terraform module creates them (heartbeat 600 s, default ABANDON):
/// `registration` and `bootstrap` on launch, `deregistration` on terminate; `names` picks.
pub fn lifecycle_hooks(
    names: &[&str],
) -> Vec<aws_sdk_autoscaling::types::LifecycleHookSpecification> {
    [
        ("registration", "autoscaling:EC2_INSTANCE_LAUNCHING"),
        ("bootstrap", "autoscaling:EC2_INSTANCE_LAUNCHING"),
        ("deregistration", "autoscaling:EC2_INSTANCE_TERMINATING"),
    ]
    .into_iter()
    .filter(|(name, _)| names.contains(name))
    .map(|(name, transition)| {
        aws_sdk_autoscaling::types::LifecycleHookSpecification::builder()
            .lifecycle_hook_name(name)
            .lifecycle_transition(transition)
            .heartbeat_timeout(HOOK_HEARTBEAT_SECONDS)
            .default_result("ABANDON")
            .build()
    })
    .collect()
}

/// The config flags of every agent command in an instance (paths relative to its root).
pub const CONFIG_FLAGS: &str =
    "--config etc/warmfleet/agent.toml --config-dir etc/warmfleet/agent.d";

impl AgentSetup {
    /// `packaging/agent` of the repository this testbed was built from.
    pub fn packaging_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent")
    }

    /// What SSM runs to drain an instance (in its root).
    pub fn drain_command(&self) -> String {
        format!("{} {CONFIG_FLAGS} drain", self.agent.display())
    }

    pub fn script(&self) -> String {
        let agent = self.agent.display();
        let hook = |p: &str| self.packaging.join(p).display().to_string();
        let run = if self.supervise {
            format!("until {agent} {CONFIG_FLAGS} run; do sleep 0.3; done")
        } else {
            format!("{agent} {CONFIG_FLAGS} run; echo $? > agent.exit")
        };
        let (user, hand_over) = match &self.runner_user {
            Some(u) => (
                u.clone(),
                format!("chown -R {u} opt/actions-runner\nchmod a+x .. ../.. ../../.."),
            ),
            None => ("$(id -un)".to_owned(), String::new()),
        };
        format!(
            r#"set -e
root=$PWD
{testbed} runner install opt/actions-runner >/dev/null
{hand_over}
mkdir -p etc/warmfleet/agent.d usr/lib/systemd/system-sleep var/lib/warmfleet
cat > etc/warmfleet/agent.toml <<EOF
github_url = "{github_url}"
deployment = "{deployment}"
state_dir = "$root/var/lib/warmfleet"
{runner_table}[runner]
dir = "$root/opt/actions-runner"
user = "{user}"
labels = {labels}
job_started_hook = "{started}"
job_completed_hook = "{completed}"
{extra_config}
EOF
cat > usr/lib/systemd/system-sleep/warmfleet <<EOF
#!/bin/sh
export WARMFLEET_AGENT={agent} WARMFLEET_AGENT_CONFIG=$root/etc/warmfleet/agent.toml WARMFLEET_AGENT_CONFIG_DIR=$root/etc/warmfleet/agent.d
exec {sleep_hook} "\$@"
EOF
chmod +x usr/lib/systemd/system-sleep/warmfleet
{env}
{run}
"#,
            testbed = self.testbed.display(),
            github_url = self.github_url,
            deployment = self.deployment,
            labels = toml::Value::Array(
                self.labels
                    .iter()
                    .cloned()
                    .map(toml::Value::String)
                    .collect()
            ),
            extra_config = self.extra_config,
            runner_table = self
                .runner_table
                .as_ref()
                .map(|t| format!("runner_table = {}\n", toml::Value::String(t.clone())))
                .unwrap_or_default(),
            env = self.env,
            started = hook("hooks/job-started.sh"),
            completed = hook("hooks/job-completed.sh"),
            sleep_hook = hook("system-sleep/warmfleet"),
        )
    }
}
