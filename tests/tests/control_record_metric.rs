//! The record_metric Lambda, the real `warmfleet-record-metric` binary on the testbed:
//! counts from the Auto Scaling simulator alone, published to CloudWatch, no GitHub request.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_cloudwatch::types::Statistic;
use common::control::{Function, Plane};
use serde_json::json;
use warmfleet_core::ports::Occupancy;

const RECORD: Function = Function {
    name: "record-metric",
    binary: "warmfleet-record-metric",
    timeout: 30.0,
    retries: 0,
    env: &[("WARMFLEET_GROUPS", "runners")],
};

/// The largest value of `metric` for the group `runners` CloudWatch holds.
async fn latest(plane: &Plane, metric: &str) -> f64 {
    let values = plane.metric("runners", metric, Statistic::Maximum).await;
    values.into_iter().fold(f64::MIN, f64::max)
}

#[tokio::test]
async fn counts_in_service_instances_by_protection_and_asks_github_nothing() {
    let plane = Plane::start("1", None, &[RECORD], "", &[]).await;
    plane.aws.create("runners", 0, 5, 4, vec![]).await;
    // Another pool's instances: not this deployment's to count.
    plane.aws.create("other", 0, 5, 2, vec![]).await;
    let ids: Vec<String> = plane
        .aws
        .until("runners", false, "in service", |i| {
            i.len() == 4 && i.iter().all(|x| x.1 == "InService")
        })
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // Two run a job: their agents protect them.
    plane
        .aws
        .asg
        .set_instance_protection()
        .auto_scaling_group_name("runners")
        .set_instance_ids(Some(ids[..2].to_vec()))
        .protected_from_scale_in(true)
        .send()
        .await
        .unwrap();

    let counts = plane.invoke_scheduled("record-metric").await.unwrap();
    assert_eq!(counts, json!({"runners": {"idle": 2, "busy": 2}}));
    for (metric, want) in [
        ("IdleRunners", 2.0),
        ("BusyRunners", 2.0),
        ("AllRunnersBusy", 0.0),
    ] {
        assert_eq!(latest(&plane, metric).await, want, "{metric}");
    }
    let asked = plane.github.requests().await;
    assert!(asked.is_empty(), "record_metric asked GitHub: {asked:?}");

    // Every runner busy: the scale-out signal of an idle target of 0.
    plane
        .aws
        .asg
        .set_instance_protection()
        .auto_scaling_group_name("runners")
        .set_instance_ids(Some(ids[2..].to_vec()))
        .protected_from_scale_in(true)
        .send()
        .await
        .unwrap();
    let counts = plane.invoke_scheduled("record-metric").await.unwrap();
    assert_eq!(counts, json!({"runners": {"idle": 0, "busy": 4}}));
    assert_eq!(latest(&plane, "AllRunnersBusy").await, 1.0);
}

#[tokio::test]
async fn counts_runners_the_runner_table_holds_busy_as_busy_though_unprotected() {
    let functions = [Function {
        env: &[
            ("WARMFLEET_GROUPS", "runners"),
            ("WARMFLEET_RUNNER_TABLE", "runner-table"),
        ],
        ..RECORD
    }];
    let plane = Plane::start("1", None, &functions, "", &[]).await;
    let table = plane.runner_table("runner-table").await;
    plane.aws.create("runners", 0, 5, 4, vec![]).await;
    let ids: Vec<String> = plane
        .aws
        .until("runners", false, "in service", |i| {
            i.len() == 4 && i.iter().all(|x| x.1 == "InService")
        })
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // As agents with a runner table do: two run a job, one finished its job, one has
    // recorded nothing; none is protected. An instance of another group, busy.
    table.record(&ids[0], "runners", true).await.unwrap();
    table.record(&ids[1], "runners", true).await.unwrap();
    table.record(&ids[2], "runners", true).await.unwrap();
    table.record(&ids[2], "runners", false).await.unwrap();
    table.record("i-elsewhere", "other", true).await.unwrap();

    let counts = plane.invoke_scheduled("record-metric").await.unwrap();
    assert_eq!(counts, json!({"runners": {"idle": 2, "busy": 2}}));
    assert_eq!(latest(&plane, "BusyRunners").await, 2.0);
}
