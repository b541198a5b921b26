//! The fake actions runner, as real processes, against the fake GitHub.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::*;
use secrecy::ExposeSecret;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use warmfleet_core::github::{JitRequest, RunnerStatus};

fn install(dir: &Path) {
    let status = std::process::Command::new(TESTBED)
        .args(["runner", "install"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    for file in [
        "config.sh",
        "run.sh",
        "bin/Runner.Listener",
        "bin/Runner.Worker",
    ] {
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{file} is executable");
    }
}

/// `config.sh` with the token in the environment, as warmfleet passes it.
async fn configure(dir: &Path, token: &str, args: &[&str]) -> Output {
    Command::new(dir.join("config.sh"))
        .args(args)
        .env("ACTIONS_RUNNER_INPUT_TOKEN", token)
        .output()
        .await
        .unwrap()
}

struct Listener {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Listener {
    fn start(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> Listener {
        let mut child = Command::new(dir.join(program))
            .args(args)
            .envs(env.iter().copied())
            .env("WARMFLEET_TESTBED_RELAUNCH_DELAY", "0")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Listener { child, lines }
    }

    /// Reads output until a line contains `text`.
    async fn wait_for(&mut self, text: &str) {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                if line.contains(text) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "never printed {text:?}");
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    async fn exit_code(&mut self) -> i32 {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits")
            .unwrap();
        status.code().expect("exit code")
    }
}

fn hook_scripts(dir: &Path) -> (String, String, std::path::PathBuf) {
    let log = dir.join("hooks.log");
    let write = |name: &str, word: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("echo \"{word} $GITHUB_JOB\" >> '{}'\n", log.display()),
        )
        .unwrap();
        path.display().to_string()
    };
    (
        write("started.sh", "started"),
        write("completed.sh", "completed"),
        log,
    )
}

#[tokio::test]
async fn a_configured_runner_takes_a_job_runs_its_hooks_and_a_sigterm_mid_job_kills_it() {
    let gh = Github::start(&[]);
    let client = gh.pat_client(fast_retries()).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("runner");
    install(&dir);
    let token = client.registration_token(deadline(10)).await.unwrap();
    let secret = token.token.expose_secret().to_owned();
    let out = configure(
        &dir,
        &secret,
        &[
            "--unattended",
            "--url",
            &gh.org_url(),
            "--name",
            "i-0001",
            "--labels",
            "warmfleet,x64-big",
            "--no-default-labels",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // As the real runner writes them: `.runner` with the process's umask deciding its
    // mode, the key (the fake keeps its secret in `.credentials`) chmodded 600 after.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|m| u32::from_str_radix(m.trim(), 8).unwrap())
        .unwrap();
    for (file, mode) in [(".runner", 0o666 & !umask), (".credentials", 0o600)] {
        let meta = std::fs::metadata(dir.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            !text.contains(&secret),
            "{file} holds no registration token"
        );
    }
    let runner = client
        .find_runner("i-0001", deadline(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(runner.status, RunnerStatus::Offline);
    assert!(runner.has_label("x64-big") && !runner.has_label("self-hosted"));

    let (started, completed, log) = hook_scripts(work.path());
    let mut listener = Listener::start(
        &dir,
        "bin/Runner.Listener",
        &["run"],
        &[
            ("ACTIONS_RUNNER_HOOK_JOB_STARTED", &started),
            ("ACTIONS_RUNNER_HOOK_JOB_COMPLETED", &completed),
        ],
    );
    listener.wait_for("Listening for Jobs").await;
    let online = client
        .find_runner("i-0001", deadline(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(online.status, RunnerStatus::Online);

    let job = gh.enqueue(&["warmfleet"], 0.3).await;
    let done = gh.finished_job(job, Duration::from_secs(20)).await;
    assert_eq!(done["outcome"], "succeeded", "{done}");
    assert_eq!(done["runner_name"], "i-0001");
    let hooks = std::fs::read_to_string(&log).unwrap();
    assert_eq!(hooks, format!("started job-{job}\ncompleted job-{job}\n"));

    // A job no runner matches stays queued.
    let unmatched = gh.enqueue(&["warmfleet", "gpu"], 0.1).await;
    let long = gh.enqueue(&["warmfleet"], 120.0).await;
    listener.wait_for(&format!("Running job: job-{long}")).await;
    listener.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(listener.exit_code().await, 0);
    let killed = gh.job(long).await;
    assert_eq!(killed["outcome"], "killed", "{killed}");
    assert!(killed["message"]
        .as_str()
        .unwrap()
        .contains("shutdown signal"));
    assert_eq!(gh.job(unmatched).await["outcome"], "queued");
    let offline = client
        .find_runner("i-0001", deadline(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(offline.status, RunnerStatus::Offline);

    // Only a remove token removes it.
    let out = Command::new(dir.join("config.sh"))
        .arg("remove")
        .env("ACTIONS_RUNNER_INPUT_TOKEN", &secret)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let remove = client.remove_token(deadline(10)).await.unwrap();
    let out = Command::new(dir.join("config.sh"))
        .args(["remove", "--token", remove.token.expose_secret()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join(".runner").exists() && !dir.join(".credentials").exists());
    assert!(client
        .find_runner("i-0001", deadline(10))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn expired_tokens_name_clashes_and_double_configuration_are_refused() {
    let gh = Github::start(&["--token-ttl", "1s"]);
    let client = gh.pat_client(fast_retries()).await;
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    install(&a);
    install(&b);
    let url = gh.org_url();
    let args = ["--unattended", "--url", url.as_str(), "--name", "i-0002"];

    let stale = client.registration_token(deadline(10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = configure(&a, stale.token.expose_secret(), &args).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expired"),
        "{out:?}"
    );

    let fresh = client.registration_token(deadline(10)).await.unwrap();
    let token = fresh.token.expose_secret().to_owned();
    assert!(configure(&a, &token, &args).await.status.success());
    let out = configure(&a, &token, &args).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("already configured"));
    let out = configure(&b, &token, &args).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("same name"),
        "{out:?}"
    );
    let mut replace = args.to_vec();
    replace.push("--replace");
    assert!(configure(&b, &token, &replace).await.status.success());
    assert_eq!(
        client.list_runners(None, deadline(10)).await.unwrap().len(),
        1
    );

    let c = work.path().join("c");
    install(&c);
    let out = configure(&c, &token, &["--url", &url]).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--unattended"),
        "{out:?}"
    );
    assert_ne!(out.status.code(), Some(0), "no --unattended, no prompt");
}

#[tokio::test]
async fn an_ephemeral_jit_runner_exits_after_its_one_job() {
    let gh = Github::start(&[]);
    let client = gh.pat_client(fast_retries()).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("runner");
    install(&dir);
    let jit = client
        .generate_jit_config(
            &JitRequest {
                name: "i-0jit".into(),
                runner_group_id: 1,
                labels: vec!["warmfleet".into()],
                work_folder: "_work".into(),
            },
            deadline(10),
        )
        .await
        .unwrap();
    let config = jit.encoded_jit_config.expose_secret().to_owned();
    let mut listener = Listener::start(
        &dir,
        "bin/Runner.Listener",
        &["run"],
        &[("ACTIONS_RUNNER_INPUT_JITCONFIG", &config)],
    );
    listener.wait_for("Listening for Jobs").await;
    let first = gh.enqueue(&["warmfleet"], 0.2).await;
    let second = gh.enqueue(&["warmfleet"], 0.2).await;
    assert_eq!(listener.exit_code().await, 0);
    assert_eq!(
        gh.finished_job(first, Duration::from_secs(5)).await["outcome"],
        "succeeded"
    );
    assert_eq!(gh.job(second).await["outcome"], "queued");
    assert!(
        client
            .find_runner("i-0jit", deadline(10))
            .await
            .unwrap()
            .is_none(),
        "GitHub deleted it"
    );

    let mut again = Listener::start(
        &dir,
        "bin/Runner.Listener",
        &["run"],
        &[("ACTIONS_RUNNER_INPUT_JITCONFIG", &config)],
    );
    assert_eq!(again.exit_code().await, 1, "a JIT config works once");
}

#[tokio::test]
async fn run_sh_relaunches_after_an_update_and_stops_when_the_runner_is_deleted() {
    let gh = Github::start(&[]);
    let client = gh.pat_client(fast_retries()).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("runner");
    install(&dir);
    let token = client.registration_token(deadline(10)).await.unwrap();
    let out = configure(
        &dir,
        token.token.expose_secret(),
        &["--unattended", "--url", &gh.org_url(), "--name", "i-0003"],
    )
    .await;
    assert!(out.status.success());
    let id = client
        .find_runner("i-0003", deadline(10))
        .await
        .unwrap()
        .unwrap()
        .id;

    let mut run = Listener::start(&dir, "run.sh", &[], &[]);
    run.wait_for("Listening for Jobs").await;
    let resp = gh
        .post(&format!("/_testbed/runners/{id}/update"), json!({}))
        .await;
    assert_eq!(resp.status(), 204);
    run.wait_for("exit because of updating").await;
    run.wait_for("Listening for Jobs").await;

    client.delete_runner(id, deadline(10)).await.unwrap();
    run.wait_for("terminated error").await;
    assert_eq!(run.exit_code().await, 0);
}
