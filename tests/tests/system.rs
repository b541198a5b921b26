//! The agent's Debian package in a real systemd: a Debian machine (systemd-nspawn, see
//! common/machine.rs) gets the package as an AMI bake would, boots, and runs the agent
//! against the testbed's servers on loopback. Each instance of the testbed's Auto Scaling
//! group is played by the machine: the world's instance process only hands its IMDS and
//! endpoints over (`aws.env` in its root), and the world's SSM runs commands in the machine.
//!
//! The package is built from the binaries of this build (`cargo deb --no-build`); `make
//! artifacts` builds the same package around the release binary and checks it with lintian.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_autoscaling::types::{LifecycleHookSpecification, WarmPoolState};
use common::control::{Function, Plane};
use common::eventually;
use common::machine::{Machine, OutputText};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_testbed::agent_setup::{lifecycle_hooks, DEREGISTRATION_RULE, REGISTRATION_RULE};

const GROUP: &str = "runners";
const UNIT: &str = "warmfleet-agent.service";
/// What the world's instances run: hand the instance's environment to the test, then idle
/// (the machine is the instance).
const INSTANCE: &str =
    "env | grep '^AWS_' > aws.env.part && mv aws.env.part aws.env && exec sleep 100000";

/// The package, built once per test process from this build's binaries.
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let out = Path::new(common::TESTBED)
            .parent()
            .unwrap()
            .join("system-test-deb");
        let _ = std::fs::remove_dir_all(&out);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = std::process::Command::new(cargo)
            .current_dir(workspace)
            .args([
                "deb",
                "-p",
                "warmfleet-agent",
                "--no-build",
                "--profile",
                "dev",
            ])
            .args(["--fast", "--quiet", "--output"])
            .arg(&out)
            .output()
            .expect("cargo deb (cargo install cargo-deb; make test installs it)");
        assert!(
            built.status.success(),
            "cargo deb: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let deb = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .expect("cargo deb made no .deb");
        deb
    })
}

/// Everything in the machine's file system that a package could leave behind: the
/// directories the system itself changes as it runs (logs, caches, dpkg's and systemd's
/// state, the runner's own directory, the test's files) are left out.
const LISTING: &str = "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run \
    -o -path /tmp -o -path /var/tmp -o -path /var/log -o -path /var/cache -o -path /var/lib/dpkg \
    -o -path /var/lib/apt -o -path /var/lib/systemd -o -path /root -o -path /opt/actions-runner \
    -o -path /etc/systemd/system/warmfleet-agent.service.d -o -path /var/lib/cloud \\) -prune \
    -o -print | sort";

/// The machine as an AMI bake leaves it: the actions runner (the testbed's fake, in
/// /opt/actions-runner, owned by the runner user) and the package installed. Returns the
/// file listing from before the package.
fn bake(m: &Machine) -> Vec<String> {
    m.copy_in(package(), "/root/warmfleet-agent.deb");
    m.copy_in(
        Path::new(common::TESTBED),
        "/usr/local/bin/warmfleet-testbed",
    );
    m.sh_ok("warmfleet-testbed runner install /opt/actions-runner >/dev/null");
    let before = lines(&m.sh_ok(LISTING));
    m.sh_ok(
        "dpkg -i /root/warmfleet-agent.deb >/dev/null && chown -R runner:runner /opt/actions-runner",
    );
    before
}

