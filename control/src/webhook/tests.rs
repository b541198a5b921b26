//! The receiver over in-memory ports: every answer GitHub can get, and what each one did.

use super::*;
use crate::fakes;
use warmfleet_core::ports::JobStage;

const SECRET: &str = "the webhook secret";
const SECRET_ID: &str = "warmfleet/webhook";
const QUEUED: &str = include_str!("../../tests/fixtures/webhooks/queued.json");
const IN_PROGRESS: &str = include_str!("../../tests/fixtures/webhooks/in_progress.json");
const JOB: u64 = 31000000001;
const GUID: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

type Receiver = Webhook<fakes::Secrets, fakes::Policies, fakes::Ledger, fakes::Cloudwatch>;

fn receiver() -> Receiver {
    let secrets = fakes::Secrets::default();
    secrets
        .values
        .lock()
        .unwrap()
        .insert(SECRET_ID.to_owned(), (SECRET.to_owned().into(), Vec::new()));
    Webhook::new(
        secrets,
        fakes::Policies::default(),
        fakes::Ledger::default(),
        fakes::Cloudwatch::default(),
        WebhookSettings {
            secret_id: SECRET_ID.into(),
            job_table: "jobs".into(),
            groups: vec!["small".into(), "large".into()],
            labels: vec!["linux".into()],
            deployment: Default::default(),
            deadline_margin: Duration::from_millis(100),
        },
    )
}

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn delivery(event: &str, body: &str, secret: Option<&str>) -> Request {
    let mut headers = vec![
        ("x-github-event".to_owned(), event.to_owned()),
        ("x-github-delivery".to_owned(), GUID.to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    if let Some(s) = secret {
        headers.push(("x-hub-signature-256".to_owned(), sign(s, body.as_bytes())));
    }
    Request {
        method: "POST".into(),
        headers,
        body: body.as_bytes().to_vec(),
    }
}

async fn send(r: &Receiver, request: &Request) -> u16 {
    r.handle(request, Instant::now() + Duration::from_secs(5))
        .await
        .status
}

fn executed(r: &Receiver) -> Vec<(String, String)> {
    r.capacity.executed.lock().unwrap().clone()
}

#[tokio::test]
async fn a_queued_job_adds_one_instance_to_its_group_once() {
    let r = receiver();
    let d = delivery("workflow_job", QUEUED, Some(SECRET));
    assert_eq!(send(&r, &d).await, 200);
    assert_eq!(
        executed(&r),
        [("small".to_owned(), POLICY_JOB_QUEUED.to_owned())]
    );
    assert_eq!(
        send(&r, &d).await,
        200,
        "a repeated delivery is acknowledged"
    );
    assert_eq!(executed(&r).len(), 1, "and adds nothing");
}

#[tokio::test]
async fn a_queued_job_an_idle_runner_can_take_adds_no_instance() {
    let r = receiver();
    r.ledger.idle.lock().unwrap().insert("small".into(), 2);
    let first = delivery("workflow_job", QUEUED, Some(SECRET));
    assert_eq!(send(&r, &first).await, 200);
    assert!(executed(&r).is_empty(), "an idle runner takes it");
    // The same news again (a redelivery) claims no second runner.
    assert_eq!(send(&r, &first).await, 200);
    assert_eq!(r.ledger.idle.lock().unwrap()["small"], 1);
    // The next job takes the other idle runner; the one after finds none: an instance.
    for (id, added) in [(31000000002u64, 0), (31000000003, 1)] {
        let job = QUEUED.replace("\"id\": 31000000001", &format!("\"id\": {id}"));
        assert_ne!(job, QUEUED, "a job of its own");
        assert_eq!(
            send(&r, &delivery("workflow_job", &job, Some(SECRET))).await,
            200
        );
        assert_eq!(executed(&r).len(), added, "job {id}");
    }
    assert_eq!(r.ledger.idle.lock().unwrap()["small"], 0);
}

#[tokio::test]
async fn forged_unsigned_oversized_and_non_post_deliveries_touch_nothing() {
    let r = receiver();
    let forged = delivery("workflow_job", QUEUED, Some("not the secret"));
    assert_eq!(send(&r, &forged).await, 401);
    assert_eq!(send(&r, &delivery("workflow_job", QUEUED, None)).await, 401);
    let mut tampered = delivery("workflow_job", QUEUED, Some(SECRET));
    tampered.body = QUEUED
        .replace("small", "large")
        .replace("Linux", "linux ")
        .into_bytes();
    assert_eq!(send(&r, &tampered).await, 401, "body changed after signing");
    let big = format!("{QUEUED}{}", " ".repeat(MAX_BODY_BYTES));
    assert_eq!(
        send(&r, &delivery("workflow_job", &big, Some(SECRET))).await,
        413
    );
    let mut get = delivery("workflow_job", QUEUED, Some(SECRET));
    get.method = "GET".into();
    assert_eq!(send(&r, &get).await, 405);
    assert!(executed(&r).is_empty());
    assert!(r.ledger.jobs.lock().unwrap().is_empty(), "nothing recorded");
}

#[tokio::test]
async fn ping_is_answered_and_other_events_ignored() {
    let r = receiver();
    let ping = r#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
    let answer = r
        .handle(
            &delivery("ping", ping, Some(SECRET)),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        answer,
        Response {
            status: 200,
            body: json!({"ok": "pong"})
        }
    );
    assert_eq!(
        send(&r, &delivery("push", r#"{"ref": "main"}"#, Some(SECRET))).await,
        200
    );
    assert_eq!(
        send(&r, &delivery("ping", ping, Some("forged"))).await,
        401,
        "a ping is verified like any delivery"
    );
    assert!(executed(&r).is_empty());
}

#[tokio::test]
async fn a_signed_payload_that_is_not_a_workflow_job_is_a_bad_request() {
    let r = receiver();
    let answer = r
        .handle(
            &delivery("workflow_job", r#"{"action": "queued"}"#, Some(SECRET)),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert!(answer.body["error"]
        .as_str()
        .unwrap()
        .contains("missing field `workflow_job`"));
}

#[tokio::test]
async fn a_started_job_records_its_queue_time_once_and_a_late_queued_adds_nothing() {
    let r = receiver();
    let started = delivery("workflow_job", IN_PROGRESS, Some(SECRET));
    assert_eq!(send(&r, &started).await, 200);
    assert_eq!(send(&r, &started).await, 200);
    assert_eq!(
        *r.metrics.durations.lock().unwrap(),
        [(
            "small".to_owned(),
            METRIC_JOB_QUEUE_TIME.to_owned(),
            vec![7.0]
        )]
    );
    assert_eq!(
        send(&r, &delivery("workflow_job", QUEUED, Some(SECRET))).await,
        200
    );
    assert!(
        executed(&r).is_empty(),
        "the job had started when its queued event came"
    );
}

#[tokio::test]
async fn a_job_no_group_serves_changes_nothing() {
    let r = receiver();
    let gpu = QUEUED.replace("\"Linux\"", "\"gpu\"");
    assert_eq!(
        send(&r, &delivery("workflow_job", &gpu, Some(SECRET))).await,
        200
    );
    assert!(executed(&r).is_empty());
    assert!(r.ledger.jobs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_scale_out_answers_503_and_a_redelivery_acts_again() {
    let r = receiver();
    *r.capacity.throttled.lock().unwrap() = true;
    let d = delivery("workflow_job", QUEUED, Some(SECRET));
    let answer = r
        .handle(&d, Instant::now() + Duration::from_millis(400))
        .await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        r.ledger.jobs.lock().unwrap().get(&JOB).cloned(),
        Some(vec![]),
        "the record was undone"
    );
    *r.capacity.throttled.lock().unwrap() = false;
    assert_eq!(send(&r, &d).await, 200);
    assert_eq!(executed(&r).len(), 1);
    assert_eq!(
        r.ledger.jobs.lock().unwrap()[&JOB],
        [(JobStage::Queued, GUID.to_owned(), true)],
        "recorded, by this delivery, done"
    );
}

#[tokio::test]
async fn the_same_delivery_again_acts_only_while_its_action_is_not_done() {
    let r = receiver();
    // A function that recorded the job, then died before scaling (a timeout, a crash).
    r.ledger
        .jobs
        .lock()
        .unwrap()
        .insert(JOB, vec![(JobStage::Queued, GUID.to_owned(), false)]);
    let d = delivery("workflow_job", QUEUED, Some(SECRET));
    assert_eq!(send(&r, &d).await, 200);
    assert_eq!(
        executed(&r).len(),
        1,
        "GitHub's Redeliver keeps the GUID: it acts"
    );
    assert_eq!(send(&r, &d).await, 200);
    assert_eq!(executed(&r).len(), 1, "now done: a repeat");
    let mut other = delivery("workflow_job", QUEUED, Some(SECRET));
    other.headers[1].1 = "0f6b9c2e-0000-4000-8000-000000000002".into();
    assert_eq!(send(&r, &other).await, 200);
    assert_eq!(
        executed(&r).len(),
        1,
        "another delivery of the same news adds nothing"
    );
}

#[tokio::test]
async fn a_rotated_secret_is_read_again_and_the_previous_one_still_accepted() {
    let r = receiver();
    let old = delivery("workflow_job", QUEUED, Some(SECRET));
    assert_eq!(send(&r, &old).await, 200);
    // The operator rotates: the new value becomes current, the old one previous.
    r.secrets.values.lock().unwrap().insert(
        SECRET_ID.to_owned(),
        ("the new secret".to_owned().into(), Vec::new()),
    );
    r.secrets
        .previous
        .lock()
        .unwrap()
        .insert(SECRET_ID.to_owned(), SECRET.to_owned().into());
    let fresh = "a signature that matches no kept secret read a moment ago is refused";
    assert_eq!(
        send(
            &r,
            &delivery("workflow_job", IN_PROGRESS, Some("the new secret"))
        )
        .await,
        401,
        "{fresh}"
    );
    // RELOAD_AFTER later (the kept secrets aged by hand rather than waited for).
    if let Some((at, _)) = r.keys.lock().await.as_mut() {
        *at = at
            .checked_sub(RELOAD_AFTER)
            .expect("the clock is past 10 s");
    }
    let new = IN_PROGRESS.to_owned();
    assert_eq!(
        send(&r, &delivery("workflow_job", &new, Some("the new secret"))).await,
        200,
        "a signature that matches no kept secret reads the secret again"
    );
    let again = QUEUED.replace("31000000001", "31000000009");
    assert_eq!(
        send(&r, &delivery("workflow_job", &again, Some(SECRET))).await,
        200,
        "the previous secret is still accepted"
    );
    assert_eq!(executed(&r).len(), 2);
    assert_eq!(
        send(&r, &delivery("workflow_job", &again, Some("neither"))).await,
        401
    );
}

#[tokio::test]
async fn a_missing_webhook_secret_is_a_503_not_a_401() {
    let r = receiver();
    r.secrets.values.lock().unwrap().clear();
    assert_eq!(
        send(&r, &delivery("workflow_job", QUEUED, Some(SECRET))).await,
        503
    );
}
