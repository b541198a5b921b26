//! The real `warmfleet-agent` as every instance's process, with the real registration and
//! deregistration Lambdas, the fake actions runner and the GitHub fake: cold launch, warm
//! pool and resume, jobs under scale-in protection, drains, ephemeral runners, failures.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_autoscaling::types::{LifecycleHookSpecification, WarmPoolState};
use common::control::{lambda, Function, Plane};
use common::{eventually, TESTBED};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_core::instance_secret::RunnerCredential;
use warmfleet_core::ports::Occupancy;
use warmfleet_testbed::agent_setup::{
    lifecycle_hooks as hooks_of, AgentSetup, CONFIG_FLAGS, DEREGISTRATION_RULE, REGISTRATION_RULE,
};

const GROUP: &str = "runners";

/// What each instance runs: the fake runner, the agent's configuration and sleep hook, the
/// agent.
fn instance_script(github_url: &str, extra_config: &str, o: &Options) -> tempfile::NamedTempFile {
    let setup = AgentSetup {
        agent: lambda("warmfleet-agent"),
        testbed: TESTBED.into(),
        packaging: AgentSetup::packaging_dir(),
        github_url: github_url.to_owned(),
        deployment: String::new(),
        labels: vec!["linux".into()],
        runner_table: o.runner_table.map(str::to_owned),
        extra_config: extra_config.to_owned(),
        env: o.env.to_owned(),
        runner_user: o.runner_user.map(str::to_owned),
        supervise: o.supervise,
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), setup.script()).unwrap();
    file
}

struct Fleet {
    plane: Plane,
    _script: tempfile::NamedTempFile,
}

/// How the instances run the agent.
#[derive(Default)]
struct Options {
    /// Restart the agent when it fails, as systemd would.
    supervise: bool,
    /// Shell lines before the agent starts (e.g. `export ...`).
    env: &'static str,
    /// The runner's user, when not the test's own.
    runner_user: Option<&'static str>,
    /// The agent's `runner_table`.
    runner_table: Option<&'static str>,
}

/// The world with both Lambdas, instances running the agent. `mode` is the runner mode of
/// the registration Lambda and the agent; `registration` false leaves the Lambda out, so
/// no credential is ever written.
async fn fleet(mode: &str, extra_config: &str, registration: bool) -> Fleet {
    fleet_with(mode, extra_config, registration, Options::default()).await
}

async fn fleet_with(mode: &str, extra_config: &str, registration: bool, o: Options) -> Fleet {
    // The GitHub URL is known only once the fake runs: a placeholder the script replaces.
    let drain = format!(
        "{} {CONFIG_FLAGS} drain",
        lambda("warmfleet-agent").display()
    );
    let mut functions = vec![Function {
        name: "deregistration",
        binary: "warmfleet-deregistration",
        timeout: 30.0,
        retries: 0,
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
            retries: 0,
            env: &reg_env,
        });
    }
    let rules = if registration {
        format!("{DEREGISTRATION_RULE}{REGISTRATION_RULE}")
    } else {
        DEREGISTRATION_RULE.to_owned()
    };
    let script = tempfile::NamedTempFile::new().unwrap();
    let command = format!("sh {}", script.path().display());
    let plane = Plane::start("1", Some(&command), &functions, &rules, &[]).await;
    let config = format!("mode = \"{mode}\"\n{extra_config}");
    let body = instance_script(&plane.github.org_url(), &config, &o);
    std::fs::copy(body.path(), script.path()).unwrap();
    Fleet {
        plane,
        _script: script,
    }
}

fn hooks() -> Vec<LifecycleHookSpecification> {
    hooks_of(&["registration", "bootstrap", "deregistration"])
}

