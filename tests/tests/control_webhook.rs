//! The webhook receiver, the real `warmfleet-webhook` binary behind its function URL on the
//! testbed, with moto's Secrets Manager and DynamoDB: signed deliveries scale the group
//! through its job policy, once per job; forged ones touch nothing; and the GitHub fake's
//! own deliveries, to a hook created through its REST API, do the same end to end.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::control::{Function, Plane};
use common::PAT;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_core::naming::POLICY_JOB_QUEUED;
use warmfleet_testbed::github::webhooks::signature;

const SECRET: &str = "whsec_testbed";

const WEBHOOK: Function = Function {
    name: "webhook",
    binary: "warmfleet-webhook",
    timeout: 10.0,
    retries: 0,
    env: &[
        // "small" comes first but does not exist: jobs only "runners" serves go there.
        ("WARMFLEET_GROUPS", "small,runners"),
        ("WARMFLEET_WEBHOOK_SECRET", "warmfleet/webhook"),
        ("WARMFLEET_JOB_TABLE", "jobs"),
        ("WARMFLEET_RUNNER_LABELS", "linux"),
    ],
};

/// record_metric, noting the idle runners in the same job table.
const RECORD: Function = Function {
    name: "record-metric",
    binary: "warmfleet-record-metric",
    timeout: 10.0,
    retries: 0,
    env: &[
        ("WARMFLEET_GROUPS", "runners"),
        ("WARMFLEET_JOB_TABLE", "jobs"),
    ],
};

/// The receiver's world as the module makes it: the group with its job policy, the webhook
/// secret, the job table.
async fn plane(max: i32) -> Plane {
    plane_with(&[WEBHOOK], max).await
}

