//! core's `Lifecycle` port on Auto Scaling, against the simulator.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::aws::Aws;
use warmfleet_core::aws::{load_config, AutoScaling};
use warmfleet_core::ports::{Completion, HookResult, Lifecycle};

#[tokio::test]
async fn hooks_complete_once_and_repeats_are_not_errors() {
    let aws = Aws::start(None, "1").await;
    let hook = aws_sdk_autoscaling::types::LifecycleHookSpecification::builder()
        .lifecycle_hook_name("bootstrap")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(300)
        .default_result("ABANDON")
        .build();
    aws.create("g", 0, 1, 1, vec![hook]).await;
    let id = aws
        .until("g", false, "waiting", |xs| {
            xs.len() == 1 && xs[0].1 == "Pending:Wait"
        })
        .await[0]
        .0
        .clone();

    let port = port(&aws).await;

    let status = port.instance(&id).await.unwrap().unwrap();
    assert_eq!(
        (status.group.as_str(), status.lifecycle_state.as_str()),
        ("g", "Pending:Wait")
    );
    assert_eq!(
        port.heartbeat("g", "bootstrap", &id).await.unwrap(),
        Completion::Done
    );
    assert_eq!(
        port.complete("g", "bootstrap", &id, HookResult::Continue)
            .await
            .unwrap(),
        Completion::Done
    );
    // A duplicate event, a late heartbeat: the hook is no longer waiting, which is fine.
    assert_eq!(
        port.complete("g", "bootstrap", &id, HookResult::Continue)
            .await
            .unwrap(),
        Completion::NotPending
    );
    assert_eq!(
        port.heartbeat("g", "bootstrap", &id).await.unwrap(),
        Completion::NotPending
    );
    aws.until("g", false, "in service", |xs| {
        xs.len() == 1 && xs[0].1 == "InService"
    })
    .await;

    port.set_protection("g", &id, true).await.unwrap();
    assert!(
        port.instance(&id)
            .await
            .unwrap()
            .unwrap()
            .protected_from_scale_in
    );
    port.set_protection("g", &id, false).await.unwrap();
    assert!(
        !port
            .instance(&id)
            .await
            .unwrap()
            .unwrap()
            .protected_from_scale_in
    );

    // Real errors stay errors, and say what they were about.
    let err = port.set_protection("nope", &id, true).await.unwrap_err();
    assert!(!err.retryable);
    assert!(err.to_string().contains("SetInstanceProtection"), "{err}");
    assert!(port
        .instance("i-0000000000000dead")
        .await
        .unwrap()
        .is_none());
}

/// The port's client on the simulator.
async fn port(aws: &Aws) -> AutoScaling {
    let config = load_config()
        .await
        .into_builder()
        .endpoint_url(&aws.url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_autoscaling::config::SharedCredentialsProvider::new(
            aws_sdk_autoscaling::config::Credentials::new("testbed", "testbed", None, None, "test"),
        ))
        .build();
    AutoScaling::new(&config)
}

#[tokio::test]
async fn a_throttled_protection_lands_through_the_sdks_retries_and_patience() {
    let aws = Aws::start(None, "1").await;
    aws.create("g", 0, 1, 1, vec![]).await;
    let id = aws.sole_in_service("g").await;
    let port = port(&aws).await;
    let throttle = |count: u32| {
        let url = format!("{}/_testbed/aws/faults/throttle", aws.url);
        async move {
            let r = reqwest::Client::new()
                .put(url)
                .json(&serde_json::json!({"operation": "autoscaling:SetInstanceProtection", "count": count}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    };
    // Two throttled answers: the SDK's own retries (3 attempts, backoff with jitter) carry it.
    throttle(2).await;
    port.set_protection("g", &id, true).await.unwrap();
    assert!(
        port.instance(&id)
            .await
            .unwrap()
            .unwrap()
            .protected_from_scale_in
    );
    // Longer than the SDK tries: the error says a retry can help, and patience does.
    throttle(5).await;
    let e = port.set_protection("g", &id, false).await.unwrap_err();
    assert!(e.retryable, "{e}");
    assert!(e.message.contains("Throttling"), "{e}");
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    warmfleet_core::patience::until(until, || port.set_protection("g", &id, false))
        .await
        .unwrap();
    assert!(
        !port
            .instance(&id)
            .await
            .unwrap()
            .unwrap()
            .protected_from_scale_in
    );
    let calls = aws.calls().await;
    // 1 + 2 throttled, then 3 throttled, 2 more throttled and the one that landed.
    assert_eq!(calls["autoscaling:SetInstanceProtection"], 9, "{calls:?}");
}
