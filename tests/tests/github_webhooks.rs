//! `workflow_job` webhooks from the fake GitHub, signed as GitHub signs them.

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
        actions.push(event["action"].as_str().unwrap().to_owned());
        if event["action"] == "completed" {
            assert_eq!(event["workflow_job"]["conclusion"], "success");
            assert_eq!(event["workflow_job"]["runner_name"], "i-0hook");
        }
    }
    assert_eq!(actions, ["queued", "in_progress", "completed"]);
}
