//! The Auto Scaling simulator, driven by the real aws-sdk-autoscaling client over awsQuery.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_autoscaling::types::{InstanceReusePolicy, LifecycleHookSpecification, WarmPoolState};
use common::aws::Aws;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

fn hook(name: &str, transition: &str, timeout: i32, default: &str) -> LifecycleHookSpecification {
    LifecycleHookSpecification::builder()
        .lifecycle_hook_name(name)
        .lifecycle_transition(transition)
        .heartbeat_timeout(timeout)
        .default_result(default)
        .build()
}

const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

fn all_in(state: &'static str, n: usize) -> impl Fn(&[(String, String)]) -> bool {
    move |xs| xs.len() == n && xs.iter().all(|(_, s)| s == state)
}

#[tokio::test]
async fn a_launch_with_two_hooks_waits_until_both_complete() {
    let aws = Aws::start(None, "1").await;
    let hooks = vec![
        hook("registration", LAUNCHING, 300, "ABANDON"),
        hook("bootstrap", LAUNCHING, 1200, "ABANDON"),
    ];
    aws.create("g", 0, 2, 1, hooks).await;
    let listed = aws
        .asg
        .describe_lifecycle_hooks()
        .auto_scaling_group_name("g")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.lifecycle_hooks().len(), 2);
    assert_eq!(listed.lifecycle_hooks()[0].global_timeout(), Some(30000));
    let id = aws
        .until("g", false, "Pending:Wait", all_in("Pending:Wait", 1))
        .await[0]
        .0
        .clone();
    aws.complete("g", "registration", &id).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        aws.instances("g").await,
        [(id.clone(), "Pending:Wait".into())]
    );
    aws.complete("g", "bootstrap", &id).await;
    aws.until("g", false, "InService", all_in("InService", 1))
        .await;

    let err = aws
        .asg
        .complete_lifecycle_action()
        .auto_scaling_group_name("g")
        .lifecycle_hook_name("bootstrap")
        .lifecycle_action_token("no-such-token")
        .lifecycle_action_result("CONTINUE")
        .send()
        .await
        .unwrap_err();
    let svc = err.into_service_error();
    assert_eq!(
        aws_sdk_autoscaling::error::ProvideErrorMetadata::code(&svc),
        Some("ValidationError")
    );
}

#[tokio::test]
async fn a_hook_left_alone_abandons_and_replaces_while_a_heartbeat_keeps_it_waiting() {
    // 60 world seconds a second: the 30 s heartbeat timeout passes in half a second.
    let aws = Aws::start(None, "60").await;
    aws.create(
        "alone",
        0,
        1,
        1,
        vec![hook("bootstrap", LAUNCHING, 30, "ABANDON")],
    )
    .await;
    aws.create(
        "beating",
        0,
        1,
        1,
        vec![hook("bootstrap", LAUNCHING, 30, "ABANDON")],
    )
    .await;
    let alone = aws
        .until("alone", false, "waiting", all_in("Pending:Wait", 1))
        .await[0]
        .0
        .clone();
    let beating = aws
        .until("beating", false, "waiting", all_in("Pending:Wait", 1))
        .await[0]
        .0
        .clone();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        aws.asg
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name("beating")
            .lifecycle_hook_name("bootstrap")
            .instance_id(&beating)
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        aws.instances("beating").await,
        [(beating, "Pending:Wait".into())]
    );
    let replaced = aws
        .until("alone", false, "replaced", |xs| {
            xs.len() == 1 && xs[0].0 != alone
        })
        .await;
    assert_eq!(replaced[0].1, "Pending:Wait");
    let activities = aws
        .asg
        .describe_scaling_activities()
        .auto_scaling_group_name("alone")
        .send()
        .await
        .unwrap();
    assert!(activities.activities().iter().any(|a| a
        .description()
        .unwrap_or_default()
        .contains(&alone)
        && a.description()
            .unwrap_or_default()
            .starts_with("Terminating")));
}

