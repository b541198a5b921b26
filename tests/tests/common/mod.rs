//! Helpers for the testbed's integration tests: start the real `warmfleet-testbed` binary as
//! a process and talk to it over HTTP.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

pub mod aws;
pub mod control;
pub mod machine;
pub mod netns;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_core::github::{GithubClient, GithubCredential, GithubTarget, RetryPolicy};

pub const TESTBED: &str = env!("CARGO_BIN_EXE_warmfleet-testbed");
pub const PAT: &str = "ghp_testbedtoken0000000000000000000000";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A `warmfleet-testbed github` process, killed when dropped.
pub struct Github {
    pub url: String,
    child: Child,
    http: reqwest::Client,
}

impl Drop for Github {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Github {
    /// Starts the fake with organisation `acme`, the test PAT and `extra` flags.
    pub fn start(extra: &[&str]) -> Github {
        let mut child = Command::new(TESTBED)
            .args([
                "github",
                "--listen",
                "127.0.0.1:0",
                "--org",
                "acme",
                "--pat",
                PAT,
            ])
            .args(["--poll-wait", "1s"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start warmfleet-testbed github");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the address");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Github {
            url,
            child,
            http: reqwest::Client::new(),
        }
    }

    pub fn org_url(&self) -> String {
        format!("{}/acme", self.url)
    }

    pub async fn requests(&self) -> Vec<Value> {
        self.get("/_testbed/requests")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Logged requests with this method whose path ends with `suffix`.
    pub async fn count(&self, method: &str, suffix: &str) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|r| {
                r["method"] == method && r["path"].as_str().is_some_and(|p| p.ends_with(suffix))
            })
            .count()
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET")
            .error_for_status()
            .expect("GET status")
            .json()
            .await
            .expect("GET json")
    }

    /// The fake's runners named `name` (the agent names a runner after its instance).
    pub async fn runners_named(&self, name: &str) -> Vec<Value> {
        let all = self.get("/_testbed/runners").await;
        all.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["name"] == name)
            .cloned()
            .collect()
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn fault(&self, fault: Value) {
        let resp = self.post("/_testbed/faults", fault).await;
        assert!(
            resp.status().is_success(),
            "fault refused: {}",
            resp.status()
        );
    }