impl Fleet {
    /// The instance's process record (waiting for it to appear).
    async fn process(&self, instance: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.plane.aws.control("instances").await;
            if let Some(p) = all
                .into_iter()
                .find(|i| i["id"] == instance && i["pid"].is_u64())
            {
                return p;
            }
            assert!(Instant::now() < until, "no process for {instance}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn root(&self, instance: &str) -> PathBuf {
        PathBuf::from(self.process(instance).await["root"].as_str().unwrap())
    }

    /// The GitHub fake's runners named `instance`.
    async fn runners(&self, instance: &str) -> Vec<Value> {
        self.plane.github.runners_named(instance).await
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

impl Fleet {
    /// The agent's state name in an instance (empty before it wrote one).
    async fn state_of(&self, instance: &str) -> String {
        let file = self
            .root(instance)
            .await
            .join("var/lib/warmfleet/state.json");
        std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["state"]["name"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    async fn until_state(&self, instance: &str, state: &str) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if self.state_of(instance).await == state {
                return;
            }
            assert!(
                Instant::now() < until,
                "the agent never got to {state} (it is {}):\n{}",
                self.state_of(instance).await,
                self.console(instance).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the agent and waits until its supervisor has started a new one.
    async fn kill_agent(&self, instance: &str) {
        let old = self.agent_state(instance).await["agent_pid"]
            .as_u64()
            .unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        eventually("a new agent", Duration::from_secs(10), || async {
            self.agent_state(instance).await["agent_pid"].as_u64() != Some(old)
        })
        .await;
    }

    /// A hibernated warm pool of at least `min` instances, reused on scale-in if asked.
    async fn warm_pool(&self, min: i32, reuse: bool) {
        self.plane
            .aws
            .asg
            .put_warm_pool()
            .auto_scaling_group_name(GROUP)
            .min_size(min)
            .pool_state(WarmPoolState::Hibernated)
            .instance_reuse_policy(
                aws_sdk_autoscaling::types::InstanceReusePolicy::builder()
                    .reuse_on_scale_in(reuse)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    /// The group's first instance, as soon as it has one.
    async fn first_instance(&self) -> String {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some((id, _)) = self.plane.aws.instances(GROUP).await.first() {
                return id.clone();
            }
            assert!(Instant::now() < until, "no instance launched");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A group of one with a warm pool of one: its instance once hibernated.
    async fn hibernated(&self) -> String {
        self.plane.aws.create(GROUP, 0, 1, 0, hooks()).await;
        self.warm_pool(1, false).await;
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let warm = self.plane.aws.warm(GROUP).await;
            if warm.len() == 1 && warm[0].1 == "Warmed:Hibernated" {
                return warm[0].0.clone();
            }
            if Instant::now() > until {
                panic!("not hibernated: {warm:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes the instance's IMDS answer 500 to its next `n` requests.
    async fn imds_fails(&self, instance: &str, n: u32) {
        let process = self.process(instance).await;
        let url = process["imds"].as_str().expect("the instance's IMDS");
        let resp = reqwest::Client::new()
            .put(format!("{url}/_testbed/faults"))
            .json(&serde_json::json!({ "fail": n }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    /// Terminates an instance as an operator (or a health check) would.
    async fn terminate(&self, instance: &str) {
        self.plane
            .aws
            .asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .unwrap();
    }

    /// Waits for a job to end and checks it succeeded; the job's record.
    async fn succeeded(&self, job: u64) -> Value {
        let done = self
            .plane
            .github
            .finished_job(job, Duration::from_secs(20))
            .await;
        assert_eq!(done["outcome"], "succeeded", "{done:#}");
        done
    }

    /// The ids of the GitHub runners named `instance`.
    async fn runner_ids(&self, instance: &str) -> Vec<u64> {
        self.runners(instance)
            .await
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
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
    // The token used, then taken out of the secret: nothing valid left there for a job.
    eventually("the credential cleared", Duration::from_secs(5), || async {
        let secret = f.plane.instance_secret(GROUP, &instance).await.unwrap();
        matches!(
            secret.credential,
            RunnerCredential::Used {
                jit_runner_id: None
            }
        )
    })
    .await;
    let previous = f.plane.instance_secret_at(GROUP, &instance, "AWSPREVIOUS");
    let token = match previous.await.unwrap().credential {
        RunnerCredential::RegistrationToken { token, .. } => token.expose_secret().to_owned(),
        other => panic!("{other:?}"),
    };
    let listener = f.agent_state(&instance).await["listener_pid"]
        .as_u64()
        .unwrap();
    let argv = std::fs::read(format!("/proc/{listener}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&argv).contains(&token));
    // The runner's processes run under umask 077: what config.sh wrote is private, and so
    // is whatever the listener and its jobs write.
    let runner_dir = f.root(&instance).await.join("opt/actions-runner");
    for file in [".runner", ".credentials"] {
        let mode = std::fs::metadata(runner_dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file}: {mode:o}");
    }
    let status = std::fs::read_to_string(format!("/proc/{listener}/status")).unwrap();
    assert!(status.lines().any(|l| l == "Umask:\t0077"), "{status}");
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
    f.terminate(&instance).await;
    eventually("the labels are taken", Duration::from_secs(15), || async {
        f.runners(&instance).await[0]["labels"]
            .as_array()
            .is_some_and(|l| l.is_empty())
    })
    .await;
    let second = f.plane.github.enqueue(&["warmfleet"], 1.0).await;
    f.succeeded(job).await;
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

    // No token anywhere in the world's files: the instance's logs, state and runner files,
    // the Lambdas' logs.
    let root = f.root(&instance).await;
    let world = root.parent().unwrap().parent().unwrap();
    assert!(world.join("lambda").is_dir());
    let leaks = files_containing(world, &token);
    assert!(leaks.is_empty(), "the token is in {leaks:?}");
}

#[tokio::test]
async fn a_warm_instance_registers_nothing_and_resumes_with_a_fresh_credential() {
    let f = fleet("persistent", "", true).await;
    let instance = f.hibernated().await;
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
    let done = f.succeeded(job).await;
    assert_eq!(done["runner_name"], instance.as_str());
}

#[tokio::test]
async fn an_ephemeral_runner_takes_one_job_then_its_instance_is_replaced() {
    let f = fleet("ephemeral", "", true).await;
    f.plane.aws.create(GROUP, 0, 2, 1, hooks()).await;
    let first = f.plane.aws.sole_in_service(GROUP).await;
    // Its JIT configuration, once the listener has started with it, leaves the secret.
    let runner = f.runner_ids(&first).await;
    eventually("the JIT configuration cleared", Duration::from_secs(5), || async {
        let secret = f.plane.instance_secret(GROUP, &first).await.unwrap();
        matches!(secret.credential, RunnerCredential::Used { jit_runner_id: Some(id) } if [id] == runner[..])
    })
    .await;
    let job = f.plane.github.enqueue(&["warmfleet"], 0.5).await;
    let done = f.succeeded(job).await;
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
    let first = f.first_instance().await;
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

#[tokio::test]
async fn sigkill_in_every_state_then_a_restart_registers_once_and_kills_no_job() {
    let supervised = Options {
        supervise: true,
        ..Options::default()
    };
    let f = fleet_with("persistent", "", true, supervised).await;
    // A slow GitHub keeps the agent waiting for its credential long enough to kill it there.
    f.plane
        .github
        .fault(
            serde_json::json!({"path": "/orgs/acme/actions/runners/registration-token",
            "count": 1, "latency_ms": 3000}),
        )
        .await;
    f.plane.aws.create(GROUP, 0, 2, 1, hooks()).await;
    let instance = f.first_instance().await;
    f.until_state(&instance, "awaiting-credential").await;
    f.kill_agent(&instance).await;
    assert_eq!(f.plane.aws.sole_in_service(GROUP).await, instance);
    f.until_state(&instance, "idle").await;
    let id = f.runner_ids(&instance).await;
    assert_eq!(id.len(), 1);

    // Idle: the listener outlives the agent and is followed again.
    f.kill_agent(&instance).await;
    f.until_state(&instance, "idle").await;
    assert_eq!(f.runner_ids(&instance).await, id, "registered again");

    // Busy: the job carries on and succeeds; the new agent lifts the protection.
    let job = f.plane.github.enqueue(&["warmfleet"], 3.0).await;
    f.until_state(&instance, "busy").await;
    f.kill_agent(&instance).await;
    f.succeeded(job).await;
    // After the persistent runner's linger (timeouts.linger, 5 s).
    eventually("protection off", Duration::from_secs(20), || async {
        !f.protected(&instance).await
    })
    .await;
    f.until_state(&instance, "idle").await;
    assert_eq!(f.runner_ids(&instance).await, id);

    // Draining: killed mid-drain, the new agent finishes it; the job still succeeds.
    let job = f.plane.github.enqueue(&["warmfleet"], 4.0).await;
    f.until_state(&instance, "busy").await;
    f.terminate(&instance).await;
    f.until_state(&instance, "draining").await;
    f.kill_agent(&instance).await;
    f.succeeded(job).await;
    let until = Instant::now() + Duration::from_secs(20);
    while !f.plane.aws.instances(GROUP).await.is_empty() {
        assert!(
            Instant::now() < until,
            "never terminated:\n{}",
            f.console(&instance).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        f.runner_ids(&instance).await.is_empty(),
        "registration left"
    );
    let jobs = f.plane.github.get("/_testbed/jobs").await;
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["outcome"] != "killed"),
        "{jobs:#}"
    );
}

#[tokio::test]
async fn a_job_that_starts_while_its_runner_lingers_protected_asks_auto_scaling_nothing() {
    // A linger long enough that the second job surely starts within it.
    let f = fleet("persistent", "[timeouts]\nlinger = \"12s\"", true).await;
    f.plane.aws.create(GROUP, 0, 2, 1, hooks()).await;
    let instance = f.plane.aws.sole_in_service(GROUP).await;
    f.until_state(&instance, "idle").await;
    let first = f.plane.github.enqueue(&["warmfleet"], 2.0).await;
    let second = f.plane.github.enqueue(&["warmfleet"], 2.0).await;
    f.succeeded(first).await;
    f.succeeded(second).await;
    assert!(f.protected(&instance).await, "lingering after the second");
    eventually("protection off", Duration::from_secs(30), || async {
        !f.protected(&instance).await
    })
    .await;
    let calls = f.plane.aws.calls().await;
    // On for the first job; the second started protected; off after its linger.
    assert_eq!(
        calls["autoscaling:SetInstanceProtection"],
        2,
        "{calls:?}\n{}",
        f.console(&instance).await
    );
}

#[tokio::test]
async fn with_a_runner_table_a_job_is_recorded_there_and_auto_scaling_is_asked_nothing() {
    let o = Options {
        runner_table: Some("runner-table"),
        ..Options::default()
    };
    let f = fleet_with("persistent", "", true, o).await;
    let table = f.plane.runner_table("runner-table").await;
    f.plane.aws.create(GROUP, 0, 2, 1, hooks()).await;
    let instance = f.plane.aws.sole_in_service(GROUP).await;
    f.until_state(&instance, "idle").await;
    let recorded = || async {
        table
            .of(std::slice::from_ref(&instance))
            .await
            .unwrap()
            .get(&instance)
            .copied()
    };
    assert_eq!(recorded().await, None, "no job yet: nothing recorded");
    let job = f.plane.github.enqueue(&["warmfleet"], 3.0).await;
    eventually("recorded busy", Duration::from_secs(15), || async {
        recorded().await == Some(true)
    })
    .await;
    assert!(!f.protected(&instance).await, "busy, and not protected");
    f.succeeded(job).await;
    // After the linger (timeouts.linger, 5 s).
    eventually("recorded idle", Duration::from_secs(20), || async {
        recorded().await == Some(false)
    })
    .await;
    let calls = f.plane.aws.calls().await;
    assert_eq!(
        calls.get("autoscaling:SetInstanceProtection"),
        None,
        "{calls:?}\n{}",
        f.console(&instance).await
    );
}

#[tokio::test]
async fn a_job_completed_hook_that_never_arrives_still_ends_the_protection() {
    // As when the agent is down (killed, restarting) while the hook runs: the listener's
    // own "completed" line is the agent's other witness, and an instance left protected
    // would never be scaled in.
    let f = fleet("persistent", "", true).await;
    f.plane.aws.create(GROUP, 0, 2, 1, hooks()).await;
    let instance = f.plane.aws.sole_in_service(GROUP).await;
    f.until_state(&instance, "idle").await;
    let job = f.plane.github.enqueue(&["warmfleet"], 3.0).await;
    eventually("protection on", Duration::from_secs(15), || async {
        f.protected(&instance).await
    })
    .await;
    let socket = f.root(&instance).await.join("var/lib/warmfleet/agent.sock");
    let hidden = socket.with_extension("hidden");
    std::fs::rename(&socket, &hidden).unwrap();
    f.succeeded(job).await;
    f.until_state(&instance, "idle").await;
    // After the persistent runner's linger (timeouts.linger, 5 s).
    eventually("protection off", Duration::from_secs(20), || async {
        !f.protected(&instance).await
    })
    .await;
    std::fs::rename(&hidden, &socket).unwrap();
    let root = f.root(&instance).await;
    assert!(
        !files_containing(&root, "the job runs without scale-in protection").is_empty(),
        "the hook reached the agent after all:\n{}",
        f.console(&instance).await
    );
}

#[tokio::test]
async fn listener_exit_3_restarts_it_and_exit_1_has_the_instance_replaced() {
    let f = fleet("persistent", "", true).await;
    f.plane.aws.create(GROUP, 0, 2, 1, hooks()).await;
    let instance = f.plane.aws.sole_in_service(GROUP).await;
    f.until_state(&instance, "idle").await;
    let id = f.runner_ids(&instance).await[0];

    // The runner is told to update: exit 3, started again, still the same registration.
    let resp = f
        .plane
        .github
        .post(
            &format!("/_testbed/runners/{id}/update"),
            serde_json::json!({}),
        )
        .await;
    assert!(resp.status().is_success());
    eventually(
        "the listener restarted",
        Duration::from_secs(20),
        || async {
            f.console(&instance)
                .await
                .contains("restarting the listener")
        },
    )
    .await;
    f.until_state(&instance, "idle").await;
    assert_eq!(f.runner_ids(&instance).await, [id]);
    let job = f.plane.github.enqueue(&["warmfleet"], 0.5).await;
    f.succeeded(job).await;

    // Its registration deleted at GitHub: exit 1, reported, the instance replaced.
    let client = f.plane.github.pat_client(common::fast_retries()).await;
    client
        .delete_runner(id, common::deadline(10))
        .await
        .unwrap();
    // Reported (then, marked unhealthy, the instance is drained and replaced).
    eventually("the exit reported", Duration::from_secs(20), || async {
        f.console(&instance).await.contains(
            "reason=the listener exited with code 1 (terminated: its registration or \
             credentials were refused)",
        )
    })
    .await;
    eventually(
        "the instance is replaced",
        Duration::from_secs(20),
        || async {
            let now = f.plane.aws.instances(GROUP).await;
            now.iter().all(|(i, _)| *i != instance) && now.iter().any(|(_, s)| s == "InService")
        },
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_imds_stops_the_agent_with_the_reason() {
    let o = Options {
        env: "export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9",
        ..Options::default()
    };
    let f = fleet_with("persistent", "[timeouts]\ncall = \"3s\"", true, o).await;
    f.plane.aws.create(GROUP, 0, 1, 1, hooks()).await;
    let instance = f.first_instance().await;
    eventually("the agent gave up", Duration::from_secs(20), || async {
        f.console(&instance)
            .await
            .contains("IMDS cannot tell who this instance is")
    })
    .await;
    // It exits 1 (systemd would restart it), having registered nothing.
    let pid = f.process(&instance).await["pid"].as_u64().unwrap();
    eventually("the agent exited", Duration::from_secs(10), || async {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    })
    .await;
    assert!(f.console(&instance).await.contains("warmfleet-agent: IMDS"));
    assert!(f.runners(&instance).await.is_empty());
}

#[tokio::test]
async fn reuse_on_scale_in_deregisters_before_the_pool_and_registers_afresh_on_resume() {
    for mode in ["persistent", "ephemeral"] {
        reuse_on_scale_in(mode).await;
    }
}

async fn reuse_on_scale_in(mode: &str) {
    let f = fleet(mode, "", true).await;
    f.plane.aws.create(GROUP, 0, 1, 0, hooks()).await;
    f.warm_pool(0, true).await;
    f.plane
        .aws
        .until(GROUP, true, "a warm instance", |i| {
            i.len() == 1 && i[0].1 == "Warmed:Hibernated"
        })
        .await;
    f.plane.aws.set_desired(GROUP, 1).await;
    let instance = f.plane.aws.sole_in_service(GROUP).await;
    f.until_state(&instance, "idle").await;
    let first = f.runner_ids(&instance).await;
    assert_eq!(first.len(), 1, "{mode}");
    let used = f.plane.instance_secret(GROUP, &instance).await.unwrap();

    // Scale in: drained, deregistered, back to the pool asleep.
    f.plane.aws.set_desired(GROUP, 0).await;
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let warm = f.plane.aws.warm(GROUP).await;
        if warm.len() == 1 && warm[0].1 == "Warmed:Hibernated" {
            assert_eq!(warm[0].0, instance);
            break;
        }
        assert!(
            Instant::now() < until,
            "{mode}: not back in the pool: {warm:?} {:?}\n{}",
            f.plane.aws.instances(GROUP).await,
            f.console(&instance).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(f.state_of(&instance).await, "drained");
    if mode == "persistent" {
        assert!(
            f.runner_ids(&instance).await.is_empty(),
            "registered in the pool"
        );
    }
    // A JIT runner stays registered (offline) here: the agent cannot remove it. The sweep
    // deletes it, and so does the next registration (GitHub refuses a second runner of
    // that name).

    // Out again: a credential newer than the one used before, a new registration, a job.
    f.plane.aws.set_desired(GROUP, 1).await;
    assert_eq!(
        f.plane.aws.sole_in_service(GROUP).await,
        instance,
        "{mode}: resumed, not abandoned and replaced"
    );
    f.until_state(&instance, "idle").await;
    let fresh = f.plane.instance_secret(GROUP, &instance).await.unwrap();
    assert!(fresh.issued_at > used.issued_at);
    let second = f.runner_ids(&instance).await;
    assert_eq!(second.len(), 1, "{mode}");
    assert_ne!(second, first);
    let job = f.plane.github.enqueue(&["warmfleet"], 0.5).await;
    f.succeeded(job).await;
}

#[tokio::test]
async fn sigterm_mid_job_lets_the_job_finish_then_the_agent_exits_0() {
    let f = fleet("persistent", "", true).await;
    f.plane.aws.create(GROUP, 0, 1, 1, hooks()).await;
    let instance = f.plane.aws.sole_in_service(GROUP).await;
    let job = f.plane.github.enqueue(&["warmfleet"], 3.0).await;
    f.until_state(&instance, "busy").await;
    // Busy from the listener's "Running job"; protected once the job-started hook ran.
    eventually("protection on", Duration::from_secs(5), || async {
        f.protected(&instance).await
    })
    .await;

    // `status --json`, as an operator would run it.
    let root = f.root(&instance).await;
    let out = std::process::Command::new(lambda("warmfleet-agent"))
        .current_dir(&root)
        .args(CONFIG_FLAGS.split(' '))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["state"]["name"], "busy");
    assert_eq!(status["job_in_progress"], true);
    assert_eq!(status["runner_name"], instance.as_str());
    assert_eq!(status["protected"], true);

    let agent = f.agent_state(&instance).await["agent_pid"]
        .as_u64()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    f.succeeded(job).await;
    let exit = root.join("agent.exit");
    eventually("the agent exited", Duration::from_secs(10), || async {
        exit.exists()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&exit).unwrap().trim(),
        "0",
        "{}",
        f.console(&instance).await
    );
    assert_eq!(f.state_of(&instance).await, "drained");
    assert!(!root.join("opt/actions-runner/.runner").exists());
    assert!(!f.protected(&instance).await);
}

#[tokio::test]
async fn a_refused_token_abandons_the_bootstrap_with_configs_reason() {
    let f = fleet("persistent", "", false).await;
    let hooks = hooks_of(&["bootstrap", "deregistration"]);
    f.plane.aws.create(GROUP, 0, 1, 1, hooks).await;
    let first = f.first_instance().await;
    // A credential GitHub never issued, written where the Lambda would write it.
    let bogus = warmfleet_core::instance_secret::InstanceSecret {
        issued_at: chrono::Utc::now(),
        lifecycle_action: "t".into(),
        credential: RunnerCredential::RegistrationToken {
            token: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned().into(),
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        },
        remove_token: None,
        drain_command: None,
    };
    f.plane
        .secrets
        .create_secret()
        .name(warmfleet_core::naming::instance_secret_id(GROUP, &first))
        .secret_string(bogus.to_secret().expose_secret())
        .send()
        .await
        .unwrap();
    eventually(
        "the bootstrap abandoned",
        Duration::from_secs(15),
        || async { f.completions(&first, "bootstrap").await == ["ABANDON"] },
    )
    .await;
    let console = f.console(&first).await;
    assert!(console.contains("config.sh failed: "), "{console}");
    assert!(
        !console.contains("AAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        "{console}"
    );
    assert!(f.runners(&first).await.is_empty());
}

/// How many instances the agents counted in `FailedInstances` (the alarm's metric).
async fn failures_counted(f: &Fleet) -> f64 {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Statistic};
    let now = std::time::SystemTime::now();
    let stats = aws_sdk_cloudwatch::Client::new(&f.plane.aws.config)
        .get_metric_statistics()
        .namespace(warmfleet_core::naming::METRIC_NAMESPACE)
        .metric_name(warmfleet_core::naming::METRIC_FAILED_INSTANCES)
        .dimensions(
            Dimension::builder()
                .name(warmfleet_core::naming::METRIC_DIMENSION_ASG)
                .value(GROUP)
                .build(),
        )
        .start_time(DateTime::from(now - Duration::from_secs(3600)))
        .end_time(DateTime::from(now + Duration::from_secs(3600)))
        .period(3600)
        .statistics(Statistic::Sum)
        .send()
        .await
        .unwrap();
    stats.datapoints().iter().filter_map(|d| d.sum()).sum()
}

#[tokio::test]
async fn a_runner_version_github_no_longer_polls_is_named_counted_and_replaced() {
    let f = fleet("persistent", "", true).await;
    // The runner (2.330.0, --disableupdate) may register, but not receive messages.
    f.plane
        .github
        .set_runner_versions(serde_json::json!({"listen": "2.331.0"}))
        .await;
    f.plane.aws.create(GROUP, 0, 1, 1, hooks()).await;
    let first = f.first_instance().await;
    eventually("the refusal named", Duration::from_secs(30), || async {
        f.console(&first).await.contains(
            "GitHub refuses this runner's version (Runner version v2.330.0 is deprecated and \
             cannot receive messages.)",
        )
    })
    .await;
    // Not left in service without a runner: marked unhealthy, replaced, and counted.
    eventually("the instance replaced", Duration::from_secs(30), || async {
        f.plane
            .aws
            .instances(GROUP)
            .await
            .iter()
            .all(|(i, _)| *i != first)
    })
    .await;
    eventually("the failure counted", Duration::from_secs(15), || async {
        failures_counted(&f).await >= 1.0
    })
    .await;
}

#[tokio::test]
async fn a_runner_version_github_no_longer_registers_abandons_the_launch_and_is_counted() {
    let f = fleet("persistent", "", true).await;
    f.plane
        .github
        .set_runner_versions(serde_json::json!({"register": "2.331.0"}))
        .await;
    f.plane.aws.create(GROUP, 0, 1, 1, hooks()).await;
    let first = f.first_instance().await;
    eventually(
        "the bootstrap abandoned",
        Duration::from_secs(30),
        || async { f.completions(&first, "bootstrap").await == ["ABANDON"] },
    )
    .await;
    let console = f.console(&first).await;
    assert!(
        console
            .contains("GitHub refuses this runner's version (Your runner version is out of date"),
        "{console}"
    );
    assert!(f.runners(&first).await.is_empty());
    eventually("the failure counted", Duration::from_secs(15), || async {
        failures_counted(&f).await >= 1.0
    })
    .await;
}

/// A listener that exits 2 (retryable) once, then behaves: as the real one does when it
/// cannot open a session for a while.
const LISTENER_EXITS_2_ONCE: &str = r#"bin=opt/actions-runner/bin
mv $bin/Runner.Listener $bin/Runner.Listener.real
cat > $bin/Runner.Listener <<'EOS'
#!/bin/sh
here=$(dirname "$0")
if [ "$1" = run ] && [ ! -e "$here/exited-2" ]; then
  touch "$here/exited-2"; echo "session refused for a minute"; exit 2
fi
exec "$here/Runner.Listener.real" "$@"
EOS
chmod +x $bin/Runner.Listener"#;

#[tokio::test]
async fn listener_exit_2_before_listening_is_restarted_and_the_bootstrap_completes() {
    let o = Options {
        env: LISTENER_EXITS_2_ONCE,
        ..Options::default()
    };
    let f = fleet_with("persistent", "", true, o).await;
    f.plane.aws.create(GROUP, 0, 1, 1, hooks()).await;
    let instance = f.first_instance().await;
    f.until_state(&instance, "idle").await;
    assert_eq!(f.plane.aws.sole_in_service(GROUP).await, instance);
    let console = f.console(&instance).await;
    assert!(console.contains("code=Some(2)"), "{console}");
    assert_eq!(f.completions(&instance, "bootstrap").await, ["CONTINUE"]);
    assert_eq!(f.runner_ids(&instance).await.len(), 1);
    let job = f.plane.github.enqueue(&["warmfleet"], 0.5).await;
    f.succeeded(job).await;
}

/// The uid a process runs as (its real uid, from /proc).
fn uid_of(pid: u64) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_runner_runs_unprivileged_and_may_only_report_its_jobs() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches users: run the tests as root (CI does)"
    );
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let o = Options {
        runner_user: Some("nobody"),
        ..Options::default()
    };
    // The host's network is the test's own: the real-systemd test checks the IMDS rule in
    // a namespace of its own.
    let f = fleet_with("persistent", "block_imds = false\n", true, o).await;
    f.plane.aws.create(GROUP, 0, 1, 1, hooks()).await;
    let instance = f.first_instance().await;
    f.until_state(&instance, "idle").await;
    let root = f.root(&instance).await;
    let listener = f.agent_state(&instance).await["listener_pid"]
        .as_u64()
        .unwrap();
    assert_eq!(uid_of(listener), nobody.uid.as_raw());
    let credentials = std::fs::metadata(root.join("opt/actions-runner/.credentials")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&credentials),
        nobody.uid.as_raw()
    );

    // A job: its hooks (as the runner user) set and clear the protection.
    let job = f.plane.github.enqueue(&["warmfleet"], 2.0).await;
    eventually("protection on", Duration::from_secs(15), || async {
        f.protected(&instance).await
    })
    .await;
    f.succeeded(job).await;
    // After the persistent runner's linger (timeouts.linger, 5 s).
    eventually("protection off", Duration::from_secs(20), || async {
        !f.protected(&instance).await
    })
    .await;

    // The runner user (any job's code) may not drain the runner or fake a wake-up.
    for args in [["drain", "--timeout"], ["sleep-hook", "post"]] {
        let mut command = std::process::Command::new(lambda("warmfleet-agent"));
        command
            .current_dir(&root)
            .args(CONFIG_FLAGS.split(' '))
            .args(args);
        if args[0] == "drain" {
            command.arg("5s");
        }
        let out = std::os::unix::process::CommandExt::uid(&mut command, nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("may not ask for"), "{args:?}: {text}");
    }
    // Any other user does not even get in (the socket is root's and the runner group's).
    let daemon = nix::unistd::User::from_name("daemon").unwrap().unwrap();
    let socket = root.join("var/lib/warmfleet/agent.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "{mode:o}");
    let out = std::process::Command::new(lambda("warmfleet-agent"))
        .current_dir(&root)
        .args(CONFIG_FLAGS.split(' '))
        .args(["hook", "job-started"])
        .uid(daemon.uid.as_raw())
        .gid(daemon.gid.as_raw())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Permission denied"), "{text}");
    assert!(!f.protected(&instance).await);
    assert_eq!(f.state_of(&instance).await, "idle");
}

#[tokio::test]
async fn an_idle_drain_lets_a_job_assigned_just_before_it_run_to_the_end() {
    // The listener says it runs a job 1.5 s after GitHub gave it one (the real one starts
    // its worker first): a drain arriving in between finds the agent still idle.
    let o = Options {
        env: "export WARMFLEET_TESTBED_JOB_START_MS=1500",
        ..Options::default()
    };
    let f = fleet_with("persistent", "", true, o).await;
    f.plane.aws.create(GROUP, 0, 1, 1, hooks()).await;
    let instance = f.plane.aws.sole_in_service(GROUP).await;
    f.until_state(&instance, "idle").await;
    let job = f.plane.github.enqueue(&["warmfleet"], 1.0).await;
    eventually(
        "the job given to the runner",
        Duration::from_secs(10),
        || async { f.plane.github.job(job).await["runner_name"] == instance.as_str() },
    )
    .await;
    assert_eq!(f.state_of(&instance).await, "idle");
    // An operator's drain (what SSM runs for the deregistration Lambda, without it taking
    // the labels first).
    let root = f.root(&instance).await;
    let drain = tokio::process::Command::new(lambda("warmfleet-agent"))
        .current_dir(&root)
        .args(CONFIG_FLAGS.split(' '))
        .args(["drain", "--timeout", "30s"])
        .output();
    let done = f.succeeded(job).await;
    assert_eq!(done["runner_name"], instance.as_str());
    let out = drain.await.unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.state_of(&instance).await, "drained");
}

#[tokio::test]
async fn imds_not_answering_right_after_a_resume_is_asked_again() {
    let f = fleet("persistent", "", true).await;
    let instance = f.hibernated().await;
    // Several attempts' worth of failures (the IMDS client retries each attempt too; the
    // agent's wake-up check may take a few as it is thawed), well within the agent's
    // patience (about 7 attempts).
    f.imds_fails(&instance, 16).await;
    f.plane.aws.set_desired(GROUP, 1).await;
    // Asked again with backoff: longer than the usual waits.
    eventually("resumed into service", Duration::from_secs(90), || async {
        f.plane.aws.instances(GROUP).await == [(instance.clone(), "InService".to_owned())]
    })
    .await;
    assert_eq!(
        f.completions(&instance, "bootstrap").await,
        ["CONTINUE", "CONTINUE"],
        "{}",
        f.console(&instance).await
    );
    assert!(f.console(&instance).await.contains("IMDS: asking again"));
}

#[tokio::test]
async fn imds_failing_for_good_after_a_resume_abandons_the_launch_at_once() {
    let f = fleet("persistent", "", true).await;
    let instance = f.hibernated().await;
    f.imds_fails(&instance, 1_000_000).await;
    f.plane.aws.set_desired(GROUP, 1).await;
    // Abandoned by the agent (the hook's own timeout is 10 minutes): the group replaces
    // the instance with a new one.
    eventually("the launch abandoned", Duration::from_secs(60), || async {
        f.completions(&instance, "bootstrap").await == ["CONTINUE", "ABANDON"]
    })
    .await;
    // (The abandoned one is on its way out, held by the terminate hook: its agent cannot
    // learn from IMDS where it is going either.)
    f.plane
        .aws
        .until(GROUP, false, "replaced", |i| {
            i.iter().any(|(id, s)| *id != instance && s == "InService")
                && i.iter()
                    .all(|(id, s)| *id != instance || s.starts_with("Terminating"))
        })
        .await;
}
