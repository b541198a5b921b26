//! The contract with GitHub's own schema: Prism, loaded with GitHub's published OpenAPI
//! description (npm `@octokit/openapi`, its Enterprise Cloud variant, which adds the
//! enterprise endpoints to api.github.com's), sits as a validating proxy between the core client
//! and the fake GitHub. Every operation warmfleet uses passes through it; any request or
//! response that breaks the schema fails the test.
//!
//! Needs Prism and the description: `make contract-deps` installs both under
//! `tests/contract/node_modules` (or set `WARMFLEET_PRISM` and `WARMFLEET_GITHUB_OPENAPI`).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::*;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use warmfleet_core::github::{
    GithubClient, GithubCredential, GithubError, GithubTarget, JitRequest,
};

/// Every GitHub path warmfleet or the fake serves.
const PATHS: &[&str] = &[
    "/rate_limit",
    "/orgs/{org}/installation",
    "/repos/{owner}/{repo}/installation",
    "/app/installations/{installation_id}/access_tokens",
    "/orgs/{org}/actions/runner-groups",
    "/orgs/{org}/actions/runners",
    "/orgs/{org}/actions/runners/registration-token",
    "/orgs/{org}/actions/runners/remove-token",
    "/orgs/{org}/actions/runners/generate-jitconfig",
    "/orgs/{org}/actions/runners/{runner_id}",
    "/orgs/{org}/actions/runners/{runner_id}/labels",
    "/repos/{owner}/{repo}/actions/runners",
    "/repos/{owner}/{repo}/actions/runners/registration-token",
    "/repos/{owner}/{repo}/actions/runners/remove-token",
    "/repos/{owner}/{repo}/actions/runners/generate-jitconfig",
    "/repos/{owner}/{repo}/actions/runners/{runner_id}",
    "/repos/{owner}/{repo}/actions/runners/{runner_id}/labels",
    "/enterprises/{enterprise}/actions/runner-groups",
    "/enterprises/{enterprise}/actions/runners",
    "/enterprises/{enterprise}/actions/runners/generate-jitconfig",
    "/enterprises/{enterprise}/actions/runners/{runner_id}",
    "/enterprises/{enterprise}/actions/runners/{runner_id}/labels",
    "/enterprises/{enterprise}/actions/runners/registration-token",
    "/enterprises/{enterprise}/actions/runners/remove-token",
];

fn contract_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contract")
}

fn required(var: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    assert!(
        path.exists(),
        "{} is missing: run `make contract-deps` (npm installs Prism and GitHub's OpenAPI \
         description), or set {var}",
        path.display()
    );
    path
}

/// The description cut down to `PATHS` and the components they reach, so Prism starts fast.
fn subset(full: &Value) -> Value {
    fn walk(node: &Value, full: &Value, out: &mut Map<String, Value>) {
        match node {
            Value::Object(map) => {
                for (key, value) in map {
                    if let (true, Some(pointer)) = (key == "$ref", value.as_str()) {
                        let parts: Vec<&str> = pointer
                            .trim_start_matches("#/components/")
                            .splitn(2, '/')
                            .collect();
                        let [kind, name] = parts[..] else { continue };
                        let kind_map = out.entry(kind).or_insert_with(|| json!({}));
                        if kind_map.get(name).is_none() {
                            let target = full["components"][kind][name].clone();
                            assert!(!target.is_null(), "dangling {pointer}");
                            kind_map[name] = target.clone();
                            walk(&target, full, out);
                        }
                    } else {
                        walk(value, full, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, full, out)),
            _ => {}
        }
    }
    let mut paths = Map::new();
    for path in PATHS {
        let item = full["paths"][*path].clone();
        assert!(!item.is_null(), "GitHub's description has no {path}");
        paths.insert((*path).to_owned(), item);
    }
    let paths = Value::Object(paths);
    let mut components = Map::new();
    walk(&paths, full, &mut components);
    json!({
        "openapi": full["openapi"], "info": full["info"], "servers": full["servers"],
        "paths": paths, "components": components,
    })
}

struct Prism {
    url: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prism {
    fn start(spec: &std::path::Path, upstream: &str) -> Prism {
        let prism = required(
            "WARMFLEET_PRISM",
            contract_dir().join("node_modules/.bin/prism"),
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(prism)
            .arg("proxy")
            .arg(spec)
            .arg(upstream)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--errors",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start Prism");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // One reader keeps Prism's output: the log, and a signal once it listens.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("Prism is listening") {
                    let _ = ready_tx.send(());
                }
                sink.lock().unwrap().push(line);
            }
        });
        // Owned from here on, so that a failed start still stops Prism (Drop).
        let prism = Prism {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        // Prism lists its routes (with random example values), then says it listens.
        let started = ready_rx.recv_timeout(std::time::Duration::from_secs(60));
        assert!(
            started.is_ok(),
            "Prism did not start within a minute:\n{}",
            prism.log.lock().unwrap().join("\n")
        );
        prism
    }

    /// Violations Prism reported, but for two that GitHub's description cannot express: a
    /// 304 to a conditional request (GitHub documents conditional requests for every GET,
    /// while each operation lists only its 200), and a 404 for a runner already gone (GitHub
    /// answers 404 for any missing resource; "delete a runner" lists only 204 and 422).
    fn violations(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        let mut found = Vec::new();
        let mut last_status = String::new();
        for line in log.iter() {
            if let Some(i) = line.find("has returned ") {
                last_status = line[i + 13..].trim().to_owned();
            }
            if line.contains("Violation") {
                let undocumented_status = matches!(last_status.as_str(), "304" | "404")
                    && line.contains("Unable to match the returned status code");
                if !undocumented_status {
                    found.push(line.clone());
                }
            }
        }
        found
    }
}