async fn plane_with(functions: &[Function<'_>], max: i32) -> Plane {
    let plane = Plane::start("1", None, functions, "", &[]).await;
    plane.aws.create("runners", 0, max, 0, vec![]).await;
    plane
        .aws
        .asg
        .put_scaling_policy()
        .auto_scaling_group_name("runners")
        .policy_name(POLICY_JOB_QUEUED)
        .policy_type("SimpleScaling")
        .adjustment_type("ChangeInCapacity")
        .scaling_adjustment(1)
        .cooldown(0)
        .send()
        .await
        .unwrap();
    plane
        .secrets
        .create_secret()
        .name("warmfleet/webhook")
        .secret_string(SECRET)
        .send()
        .await
        .unwrap();
    plane.job_table("jobs").await;
    plane
}

fn url(plane: &Plane) -> String {
    format!("{}/_function_url/webhook/", plane.aws.url)
}

fn queued(job: u64, labels: &[&str]) -> String {
    json!({
        "action": "queued",
        "workflow_job": {
            "id": job, "labels": labels, "status": "queued",
            "created_at": "2026-11-30T10:00:00Z", "started_at": "2026-11-30T10:00:00Z",
            "runner_name": null, "runner_id": null,
        },
        "repository": {"full_name": "acme/app"},
        "sender": {"login": "octocat"},
    })
    .to_string()
}

/// Sends a delivery as GitHub would, signed with `secret`; the status and the JSON answer.
async fn deliver(plane: &Plane, event: &str, body: &str, secret: &str) -> (u16, Value) {
    deliver_to(url(plane), event, body, secret).await
}

async fn deliver_to(url: String, event: &str, body: &str, secret: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", "6b5bd3a6-0000-4000-8000-000000000001")
        .header("x-hub-signature-256", signature(secret, body.as_bytes()))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn desired(plane: &Plane) -> i32 {
    let out = plane
        .aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("runners")
        .send()
        .await
        .unwrap();
    out.auto_scaling_groups()[0].desired_capacity().unwrap()
}

#[tokio::test]
async fn a_job_an_idle_runner_takes_adds_no_instance_and_the_next_one_does() {
    let plane = plane_with(&[WEBHOOK, RECORD], 5).await;
    plane.aws.set_desired("runners", 1).await;
    plane.aws.sole_in_service("runners").await;
    // Before any count, nothing can be claimed: the first job adds its instance.
    let (status, answer) =
        deliver(&plane, "workflow_job", &queued(501, &["runners"]), SECRET).await;
    assert_eq!((status, desired(&plane).await), (200, 2), "{answer}");
    plane
        .aws
        .until("runners", false, "both in service", |i| {
            i.len() == 2 && i.iter().all(|x| x.1 == "InService")
        })
        .await;
    let counts = plane.invoke_scheduled("record-metric").await.unwrap();
    assert_eq!(counts["runners"]["idle"], 2, "{counts}");
    for job in [502, 503] {
        let (status, answer) =
            deliver(&plane, "workflow_job", &queued(job, &["runners"]), SECRET).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer["ok"].as_str().unwrap().contains("idle runner"),
            "{answer}"
        );
    }
    assert_eq!(desired(&plane).await, 2, "the two idle runners take them");
    deliver(&plane, "workflow_job", &queued(504, &["runners"]), SECRET).await;
    assert_eq!(
        desired(&plane).await,
        3,
        "none left to claim: an instance for it"
    );
}

#[tokio::test]
async fn each_queued_job_adds_one_instance_once_and_forgeries_nothing() {
    let plane = plane(5).await;
    let (status, answer) = deliver(&plane, "ping", r#"{"zen": "hi", "hook_id": 1}"#, SECRET).await;
    assert_eq!((status, answer), (200, json!({"ok": "pong"})));

    let job = queued(1, &["warmfleet", "Linux", "runners"]);
    assert_eq!(deliver(&plane, "workflow_job", &job, SECRET).await.0, 200);
    assert_eq!(desired(&plane).await, 1);
    let (status, answer) = deliver(&plane, "workflow_job", &job, SECRET).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(desired(&plane).await, 1, "a repeated delivery adds nothing");

    let forged = queued(2, &["runners"]);
    assert_eq!(
        deliver(&plane, "workflow_job", &forged, "guess").await.0,
        401
    );
    let unsigned = reqwest::Client::new()
        .post(url(&plane))
        .header("x-github-event", "workflow_job")
        .body(forged.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(desired(&plane).await, 1, "forged deliveries change nothing");

    // Four jobs at once: Auto Scaling adds each, none lost to a race.
    let mut sends = tokio::task::JoinSet::new();
    for j in 10..14 {
        let (to, body) = (url(&plane), queued(j, &["runners"]));
        sends.spawn(async move { deliver_to(to, "workflow_job", &body, SECRET).await.0 });
    }
    assert_eq!(sends.join_all().await, [200; 4]);
    assert_eq!(desired(&plane).await, 5);
    assert_eq!(
        deliver(&plane, "workflow_job", &queued(20, &["runners"]), SECRET)
            .await
            .0,
        200
    );
    assert_eq!(desired(&plane).await, 5, "capped at the maximum");

    let (status, answer) = deliver(&plane, "workflow_job", &queued(30, &["gpu"]), SECRET).await;
    assert_eq!((status, answer), (200, json!({"ok": "nothing to do"})));
}

#[tokio::test]
async fn the_github_fakes_deliveries_to_a_hook_made_through_its_api_scale_the_group() {
    let plane = plane(3).await;
    let created = reqwest::Client::new()
        .post(format!("{}/orgs/acme/hooks", plane.github.url))
        .bearer_auth(PAT)
        .json(&json!({
            "name": "web", "active": true, "events": ["workflow_job"],
            "config": {"url": url(&plane), "content_type": "json", "secret": SECRET},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let hook: Value = created.json().await.unwrap();
    assert_eq!(hook["config"]["secret"], "********", "never shown again");

    plane.github.enqueue(&["runners"], 60.0).await;
    plane.github.enqueue(&["LINUX", "Runners"], 60.0).await;
    let until = Instant::now() + Duration::from_secs(30);
    while desired(&plane).await < 2 {
        assert!(
            Instant::now() < until,
            "the queued jobs never scaled the group: {:?}",
            plane.ended("webhook").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The ping and two deliveries, each answered by the function.
    let invocations = plane.until_ended("webhook", 3).await;
    assert!(
        invocations
            .iter()
            .all(|i| i["response"]["statusCode"] == 200),
        "{invocations:?}"
    );
    assert_eq!(desired(&plane).await, 2);
}
