//! The real `warmfleet-agent` as every instance's process, with the real registration and
//! deregistration Lambdas, the fake actions runner and the GitHub fake: cold launch, warm
//! pool and resume, jobs under scale-in protection, drains, ephemeral runners, failures.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_autoscaling::types::{LifecycleHookSpecification, WarmPoolState};
use common::control::{lambda, Function, Plane};
use common::TESTBED;
use secrecy::ExposeSecret;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_core::instance_secret::RunnerCredential;

const GROUP: &str = "runners";

const RULES: &str = r#"
[[rule]]
name = "deregistration"
event_pattern = { source = ["aws.autoscaling"], detail-type = ["EC2 Instance-terminate Lifecycle Action"], detail = { LifecycleHookName = ["deregistration"] } }
targets = ["deregistration"]

[[rule]]
name = "registration"
event_pattern = { source = ["aws.autoscaling"], detail-type = ["EC2 Instance-launch Lifecycle Action"], detail = { LifecycleHookName = ["registration"] } }
targets = ["registration"]
"#;

fn repo(path: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// What each instance runs: installs the fake runner, writes the agent's configuration and
/// the packaged sleep hook (as the .deb and cloud-init would), then runs the agent.
fn instance_script(github_url: &str, extra_config: &str) -> tempfile::NamedTempFile {
    let agent = lambda("warmfleet-agent").display().to_string();
    let script = format!(
        r#"set -e
root=$PWD
{TESTBED} runner install opt/actions-runner >/dev/null
mkdir -p etc/warmfleet/agent.d usr/lib/systemd/system-sleep var/lib/warmfleet
cat > etc/warmfleet/agent.toml <<EOF
github_url = "{github_url}"
state_dir = "$root/var/lib/warmfleet"
[runner]
dir = "$root/opt/actions-runner"
user = "$(id -un)"
labels = ["linux"]
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
export WARMFLEET_RUNNER_RELAUNCH_DELAY=0
exec {agent} --config etc/warmfleet/agent.toml --config-dir etc/warmfleet/agent.d run
"#,
        started = repo("packaging/agent/hooks/job-started.sh"),
        completed = repo("packaging/agent/hooks/job-completed.sh"),
        sleep_hook = repo("packaging/agent/system-sleep/warmfleet"),
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    file
}

struct Fleet {
    plane: Plane,
    _script: tempfile::NamedTempFile,
}

/// The world with both Lambdas, instances running the agent. `mode` is the runner mode of
/// the registration Lambda and the agent; `registration` false leaves the Lambda out, so
/// no credential is ever written.
async fn fleet(mode: &str, extra_config: &str, registration: bool) -> Fleet {
    // The GitHub URL is known only once the fake runs: a placeholder the script replaces.
    let drain = format!(
        "{} --config etc/warmfleet/agent.toml --config-dir etc/warmfleet/agent.d drain",
        lambda("warmfleet-agent").display()
    );
    let mut functions = vec![Function {
        name: "deregistration",
        binary: "warmfleet-deregistration",
        timeout: 30.0,
        env: &[],
    }];
    let dereg_env = [
        ("WARMFLEET_GROUPS", GROUP),
        ("WARMFLEET_DRAIN_COMMAND", drain.as_str()),
    ];
    functions[0].env = &dereg_env;
    let reg_env = [("WARMFLEET_RUNNER_MODE", mode)];
    if registration {
        functions.push(Function {
            name: "registration",
            binary: "warmfleet-registration",
            timeout: 30.0,
            env: &reg_env,
        });
    }
    let rules = if registration {
        RULES.to_owned()
    } else {
        RULES
            .split("[[rule]]")
            .take(2)
            .collect::<Vec<_>>()
            .join("[[rule]]")
    };
    let script = tempfile::NamedTempFile::new().unwrap();
    let command = format!("sh {}", script.path().display());
    let plane = Plane::start("1", Some(&command), &functions, &rules, &[]).await;
    let config = format!("mode = \"{mode}\"\n{extra_config}");
    let body = instance_script(&plane.github.org_url(), &config);
    std::fs::copy(body.path(), script.path()).unwrap();
    Fleet {
        plane,
        _script: script,
    }
}

fn hooks() -> Vec<LifecycleHookSpecification> {
    hooks_of(&["registration", "bootstrap", "deregistration"])
}

fn hooks_of(names: &[&str]) -> Vec<LifecycleHookSpecification> {
    [
        ("registration", "autoscaling:EC2_INSTANCE_LAUNCHING"),
        ("bootstrap", "autoscaling:EC2_INSTANCE_LAUNCHING"),
        ("deregistration", "autoscaling:EC2_INSTANCE_TERMINATING"),
    ]
    .into_iter()
    .filter(|(name, _)| names.contains(name))
    .map(|(name, transition)| {
        LifecycleHookSpecification::builder()
            .lifecycle_hook_name(name)
            .lifecycle_transition(transition)
            .heartbeat_timeout(600)
            .default_result("ABANDON")
            .build()
    })
    .collect()
}

impl Fleet {
    async fn root(&self, instance: &str) -> PathBuf {
        PathBuf::from(
            self.plane.aws.instance(instance).await["root"]
                .as_str()
                .unwrap(),
        )
    }

    /// The GitHub fake's runners named `instance`.
    async fn runners(&self, instance: &str) -> Vec<Value> {
        let all = self.plane.github.get("/_testbed/runners").await;
        all.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["name"] == instance)
            .cloned()
            .collect()
    }

    async fn protected(&self, instance: &str) -> bool {
        let out = self
            .plane
            .aws
            .asg
            .describe_auto_scaling_instances()
            .instance_ids(instance)
            .send()
            .await
            .unwrap();
        out.auto_scaling_instances()
            .first()
            .is_some_and(|i| i.protected_from_scale_in() == Some(true))
    }

    /// The lines of the instance's console (the agent logs to stderr) that say `hook` was
    /// completed, and how.
    async fn completions(&self, instance: &str, hook: &str) -> Vec<String> {
        let log = std::fs::read_to_string(self.root(instance).await.join("console.log"))
            .unwrap_or_default();
        log.lines()
            .filter(|l| {
                l.contains("hook completed")
                    && l.contains(&format!("hook=\"{hook}\""))
                    && l.contains("done=Done")
            })
            .map(|l| {
                if l.contains("result=\"CONTINUE\"") {
                    "CONTINUE".to_owned()
                } else {
                    "ABANDON".to_owned()
                }
            })
            .collect()
    }

    async fn console(&self, instance: &str) -> String {
        std::fs::read_to_string(self.root(instance).await.join("console.log")).unwrap_or_default()
    }

    /// The agent's state file in an instance.
    async fn agent_state(&self, instance: &str) -> Value {
        let file = self
            .root(instance)
            .await
            .join("var/lib/warmfleet/state.json");
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
    }
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < until, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every file under `dir` (recursively) that contains `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<PathBuf> {
    let mut found = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_containing(&p, needle));
        } else if std::fs::read(&p)
            .map(|b| String::from_utf8_lossy(&b).contains(needle))
            .unwrap_or(false)
        {
            found.push(p);
        }
    }
    found
}

#[tokio::test]
async fn a_cold_launch_registers_protects_its_job_and_drains_without_killing_it() {
    let f = fleet("persistent", "", true).await;
    f.plane.aws.create(GROUP, 0, 2, 1, hooks()).await;
    // InService only once every launch hook, the agent's bootstrap included, is completed.
    let instance = f.plane.aws.sole_in_service(GROUP).await;
    assert_eq!(
        f.completions(&instance, "bootstrap").await,
        ["CONTINUE"],
        "{}",
        f.console(&instance).await
    );
    let secret = f.plane.instance_secret(GROUP, &instance).await.unwrap();
    let token = match secret.credential {
        RunnerCredential::RegistrationToken { token, .. } => token.expose_secret().to_owned(),
        other => panic!("{other:?}"),
    };
    let listener = f.agent_state(&instance).await["listener_pid"]
        .as_u64()
        .unwrap();
    let argv = std::fs::read(format!("/proc/{listener}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&argv).contains(&token));
    let runners = f.runners(&instance).await;
    assert_eq!(runners.len(), 1, "{runners:#?}");
    assert_eq!(f.agent_state(&instance).await["state"]["name"], "idle");

    // A job: the instance is protected while it runs, and only then.
    assert!(!f.protected(&instance).await);
    let job = f.plane.github.enqueue(&["warmfleet", "linux"], 4.0).await;
    eventually("the job runs", Duration::from_secs(15), || async {
        f.plane.github.job(job).await["outcome"] == "running"
    })
    .await;
    eventually("protection on", Duration::from_secs(5), || async {
        f.protected(&instance).await
    })
    .await;

    // Terminate it mid-job: the drain lets the job finish; a job queued meanwhile is not
    // taken; the registration is removed and the terminate hook completed.
    f.plane
        .aws
        .asg
        .terminate_instance_in_auto_scaling_group()
        .instance_id(&instance)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .unwrap();
    eventually("the labels are taken", Duration::from_secs(15), || async {
        f.runners(&instance).await[0]["labels"]
            .as_array()
            .is_some_and(|l| l.is_empty())
    })
    .await;
    let second = f.plane.github.enqueue(&["warmfleet"], 1.0).await;
    let done = f
        .plane
        .github
        .finished_job(job, Duration::from_secs(20))
        .await;
    assert_eq!(done["outcome"], "succeeded", "{done:#}");
    f.plane
        .aws
        .until(GROUP, false, "terminated", |i| i.is_empty())
        .await;
    assert_eq!(
        f.completions(&instance, "deregistration").await,
        ["CONTINUE"]
    );
    assert!(f.runners(&instance).await.is_empty(), "registration left");
    assert_eq!(f.plane.github.job(second).await["outcome"], "queued");

    // No token anywhere in the instance: logs, state, runner files.
    let leaks = files_containing(&f.root(&instance).await, &token);
    assert!(leaks.is_empty(), "the token is in {leaks:?}");
}

#[tokio::test]
async fn a_warm_instance_registers_nothing_and_resumes_with_a_fresh_credential() {
    let f = fleet("persistent", "", true).await;
    f.plane.aws.create(GROUP, 0, 1, 0, hooks()).await;
    f.plane
        .aws
        .asg
        .put_warm_pool()
        .auto_scaling_group_name(GROUP)
        .min_size(1)
        .pool_state(WarmPoolState::Hibernated)
        .send()
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    let instance = loop {
        let warm = f.plane.aws.warm(GROUP).await;
        if warm.len() == 1 && warm[0].1 == "Warmed:Hibernated" {
            break warm[0].0.clone();
        }
        if Instant::now() > until {
            panic!("not hibernated: {warm:?}\n{}", f.console(&warm[0].0).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(f.completions(&instance, "bootstrap").await, ["CONTINUE"]);
    assert_eq!(f.agent_state(&instance).await["state"]["name"], "warm");
    assert!(
        f.runners(&instance).await.is_empty(),
        "registered in the pool"
    );
    assert!(f.plane.instance_secret(GROUP, &instance).await.is_none());

    // Scale out: the same instance resumes, gets a credential minted now, registers.
    f.plane.aws.set_desired(GROUP, 1).await;
    assert_eq!(f.plane.aws.sole_in_service(GROUP).await, instance);
    assert_eq!(
        f.completions(&instance, "bootstrap").await,
        ["CONTINUE", "CONTINUE"],
        "{}",
        f.console(&instance).await
    );
    assert!(f.plane.instance_secret(GROUP, &instance).await.is_some());
    assert_eq!(f.runners(&instance).await.len(), 1);
    let job = f.plane.github.enqueue(&["warmfleet"], 0.5).await;
    let done = f
        .plane
        .github
        .finished_job(job, Duration::from_secs(20))
        .await;
    assert_eq!(done["outcome"], "succeeded", "{done:#}");
    assert_eq!(done["runner_name"], instance.as_str());
}

#[tokio::test]
async fn an_ephemeral_runner_takes_one_job_then_its_instance_is_replaced() {
    let f = fleet("ephemeral", "", true).await;
    f.plane.aws.create(GROUP, 0, 2, 1, hooks()).await;
    let first = f.plane.aws.sole_in_service(GROUP).await;
    let job = f.plane.github.enqueue(&["warmfleet"], 0.5).await;
    let done = f
        .plane
        .github
        .finished_job(job, Duration::from_secs(20))
        .await;
    assert_eq!(done["outcome"], "succeeded", "{done:#}");
    assert_eq!(done["runner_name"], first.as_str());
    // The group replaces it without being asked for less capacity.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let now = f.plane.aws.instances(GROUP).await;
        if now.len() == 1 && now[0].0 != first && now[0].1 == "InService" {
            break;
        }
        assert!(
            Instant::now() < until,
            "not replaced: {now:?}\n{}",
            f.console(&first).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = f
        .plane
        .aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(GROUP)
        .send()
        .await
        .unwrap();
    assert_eq!(out.auto_scaling_groups()[0].desired_capacity(), Some(1));
    assert_eq!(
        f.completions(&first, "deregistration").await,
        ["CONTINUE"],
        "{}",
        f.console(&first).await
    );
}

#[tokio::test]
async fn a_credential_that_never_comes_abandons_the_bootstrap_with_the_reason() {
    let f = fleet("persistent", "[timeouts]\ncredential = \"2s\"", false).await;
    let hooks = hooks_of(&["bootstrap", "deregistration"]);
    f.plane.aws.create(GROUP, 0, 1, 1, hooks).await;
    let first = loop {
        if let Some((id, _)) = f.plane.aws.instances(GROUP).await.first() {
            break id.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eventually(
        "the bootstrap abandoned",
        Duration::from_secs(15),
        || async { f.completions(&first, "bootstrap").await == ["ABANDON"] },
    )
    .await;
    let console = f.console(&first).await;
    assert!(
        console.contains("no new credential in warmfleet/runners/")
            && console.contains("within 2s"),
        "{console}"
    );
    // ABANDON on a launch hook: the group terminates the instance (and tries another).
    eventually(
        "the instance is replaced",
        Duration::from_secs(15),
        || async {
            !f.plane
                .aws
                .instances(GROUP)
                .await
                .iter()
                .any(|(id, _)| *id == first)
        },
    )
    .await;
    assert!(f.runners(&first).await.is_empty());
}