    /// Rotates the personal access tokens: only `pats` are valid from now on.
    pub async fn set_pats(&self, pats: &[&str]) {
        let resp = self
            .http
            .put(format!("{}/_testbed/pats", self.url))
            .json(&serde_json::json!({ "pats": pats }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }

    /// The oldest runner versions GitHub accepts from now on: `{"register": "2.329.0",
    /// "listen": "2.331.0"}` (either may be left out).
    pub async fn set_runner_versions(&self, versions: Value) {
        let resp = self
            .http
            .put(format!("{}/_testbed/runner-versions", self.url))
            .json(&versions)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }

    pub async fn enqueue(&self, labels: &[&str], duration_secs: f64) -> u64 {
        let resp = self
            .post(
                "/_testbed/jobs",
                json!({ "labels": labels, "duration_secs": duration_secs }),
            )
            .await;
        assert_eq!(resp.status(), 201);
        resp.json::<Value>().await.expect("job")["id"]
            .as_u64()
            .expect("job id")
    }

    pub async fn job(&self, id: u64) -> Value {
        self.get(&format!("/_testbed/jobs/{id}")).await
    }

    /// Waits until job `id` has an outcome other than queued/running.
    pub async fn finished_job(&self, id: u64, within: Duration) -> Value {
        let until = Instant::now() + within;
        loop {
            let job = self.job(id).await;
            if job["outcome"] != "queued" && job["outcome"] != "running" {
                return job;
            }
            assert!(
                Instant::now() < until,
                "job {id} still {} after {within:?}",
                job["outcome"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Registers a runner through the runner protocol, as `config.sh` does; returns its id
    /// and credential.
    pub async fn register_with(
        &self,
        token: &str,
        name: &str,
        labels: &[&str],
        default_labels: bool,
    ) -> (u64, String) {
        let resp = self
            .post(
                "/_runner/register",
                json!({
                    "url": self.org_url(), "token": token, "name": name, "labels": labels,
                    "runner_group": null, "replace": false, "ephemeral": false,
                    "no_default_labels": !default_labels,
                    "version": warmfleet_testbed::runner::VERSION,
                }),
            )
            .await;
        assert!(
            resp.status().is_success(),
            "register {name}: {}",
            resp.status()
        );
        let registered: Value = resp.json().await.unwrap();
        (
            registered["runner_id"].as_u64().unwrap(),
            registered["credential"].as_str().unwrap().to_owned(),
        )
    }

    /// Registers a runner with a fresh token, labelled `warmfleet` only.
    pub async fn register(&self, client: &GithubClient, name: &str) -> (u64, String) {
        let token = client.registration_token(deadline(10)).await.unwrap();
        self.register_with(
            secrecy::ExposeSecret::expose_secret(&token.token),
            name,
            &["warmfleet"],
            false,
        )
        .await
    }

    /// Registers a runner, connects it and hands it a `warmfleet` job of `secs`: returns the
    /// runner id, the session id and the job id.
    pub async fn busy_runner(
        &self,
        client: &GithubClient,
        name: &str,
        secs: f64,
    ) -> (u64, String, u64) {
        let (id, credential) = self.register(client, name).await;
        let sid = self.session(id, &credential).await;
        let job = self.enqueue(&["warmfleet"], secs).await;
        let message = self.poll(&sid).await;
        assert_eq!(message["job"]["id"], job, "the runner took the job");
        (id, sid, job)
    }

    /// Opens a listener session for a registered runner, as `run.sh` does; its id.
    pub async fn session(&self, runner_id: u64, credential: &str) -> String {
        let session: Value = self
            .post(
                "/_runner/sessions",
                json!({ "runner_id": runner_id, "credential": credential }),
            )
            .await
            .json()
            .await
            .unwrap();
        session["session_id"].as_str().unwrap().to_owned()
    }

    /// A session's poll URL, with what the listener says about itself on each poll.
    pub fn poll_url(&self, session: &str) -> String {
        format!(
            "{}/_runner/sessions/{session}/message?version={}&disable_update=true",
            self.url,
            warmfleet_testbed::runner::VERSION
        )
    }

    /// One poll of a session for work, as the listener makes it.
    pub async fn poll(&self, session: &str) -> Value {
        reqwest::get(self.poll_url(session))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Registers `name` with the labels warmfleet gives a runner (fleet, group, instance)
    /// and opens its session: its id and session id.
    pub async fn fleet_runner(&self, token: &str, name: &str, group: &str) -> (u64, String) {
        let (id, credential) = self
            .register_with(token, name, &["warmfleet", group, name], false)
            .await;
        (id, self.session(id, &credential).await)
    }

    /// A client for organisation `acme` with the test PAT.
    pub async fn pat_client(&self, policy: RetryPolicy) -> GithubClient {
        let target = GithubTarget::parse(&self.org_url(), None).expect("target");
        GithubClient::connect(
            target,
            &GithubCredential::Token(PAT.to_owned().into()),
            policy,
            deadline(10),
        )
        .await
        .expect("connect")
    }
}

pub fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Retries quickly, for tests.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        secondary_limit_wait: Duration::from_secs(1),
    }
}

pub fn app_credential(app_id: u64) -> GithubCredential {
    let pem = std::fs::read_to_string(fixture("github-app-test-key.pem")).expect("test key");
    GithubCredential::App {
        app_id,
        private_key: pem.into(),
    }
}

/// Polls `check` (every 100 ms) until it holds; fails with `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
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

/// A `warmfleet-testbed demo` run to its end, with its report.
pub struct DemoRun {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The report as written (`--report`).
    pub text: String,
    pub report: Value,
}

impl DemoRun {
    /// Runs the demo with these arguments (the binaries beside the testbed's, a report in
    /// a temporary directory).
    pub fn run(args: &[&std::ffi::OsStr]) -> DemoRun {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let report = dir.path().join("report.json");
        let binaries = Path::new(TESTBED)
            .parent()
            .expect("the binaries' directory");
        let out = Command::new(TESTBED)
            .arg("demo")
            .args(args)
            .arg("--binaries")
            .arg(binaries)
            .arg("--report")
            .arg(&report)
            .output()
            .expect("the testbed runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let text = std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("no report ({e}):\n{stdout}\n{stderr}"));
        let report = serde_json::from_str(&text).expect("the report is JSON");
        DemoRun {
            status: out.status,
            stdout,
            stderr,
            text,
            report,
        }
    }

    /// A count in the report, by JSON pointer.
    pub fn n(&self, path: &str) -> u64 {
        self.report
            .pointer(path)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{path} missing in {}", self.text))
    }
}