#[tokio::test]
async fn the_warm_pool_fills_hibernates_and_is_used_before_a_cold_launch() {
    let aws = Aws::start(None, "1").await;
    aws.create(
        "wp",
        0,
        3,
        0,
        vec![hook("bootstrap", LAUNCHING, 600, "ABANDON")],
    )
    .await;
    aws.asg
        .put_warm_pool()
        .auto_scaling_group_name("wp")
        .min_size(1)
        .max_group_prepared_capacity(2)
        .pool_state(WarmPoolState::Hibernated)
        .instance_reuse_policy(
            InstanceReusePolicy::builder()
                .reuse_on_scale_in(false)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let warm = aws
        .until(
            "wp",
            true,
            "two warm instances waiting",
            all_in("Warmed:Pending:Wait", 2),
        )
        .await;
    for (id, _) in &warm {
        aws.complete("wp", "bootstrap", id).await;
    }
    aws.until("wp", true, "hibernated", all_in("Warmed:Hibernated", 2))
        .await;
    let hibernated = aws
        .effects()
        .await
        .iter()
        .filter(|e| e["effect"]["Hibernate"].is_object())
        .count();
    assert_eq!(hibernated, 2);

    aws.set_desired("wp", 1).await;
    let in_group = aws
        .until("wp", false, "one resumed", all_in("Pending:Wait", 1))
        .await;
    let resumed = &in_group[0].0;
    assert!(
        warm.iter().any(|(id, _)| id == resumed),
        "a warm instance, not a cold launch"
    );
    let resumes: Vec<Value> = aws
        .effects()
        .await
        .into_iter()
        .filter(|e| e["effect"]["Resume"].is_object())
        .collect();
    assert_eq!(resumes.len(), 1);
    assert_eq!(resumes[0]["effect"]["Resume"]["instance"], resumed.as_str());
    aws.complete("wp", "bootstrap", resumed).await;
    aws.until("wp", false, "in service", all_in("InService", 1))
        .await;

    let err = aws
        .asg
        .set_desired_capacity()
        .auto_scaling_group_name("wp")
        .desired_capacity(4)
        .send()
        .await
        .unwrap_err();
    let svc = err.into_service_error();
    assert_eq!(
        aws_sdk_autoscaling::error::ProvideErrorMetadata::code(&svc),
        Some("ValidationError")
    );
    assert!(
        aws_sdk_autoscaling::error::ProvideErrorMetadata::message(&svc)
            .unwrap()
            .contains("above max")
    );
}

#[tokio::test]
async fn scale_in_skips_a_protected_instance_and_a_terminate_hook_holds_the_other() {
    let aws = Aws::start(None, "1").await;
    aws.create(
        "si",
        0,
        3,
        2,
        vec![hook("deregistration", TERMINATING, 1800, "CONTINUE")],
    )
    .await;
    let ids = aws
        .until("si", false, "in service", all_in("InService", 2))
        .await;
    aws.asg
        .set_instance_protection()
        .auto_scaling_group_name("si")
        .instance_ids(&ids[0].0)
        .protected_from_scale_in(true)
        .send()
        .await
        .unwrap();
    aws.set_desired("si", 1).await;
    aws.until("si", false, "held", |xs| {
        xs.iter()
            .any(|(id, s)| *id == ids[1].0 && s == "Terminating:Wait")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = aws.instances("si").await;
    assert!(
        now.contains(&(ids[0].0.clone(), "InService".into())),
        "{now:?}"
    );
    assert!(
        now.contains(&(ids[1].0.clone(), "Terminating:Wait".into())),
        "{now:?}"
    );
    let described = aws
        .asg
        .describe_auto_scaling_instances()
        .instance_ids(&ids[0].0)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.auto_scaling_instances()[0].protected_from_scale_in(),
        Some(true)
    );
    aws.complete("si", "deregistration", &ids[1].0).await;
    aws.until("si", false, "terminated", |xs| {
        xs.len() == 1 && xs[0].0 == ids[0].0
    })
    .await;
}

#[tokio::test]
async fn old_and_unhealthy_instances_are_replaced() {
    // A day passes in under a second.
    let aws = Aws::start(None, "200000").await;
    aws.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name("old")
        .min_size(1)
        .max_size(2)
        .desired_capacity(1)
        .max_instance_lifetime(86_400)
        .send()
        .await
        .unwrap();
    let first = aws
        .until("old", false, "in service", all_in("InService", 1))
        .await[0]
        .0
        .clone();
    aws.until("old", false, "replaced", |xs| {
        xs.len() == 1 && xs[0].0 != first
    })
    .await;

    aws.create("sick", 1, 2, 1, vec![]).await;
    let sick = aws
        .until("sick", false, "in service", all_in("InService", 1))
        .await[0]
        .0
        .clone();
    aws.asg
        .set_instance_health()
        .instance_id(&sick)
        .health_status("Unhealthy")
        .send()
        .await
        .unwrap();
    aws.until("sick", false, "replaced", |xs| {
        xs.len() == 1 && xs[0].0 != sick && xs[0].1 == "InService"
    })
    .await;

    let err = aws
        .asg
        .create_auto_scaling_group()
        .auto_scaling_group_name("short")
        .min_size(0)
        .max_size(1)
        .max_instance_lifetime(60)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_autoscaling::error::ProvideErrorMetadata::code(&err.into_service_error()),
        Some("ValidationError")
    );
}