/// The AMI recipe's steps (packaging/ami/provision.sh), as Packer runs them on a builder,
/// in a bare Debian root: a runner tarball whose SHA-256 does not match stops the bake
/// before anything is installed; the right one leaves the agent installed and enabled but
/// not started, the runner laid out for its user and not configured, hibernation's swap
/// unit in place, and what must not be in an image gone.
#[test]
fn the_ami_recipe_bakes_the_agent_the_runner_and_hibernation_into_a_root() {
    let m = Machine::new("ami");
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ami/provision.sh");
    m.copy_in(&recipe, "/root/provision.sh");
    m.copy_in(package(), "/root/warmfleet-agent.deb");
    m.copy_in(
        Path::new(common::TESTBED),
        "/usr/local/bin/warmfleet-testbed",
    );
    // The testbed's fake runner, packed as a release tarball is.
    m.sh_ok(
        "mkdir /root/runner && warmfleet-testbed runner install /root/runner >/dev/null \
         && tar -czf /root/runner.tar.gz -C /root/runner . && rm -r /root/runner",
    );
    let sha = m.sh_ok("sha256sum /root/runner.tar.gz | cut -d' ' -f1");
    let bake = |sha: &str| {
        format!(
            "AGENT_DEB=/root/warmfleet-agent.deb RUNNER_VERSION=2.330.0 RUNNER_SHA256={sha} \
             RUNNER_TARBALL=/root/runner.tar.gz bash /root/provision.sh"
        )
    };

    let wrong = m.sh(&bake(&"0".repeat(64)));
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("the runner tarball's SHA-256 is not"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert!(!m.sh("dpkg -s warmfleet-agent").status.success());
    assert!(!m.inside("/opt/actions-runner/config.sh").exists());

    m.sh_ok(&bake(sha.trim()));
    assert_eq!(
        m.sh_ok("dpkg-query -W -f='${Status}' warmfleet-agent"),
        "install ok installed"
    );
    assert_eq!(
        m.sh_ok("systemctl is-enabled warmfleet-agent").trim(),
        "enabled"
    );
    assert_eq!(
        m.sh_ok("stat -c %U /opt/actions-runner/config.sh /opt/actions-runner/bin")
            .trim(),
        "runner\nrunner"
    );
    assert!(
        !m.inside("/opt/actions-runner/.runner").exists(),
        "configured in the image"
    );
    assert_eq!(
        m.sh_ok("systemctl is-enabled warmfleet-hibernation-swap")
            .trim(),
        "enabled"
    );
    // Verified from the host, in the machine's root (verify does not run in an unbooted
    // container).
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", m.root.display()))
        .arg("/etc/systemd/system/warmfleet-hibernation-swap.service")
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        verify.stdout_text(),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        !m.sh("ls /etc/ssh/ssh_host_*").status.success(),
        "host keys in the image"
    );
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

/// The world: the Lambdas, instances handing their environment to the test, the
/// deregistration Lambda draining through the world's SSM with `drain` run in the machine.
async fn world(rules: &str, drain: &str) -> Plane {
    let dereg_env = [
        ("WARMFLEET_GROUPS", GROUP),
        ("WARMFLEET_DRAIN_COMMAND", drain),
    ];
    let functions = [
        Function {
            name: "registration",
            binary: "warmfleet-registration",
            timeout: 30.0,
            retries: 0,
            env: &[("WARMFLEET_RUNNER_MODE", "persistent")],
        },
        Function {
            name: "deregistration",
            binary: "warmfleet-deregistration",
            timeout: 60.0,
            retries: 0,
            env: &dereg_env,
        },
    ];
    Plane::start("1", Some(INSTANCE), &functions, rules, &[]).await
}

fn hooks() -> Vec<LifecycleHookSpecification> {
    lifecycle_hooks(&["registration", "bootstrap", "deregistration"])
}

/// The group's first instance (in service or in the warm pool) once its process has handed
/// over its environment: its id and root directory.
async fn first_instance(plane: &Plane) -> (String, PathBuf) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let all = plane.aws.control("instances").await;
        if let Some(i) = all.first() {
            let root = PathBuf::from(i["root"].as_str().unwrap());
            if root.join("aws.env").exists() {
                return (i["id"].as_str().unwrap().to_owned(), root);
            }
        }
        assert!(Instant::now() < until, "no instance started: {all:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the deployment gives an instance, written into the machine before it boots: the
/// agent's configuration drop-in (cloud-init writes one) and, for the testbed only, the
/// instance's IMDS and endpoints for the service (on EC2 these are the defaults).
fn configure(m: &Machine, plane: &Plane, instance_root: &Path) {
    let dropin = format!(
        "github_url = \"{}\"\n[runner]\nlabels = [\"linux\"]\n",
        plane.github.org_url()
    );
    std::fs::create_dir_all(m.inside("/etc/warmfleet/agent.d")).unwrap();
    std::fs::write(
        m.inside("/etc/warmfleet/agent.d/50-deployment.toml"),
        dropin,
    )
    .unwrap();
    let unit = m.inside("/etc/systemd/system/warmfleet-agent.service.d");
    std::fs::create_dir_all(&unit).unwrap();
    std::fs::write(
        unit.join("testbed.conf"),
        instance_environment(instance_root),
    )
    .unwrap();
}

/// Gives the machine a network of its own (its firewall rules stay there), where what the
/// instance talks to is forwarded: the world's endpoints in its environment, the GitHub
/// fake, and the addresses in `more`.
fn isolate(m: &mut Machine, plane: &Plane, instance_root: &Path, more: &str) {
    let env = std::fs::read_to_string(instance_root.join("aws.env")).unwrap();
    let urls = format!("{env}\n{}\n{more}", plane.github.org_url());
    m.isolate(&common::netns::loopback_ports(&urls));
}

/// The instance's IMDS port (the world serves each instance its own).
fn imds_port(instance_root: &Path) -> u16 {
    let env = std::fs::read_to_string(instance_root.join("aws.env")).unwrap();
    let line = env
        .lines()
        .find(|l| l.starts_with("AWS_EC2_METADATA_SERVICE_ENDPOINT="))
        .expect("the instance's IMDS endpoint");
    common::netns::loopback_ports(line)[0]
}

/// A unit drop-in with the environment the world gave the instance, and the watchdog
/// shortened from the unit's 10 minutes to 20 s: the agent must ping within the test (a
/// watchdog kill would show as a restart and as the unit's result).
fn instance_environment(instance_root: &Path) -> String {
    let env = std::fs::read_to_string(instance_root.join("aws.env")).unwrap();
    let lines: String = env
        .lines()
        .map(|l| format!("Environment=\"{l}\"\n"))
        .collect();
    format!("[Service]\n{lines}WatchdogSec=20s\n")
}

/// Invokes the registration Lambda with the launch event Auto Scaling sent for `instance`'s
/// registration hook (no EventBridge rule delivers it in this world: the test decides when
/// the credential comes).
async fn deliver_registration(plane: &Plane, instance: &str) {
    let action = plane
        .aws
        .until_effect(|e| {
            e["LifecycleAction"]["instance"] == instance
                && e["LifecycleAction"]["hook"] == "registration"
        })
        .await["LifecycleAction"]
        .clone();
    let event = serde_json::json!({
        "version": "0", "id": "7e1b9c2a-0000-4000-8000-000000000001",
        "detail-type": "EC2 Instance-launch Lifecycle Action", "source": "aws.autoscaling",
        "account": "123456789012", "time": "2026-11-28T12:00:00Z", "region": "us-east-1",
        "resources": [format!("arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0:autoScalingGroupName/{GROUP}")],
        "detail": {
            "LifecycleActionToken": action["token"], "AutoScalingGroupName": GROUP,
            "LifecycleHookName": "registration", "EC2InstanceId": instance,
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "Origin": action["origin"], "Destination": action["destination"],
        },
    });
    if let Err(e) = plane.invoke("registration", &event).await {
        panic!("registration failed: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_package_runs_the_agent_under_systemd_from_first_start_to_purge() {
    // The world's SSM plays the SSM agent: it runs the drain in the machine, and the drain
    // is a `systemctl stop` (the Lambda's `--timeout` goes to `sh`, which ignores it).
    let drain = "nsenter -t \"$(cat machine.leader)\" -a sh -c 'systemctl stop warmfleet-agent.service' drain";
    let plane = world(DEREGISTRATION_RULE, drain).await;
    let mut m = Machine::new("package");
    let before = bake(&m);

    plane.aws.create(GROUP, 0, 1, 1, hooks()).await;
    let (instance, instance_root) = first_instance(&plane).await;
    configure(&m, &plane, &instance_root);
    isolate(&mut m, &plane, &instance_root, "");
    m.boot().await;
    std::fs::write(instance_root.join("machine.leader"), m.leader().to_string()).unwrap();

    // The unit as installed: `systemd-analyze verify` says nothing about it.
    let verify = m.sh("systemd-analyze verify /usr/lib/systemd/system/warmfleet-agent.service");
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        verify.stdout_text(),
        String::from_utf8_lossy(&verify.stderr)
    );
    // Its exposure, as docs/usage/install.md reports it.
    let security = m.sh_ok("systemd-analyze security --offline=true --no-pager /usr/lib/systemd/system/warmfleet-agent.service");
    let overall = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .expect("an overall exposure level")
        .to_owned();
    let install_md = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/usage/install.md"),
    )
    .unwrap();
    let score = overall
        .split(": ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(
        install_md.contains(&format!("exposure level {score}")),
        "install.md does not report the unit's score ({overall})"
    );

    m.sh_ok("systemctl enable --now --no-block warmfleet-agent.service");

    // No credential yet: activating, and the status line says why.
    m.until_property(UNIT, "StatusText", Duration::from_secs(60), |s| {
        s == "waiting for a new runner credential"
    })
    .await;
    assert_eq!(m.property(UNIT, "ActiveState"), "activating");
    assert!(plane.github.runners_named(&instance).await.is_empty());

    // The credential: active exactly when the runner listens, and the instance in service
    // (the agent completed its bootstrap hook).
    deliver_registration(&plane, &instance).await;
    m.until_property(UNIT, "ActiveState", Duration::from_secs(60), |s| {
        s != "activating"
    })
    .await;
    assert_eq!(m.property(UNIT, "ActiveState"), "active");
    let runner = plane.github.runners_named(&instance).await;
    assert_eq!(runner.len(), 1, "{runner:#?}");
    assert_eq!(runner[0]["status"], "online", "{runner:#?}");
    assert_eq!(m.property(UNIT, "WatchdogUSec"), "20s");
    let status = m.sh_ok("systemctl status --no-pager warmfleet-agent.service");
    assert!(
        status.contains("Status: \"listening for jobs\""),
        "{status}"
    );
    plane.aws.sole_in_service(GROUP).await;

    // IMDS is closed to the runner user (and so to every job) and open to root, by the rule
    // the agent loaded before it started the listener.
    let rules = m.sh_ok("nft list table inet warmfleet_imds");
    let uid = m.sh_ok("id -u runner").trim().to_owned();
    assert!(
        rules.contains(&format!("meta skuid {uid} ip daddr 169.254.169.254")),
        "{rules}"
    );
    let reach = format!("exec 3<>/dev/tcp/127.0.0.1/{}", imds_port(&instance_root));
    let as_runner = m.sh(&format!("runuser -u runner -- bash -c '{reach}'"));
    assert!(
        !as_runner.status.success()
            && String::from_utf8_lossy(&as_runner.stderr).contains("Connection refused"),
        "the runner user reached IMDS: {}",
        String::from_utf8_lossy(&as_runner.stderr)
    );
    m.sh_ok(&format!("bash -c '{reach}'"));
    let journal = m.journal(UNIT);
    let guarded = journal
        .iter()
        .position(|e| e["MESSAGE"] == "IMDS closed to the runner user");
    let listening = journal
        .iter()
        .position(|e| e["MESSAGE"] == "listening for jobs");
    assert!(
        guarded.is_some() && guarded < listening,
        "the rule must come before the listener: {journal:#?}"
    );

    // The journal: the agent's own entries, with its fields.
    let journal = m.journal(UNIT);
    let idle = journal
        .iter()
        .find(|e| e["F_STATE"] == "idle")
        .unwrap_or_else(|| panic!("no entry with F_STATE=idle: {journal:#?}"));
    assert_eq!(idle["F_INSTANCE_ID"], instance.as_str());
    assert_eq!(idle["SYSLOG_IDENTIFIER"], "warmfleet-agent");
    assert_eq!(idle["MESSAGE"], "listening for jobs");

    // An upgrade mid-job (the same package again): the old agent hands over, the new one
    // adopts the listener; the job goes on, the runner is the same registration.
    let job = plane.github.enqueue(&["warmfleet", "linux"], 25.0).await;
    eventually("the job runs", Duration::from_secs(30), || async {
        plane.github.job(job).await["outcome"] == "running"
    })
    .await;
    let old_pid = m.property(UNIT, "MainPID");
    let upgrade = m.sh_ok("dpkg -i /root/warmfleet-agent.deb 2>&1");
    let new_pid = m
        .until_property(UNIT, "MainPID", Duration::from_secs(60), |p| {
            p != old_pid && p != "0"
        })
        .await;
    m.until_property(UNIT, "ActiveState", Duration::from_secs(60), |s| {
        s == "active"
    })
    .await;
    assert_eq!(
        plane.github.job(job).await["outcome"],
        "running",
        "{upgrade}"
    );
    assert_eq!(
        plane.github.runners_named(&instance).await[0]["id"],
        runner[0]["id"]
    );
    assert_eq!(
        m.property(UNIT, "NRestarts"),
        "1",
        "one hand-over, {new_pid}"
    );

    // Terminated mid-job: the deregistration Lambda sends the drain, which stops the
    // service. The stop waits for the job, which succeeds; then the registration is gone,
    // the terminate hook completed, the service stopped cleanly.
    let instance_arg = instance.clone();
    plane
        .aws
        .asg
        .terminate_instance_in_auto_scaling_group()
        .instance_id(&instance_arg)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .unwrap();
    m.until_property(UNIT, "ActiveState", Duration::from_secs(60), |s| {
        s == "deactivating"
    })
    .await;
    assert_eq!(plane.github.job(job).await["outcome"], "running");
    let done = plane
        .github
        .finished_job(job, Duration::from_secs(60))
        .await;
    assert_eq!(done["outcome"], "succeeded", "{done:#?}");
    m.until_property(UNIT, "ActiveState", Duration::from_secs(60), |s| {
        s == "inactive"
    })
    .await;
    assert_eq!(m.property(UNIT, "Result"), "success");
    assert!(plane.github.runners_named(&instance).await.is_empty());
    plane
        .aws
        .until(GROUP, false, "terminated", |i| i.is_empty())
        .await;

    // Removal keeps only the configuration (a conffile) and the agent's state; purge
    // leaves nothing of the package: the listing is as before it, but for the runner user
    // (the user and its home stay, by Debian's rule for system users).
    m.sh_ok("dpkg -r warmfleet-agent >/dev/null");
    let kept = m.sh_ok("ls /etc/warmfleet /var/lib/warmfleet >/dev/null && echo kept");
    assert_eq!(kept.trim(), "kept");
    let gone = m.sh("ls /usr/bin/warmfleet-agent /usr/lib/systemd/system/warmfleet-agent.service /lib/systemd/system-sleep/warmfleet");
    assert!(!gone.status.success(), "{}", gone.stdout_text());
    m.sh_ok(
        "rm -r /etc/systemd/system/warmfleet-agent.service.d && dpkg -P warmfleet-agent >/dev/null",
    );
    let after = lines(&m.sh_ok(LISTING));
    let added: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    let removed: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    assert!(removed.is_empty(), "purge removed {removed:?}");
    // What booting changes by itself (every boot, with or without the package).
    let system = [
        "/etc/.pwd.lock",
        "/etc/machine-id",
        "/var/lib/dbus/machine-id",
    ];
    let left: Vec<&&String> = added
        .iter()
        .filter(|l| !system.contains(&l.as_str()))
        .collect();
    assert_eq!(left, [&&"/home/runner".to_owned()], "purge left {left:?}");
    let user = m.sh_ok("getent passwd runner");
    assert!(user.starts_with("runner:"), "{user}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sleep_hook_wakes_a_warm_agent_which_then_registers() {
    let plane = world(REGISTRATION_RULE, "true").await;
    let mut m = Machine::new("warm");
    bake(&m);
    plane
        .aws
        .create(
            GROUP,
            0,
            1,
            0,
            lifecycle_hooks(&["registration", "bootstrap"]),
        )
        .await;
    plane
        .aws
        .asg
        .put_warm_pool()
        .auto_scaling_group_name(GROUP)
        .min_size(1)
        .pool_state(WarmPoolState::Hibernated)
        .send()
        .await
        .unwrap();
    let (instance, instance_root) = first_instance(&plane).await;
    configure(&m, &plane, &instance_root);
    isolate(&mut m, &plane, &instance_root, "");
    m.boot().await;
    m.sh_ok("systemctl enable --now --no-block warmfleet-agent.service");

    // In the warm pool: bootstrap completed, nothing registered, the unit not active.
    m.until_property(UNIT, "StatusText", Duration::from_secs(60), |s| {
        s == "in the warm pool, nothing registered"
    })
    .await;
    assert_eq!(m.property(UNIT, "ActiveState"), "activating");
    plane
        .aws
        .until(GROUP, true, "hibernated", |i| {
            i.len() == 1 && i[0].1 == "Warmed:Hibernated"
        })
        .await;
    // systemd-sleep runs the hooks with the phase and the sleep kind; they never fail and
    // print nothing when the agent answers.
    let hook = |phase: &str| {
        let out = m.sh(&format!(
            "/lib/systemd/system-sleep/warmfleet {phase} hibernate"
        ));
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "{phase}: {}{}",
            out.stdout_text(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let identified = || {
        m.journal(UNIT)
            .iter()
            .filter(|e| e["MESSAGE"] == "identifying the instance")
            .count()
    };
    hook("pre");
    // A wake while still in the pool (neither IMDS nor the clocks say so): the hook alone
    // makes the agent look again where the instance is going; it finds the pool.
    let before = identified();
    hook("post");
    eventually("identified again", Duration::from_secs(30), || async {
        identified() == before + 1
            && m.property(UNIT, "StatusText") == "in the warm pool, nothing registered"
    })
    .await;
    let hooks: Vec<Value> = m
        .journal(UNIT)
        .into_iter()
        .filter(|e| e["MESSAGE"] == "sleep hook")
        .collect();
    let phases: Vec<(&Value, &Value)> = hooks
        .iter()
        .map(|e| (&e["F_PHASE"], &e["F_STATE"]))
        .collect();
    assert_eq!(
        phases,
        [
            (&"pre".into(), &"warm".into()),
            (&"post".into(), &"warm".into())
        ]
    );
    assert!(plane.github.runners_named(&instance).await.is_empty());

    // Out of the pool for real: a fresh credential, the resume, the runner registered.
    plane.aws.set_desired(GROUP, 1).await;
    hook("post");
    m.until_property(UNIT, "ActiveState", Duration::from_secs(60), |s| {
        s == "active"
    })
    .await;
    assert_eq!(m.property(UNIT, "StatusText"), "listening for jobs");
    assert!(plane.instance_secret(GROUP, &instance).await.is_some());
    assert_eq!(m.property(UNIT, "NRestarts"), "0");
    let runner = plane.github.runners_named(&instance).await;
    assert_eq!(runner.len(), 1, "{runner:#?}");
    plane.aws.sole_in_service(GROUP).await;
}

/// The user data the Terraform module would give an instance: the template rendered with
/// `templatefile()` in `terraform console`, as the module renders it.
fn user_data(variables: &Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.json");
    std::fs::write(&vars, variables.to_string()).unwrap();
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cloud-init/user-data.yaml.tftpl");
    let expr = format!(
        "templatefile(\"{}\", jsondecode(file(\"{}\")))\n",
        template.display(),
        vars.display()
    );
    let mut console = std::process::Command::new("terraform")
        .arg("console")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("terraform (it renders the template as the module does)");
    use std::io::Write;
    console
        .stdin
        .take()
        .unwrap()
        .write_all(expr.as_bytes())
        .unwrap();
    let out = console.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = out.stdout_text();
    let body: Vec<&str> = text.lines().collect();
    assert!(
        body.first() == Some(&"<<EOT") && body.last() == Some(&"EOT"),
        "{text}"
    );
    body[1..body.len() - 1].join("\n") + "\n"
}

/// An HTTPS server of one directory on loopback, with a certificate of its own (which the
/// machine is then told to trust, as an AMI trusts a company's CA).
struct Https {
    port: u16,
    cert: PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

const HTTPS_SERVER: &str = "
import http.server, os, ssl, sys
os.chdir(sys.argv[1])
server = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = tls.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
";

impl Https {
    fn serve(file: &Path) -> Https {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir(&root).unwrap();
        std::fs::copy(file, root.join(file.file_name().unwrap())).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=warmfleet testbed",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", HTTPS_SERVER])
            .arg(&root)
            .arg(&cert)
            .arg(&key)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("HTTPS server said {line:?}"));
        Https {
            port,
            cert,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_init_alone_installs_configures_and_starts_the_agent() {
    let plane = world(REGISTRATION_RULE, "true").await;
    // An AMI with the runner but not the agent: cloud-init downloads the package (https,
    // checked against its SHA-256), installs it, and runs the deployment's commands.
    let m = Machine::new("cloud-init");
    m.copy_in(
        Path::new(common::TESTBED),
        "/usr/local/bin/warmfleet-testbed",
    );
    m.sh_ok("warmfleet-testbed runner install /opt/actions-runner >/dev/null");
    let https = Https::serve(package());
    m.copy_in(&https.cert, "/usr/local/share/ca-certificates/testbed.crt");
    m.sh_ok("update-ca-certificates >/dev/null");
    let deb = std::fs::read(package()).unwrap();
    let sha256 = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&deb))
    };

    plane
        .aws
        .create(
            GROUP,
            0,
            1,
            1,
            lifecycle_hooks(&["registration", "bootstrap"]),
        )
        .await;
    let (instance, instance_root) = first_instance(&plane).await;
    let variables = serde_json::json!({
        "github_url": plane.github.org_url(),
        "deployment": "system",
        "runner_mode": "persistent",
        "runner_labels": ["linux", "cloud-init"],
        "runner_group": "",
        "runner_table": "",
        "agent_package_url": format!("https://127.0.0.1:{}/{}", https.port,
            package().file_name().unwrap().to_str().unwrap()),
        "agent_package_sha256": sha256,
        // For the testbed only: the instance's IMDS and endpoints (on EC2, the defaults).
        "extra_files": [{
            "path": "/etc/systemd/system/warmfleet-agent.service.d/testbed.conf",
            "owner": "root:root", "permissions": "0600",
            "content": instance_environment(&instance_root),
        }],
        "extra_packages": [],
        "extra_commands": ["chown -R runner:runner /opt/actions-runner"],
    });
    let seed = m.inside("/var/lib/cloud/seed/nocloud");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("user-data"), user_data(&variables)).unwrap();
    std::fs::write(
        seed.join("meta-data"),
        format!("instance-id: {instance}\nlocal-hostname: runner\n"),
    )
    .unwrap();
    // The image's own cloud-init settings: the NoCloud seed, hands off the network (the
    // test gives the machine its own), and the one locale a minimal root has.
    std::fs::write(
        m.inside("/etc/cloud/cloud.cfg.d/99-testbed.cfg"),
        "datasource_list: [NoCloud]\nnetwork: {config: disabled}\nlocale: C.UTF-8\n",
    )
    .unwrap();

    let mut m = m;
    isolate(&mut m, &plane, &instance_root, &variables.to_string());
    m.boot().await;
    let status = m.sh("cloud-init status --wait --long");
    assert!(
        status.status.success(),
        "{}\n{}",
        status.stdout_text(),
        m.sh("cat /var/log/cloud-init-output.log").stdout_text()
    );
    assert!(
        status.stdout_text().contains("status: done"),
        "{}",
        status.stdout_text()
    );
    let output = m.sh_ok("cat /var/log/cloud-init-output.log");
    assert!(output.contains("Setting up warmfleet-agent"), "{output}");

    m.until_property(UNIT, "ActiveState", Duration::from_secs(60), |s| {
        s == "active"
    })
    .await;
    assert_eq!(m.property(UNIT, "UnitFileState"), "enabled");
    let runner = plane.github.runners_named(&instance).await;
    assert_eq!(runner.len(), 1, "{runner:#?}");
    let labels: Vec<&str> = runner[0]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().or(l["name"].as_str()).unwrap())
        .collect();
    assert!(labels.contains(&"cloud-init"), "{labels:?}");
    // The deployment cloud-init wrote: its label, which the Lambdas list by.
    assert!(labels.contains(&"warmfleet-system"), "{labels:?}");
    assert_eq!(m.property(UNIT, "NRestarts"), "0");
    plane.aws.sole_in_service(GROUP).await;
}
