//! `workflow_job` webhooks from the fake GitHub, signed as GitHub signs them, shaped as
//! GitHub's published schemas say, and broken on purpose for chaos.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;
use warmfleet_testbed::github::webhooks::signature;

#[tokio::test]
async fn a_jobs_life_is_sent_as_three_signed_workflow_job_events() {
    let (tx, mut rx) = mpsc::unbounded_channel::<(HeaderMap, Bytes)>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let gh = Github::start(&["--webhook-url", &hook_url, "--webhook-secret", "s3cret"]);
    let client = gh.pat_client(fast_retries()).await;
    let (_, sid, job) = gh.busy_runner(&client, "i-0hook", 1.0).await;
    gh.post(
        &format!("/_runner/sessions/{sid}/jobs/{job}/finish"),
        json!({ "succeeded": true, "shutdown": false, "message": null }),
    )
    .await;

    // A new hook is pinged first, signed like any delivery.
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(headers["x-github-event"], "ping");
    assert_eq!(
        headers["x-hub-signature-256"].to_str().unwrap(),
        signature("s3cret", &body)
    );
    let ping: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ping["hook"]["events"], json!(["workflow_job"]));
    assert_eq!(ping["hook"]["config"]["secret"], "********");

    let dir = tempfile::tempdir().unwrap();
    let mut payloads = vec![("ping".to_owned(), body.clone())];
    let mut actions = Vec::new();
    let mut deliveries = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let (headers, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(headers["x-github-event"], "workflow_job");
        assert_eq!(
            headers["x-github-hook-id"],
            ping["hook_id"].to_string().as_str()
        );
        assert!(deliveries.insert(headers["x-github-delivery"].to_str().unwrap().to_owned()));
        assert_eq!(
            headers["x-hub-signature-256"].to_str().unwrap(),
            signature("s3cret", &body)
        );
        assert_ne!(
            headers["x-hub-signature-256"].to_str().unwrap(),
            signature("other", &body)
        );
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(event["workflow_job"]["id"], job);
        let action = event["action"].as_str().unwrap().to_owned();
        payloads.push((format!("workflow-job-{}", action.replace('_', "-")), body));
        actions.push(action);
        if event["action"] == "completed" {
            assert_eq!(event["workflow_job"]["conclusion"], "success");
            assert_eq!(event["workflow_job"]["runner_name"], "i-0hook");
        }
    }
    // Sent as they happen, none waiting for the one before: GitHub promises no order.
    actions.sort();
    assert_eq!(actions, ["completed", "in_progress", "queued"]);
    conforms_to_githubs_schemas(dir.path(), &payloads);
}

/// Each payload against GitHub's published schema for its webhook (the `x-webhooks` of
/// @octokit/openapi), checked by tests/contract/validate_webhooks.py with the venv's Python
/// (`make test` puts it first on PATH).
fn conforms_to_githubs_schemas(dir: &std::path::Path, payloads: &[(String, Bytes)]) {
    let contract = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contract");
    let description =
        contract.join("node_modules/@octokit/openapi/generated/api.github.com.deref.json");
    assert!(
        description.is_file(),
        "{} missing: run `make contract-deps`",
        description.display()
    );
    let mut args = vec![description.display().to_string()];
    for (i, (webhook, body)) in payloads.iter().enumerate() {
        let file = dir.join(format!("{i}-{webhook}.json"));
        std::fs::write(&file, body).unwrap();
        args.push(format!("{webhook}={}", file.display()));
    }
    let out = std::process::Command::new("python3")
        .arg(contract.join("validate_webhooks.py"))
        .args(&args)
        .output()
        .expect("python3 (with openapi-schema-validator: the venv of `make py-deps`)");
    assert!(
        out.status.success(),
        "the fake's payloads break GitHub's schemas:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A receiver that answers 401 to a bad signature, 200 otherwise, and passes on what came.
async fn receiver(secret: &'static str) -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel::<(HeaderMap, Bytes)>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let signed = headers
                    .get("x-hub-signature-256")
                    .is_some_and(|s| s.as_bytes() == signature(secret, &body).as_bytes());
                let _ = tx.send((headers, body));
                if signed {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::UNAUTHORIZED
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn chaos_redelivers_with_the_same_guid_forges_with_another_secret_and_records_it_all() {
    let (hook_url, mut rx) = receiver("s3cret").await;
    let gh = Github::start(&["--webhook-url", &hook_url, "--webhook-secret", "s3cret"]);
    let http = reqwest::Client::new();
    let bad = http
        .put(format!("{}/_testbed/webhooks/faults", gh.url))
        .json(&json!({"drop": 1.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("drop"));
    let set = http
        .put(format!("{}/_testbed/webhooks/faults", gh.url))
        .json(&json!({"duplicate": 1.0, "forge": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 204);

    let client = gh.pat_client(fast_retries()).await;
    let (_, _, job) = gh.busy_runner(&client, "i-0chaos", 1.0).await;
    // The ping, then for `queued` and `in_progress`: a forgery, the delivery, its redelivery.
    let mut by_guid: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let mut forged = 0;
    while by_guid.values().map(Vec::len).sum::<usize>() < 4 || forged < 2 {
        let (headers, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if headers["x-github-event"] == "ping" {
            continue;
        }
        let event: Value = serde_json::from_slice(&body).unwrap();
        if headers["x-hub-signature-256"].to_str().unwrap() != signature("s3cret", &body) {
            forged += 1;
            assert_eq!(event["action"], "queued");
            assert_ne!(event["workflow_job"]["id"], job, "a job no job has");
            continue;
        }
        let guid = headers["x-github-delivery"].to_str().unwrap().to_owned();
        by_guid.entry(guid).or_default().push(event);
    }
    assert_eq!(by_guid.len(), 2, "two events");
    for copies in by_guid.values() {
        assert_eq!(copies.len(), 2, "each redelivered with its GUID");
        assert_eq!(copies[0], copies[1]);
    }
    // The fake records an attempt once the receiver's answer is back, which may be just
    // after the receiver passed the delivery on: read the log until the last answers are in.
    let of = |log: &Value, fault: Option<&str>, status: u64| {
        log.as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["event"] == "workflow_job"
                    && d["fault"].as_str() == fault
                    && d["status"].as_u64() == Some(status)
            })
            .count()
    };
    let complete = |log: &Value| {
        of(log, Some("forged"), 401) >= 2
            && of(log, None, 200) >= 2
            && of(log, Some("duplicate"), 200) >= 2
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut log = gh.get("/_testbed/webhooks/deliveries").await;
    while !complete(&log) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = gh.get("/_testbed/webhooks/deliveries").await;
    }
    assert!(complete(&log), "{log}");
}