#[tokio::test]
async fn every_operation_conforms_to_githubs_openapi_description() {
    let description = required(
        "WARMFLEET_GITHUB_OPENAPI",
        contract_dir().join("node_modules/@octokit/openapi/generated/ghec.json"),
    );
    let full: Value = serde_json::from_slice(&std::fs::read(&description).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("github-subset.json");
    std::fs::write(&spec, serde_json::to_vec(&subset(&full)).unwrap()).unwrap();

    let key = fixture("github-app-test-key.pem");
    let gh = Github::start(&[
        "--repo",
        "acme/app",
        "--enterprise",
        "big",
        "--app-id",
        "42",
        "--app-key",
        key.to_str().unwrap(),
    ]);
    let prism = Prism::start(&spec, &gh.url);
    let through_prism = |scope: &str| {
        GithubTarget::parse(&format!("https://github.com/{scope}"), Some(&prism.url)).unwrap()
    };

    // As a GitHub App: installation lookup, installation token, then every runner operation.
    let app = GithubClient::connect(
        through_prism("acme"),
        &app_credential(42),
        fast_retries(),
        deadline(20),
    )
    .await
    .expect("connect through Prism");
    app.registration_token(deadline(20))
        .await
        .expect("registration token");
    app.remove_token(deadline(20)).await.expect("remove token");
    let jit = app
        .generate_jit_config(
            &JitRequest {
                name: "i-0contract".into(),
                runner_group_id: 1,
                labels: vec!["warmfleet".into()],
                work_folder: "_work".into(),
            },
            deadline(20),
        )
        .await
        .expect("JIT config");
    assert_eq!(app.list_runners(None, deadline(20)).await.unwrap().len(), 1);
    assert_eq!(
        app.list_runners(Some("warmfleet"), deadline(20))
            .await
            .unwrap()
            .len(),
        1,
        "304 path"
    );
    assert!(app
        .find_runner("i-0contract", deadline(20))
        .await
        .unwrap()
        .is_some());
    app.remove_custom_labels(jit.runner.id, deadline(20))
        .await
        .expect("labels");
    app.delete_runner(jit.runner.id, deadline(20))
        .await
        .expect("delete");
    let gone = app
        .delete_runner(jit.runner.id, deadline(20))
        .await
        .unwrap_err();
    assert!(matches!(gone, GithubError::NotFound { .. }), "{gone}");

    // A busy runner's 422: registered and given a job straight on the fake.
    let (busy_id, _, _) = gh.busy_runner(&app, "i-0busy", 600.0).await;
    let busy = app.delete_runner(busy_id, deadline(20)).await.unwrap_err();
    assert!(matches!(busy, GithubError::RunnerBusy { .. }), "{busy}");

    // Repository (through its own app installation lookup) and enterprise (PAT) scopes.
    let repo = GithubClient::connect(
        through_prism("acme/app"),
        &app_credential(42),
        fast_retries(),
        deadline(20),
    )
    .await
    .expect("repository installation");
    repo.registration_token(deadline(20)).await.unwrap();
    repo.list_runners(None, deadline(20)).await.unwrap();
    let pat = GithubCredential::Token(PAT.to_owned().into());
    let enterprise = GithubClient::connect(
        through_prism("enterprises/big"),
        &pat,
        fast_retries(),
        deadline(20),
    )
    .await
    .unwrap();
    enterprise.registration_token(deadline(20)).await.unwrap();
    enterprise.remove_token(deadline(20)).await.unwrap();
    enterprise.list_runners(None, deadline(20)).await.unwrap();

    // What the fake serves beyond the client's needs: runner groups, one runner, the rate limit.
    let http = reqwest::Client::new();
    for path in [
        "/orgs/acme/actions/runner-groups".to_owned(),
        format!("/orgs/acme/actions/runners/{busy_id}"),
        format!("/orgs/acme/actions/runners/{busy_id}/labels"),
        "/rate_limit".to_owned(),
    ] {
        let resp = http
            .get(format!("{}{path}", prism.url))
            .bearer_auth(PAT)
            .header("user-agent", "warmfleet-contract-test")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }

    let violations = prism.violations();
    assert!(
        violations.is_empty(),
        "schema violations:\n{}",
        violations.join("\n")
    );
    let requests = prism
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("Request received"))
        .count();
    assert!(
        requests >= 20,
        "only {requests} requests passed through Prism"
    );
}
