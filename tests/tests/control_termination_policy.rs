//! The group's custom termination policy, the real `warmfleet-termination-policy` binary on
//! the testbed with moto's DynamoDB as the runner table: asked directly, and asked by the
//! testbed's Auto Scaling on a scale-in, as AWS asks it.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::control::{Function, Plane};
use serde_json::json;
use std::time::Duration;
use warmfleet_core::ports::Occupancy;

const POLICY: Function = Function {
    name: "termination-policy",
    binary: "warmfleet-termination-policy",
    timeout: 3.0,
    retries: 0,
    env: &[("WARMFLEET_RUNNER_TABLE", "runner-table")],
};

/// Auto Scaling's question to the group's custom termination policy, as documented.
fn termination_request(cause: &str, capacity: u32, ids: &[String]) -> serde_json::Value {
    json!({
        "AutoScalingGroupARN": "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:d4738357-2d40-4038-ae7e-b00ae0227003:autoScalingGroupName/runners",
        "AutoScalingGroupName": "runners",
        "CapacityToTerminate": [
            {"AvailabilityZone": "us-east-1a", "Capacity": capacity, "InstanceMarketOption": "on-demand"}
        ],
        "Instances": ids.iter().map(|id| json!({
            "AvailabilityZone": "us-east-1a", "InstanceId": id, "InstanceType": "t3.medium",
            "InstanceMarketOption": "on-demand"
        })).collect::<Vec<_>>(),
        "Cause": cause,
    })
}

#[tokio::test]
async fn the_termination_policy_takes_runners_the_runner_table_holds_idle_and_never_a_busy_one() {
    let plane = Plane::start("1", None, &[POLICY], "", &[]).await;
    let table = plane.runner_table("runner-table").await;
    let ids: Vec<String> = ["i-0aaa", "i-0bbb", "i-0ccc", "i-0ddd"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    table.record(&ids[0], "runners", true).await.unwrap();
    table.record(&ids[1], "runners", false).await.unwrap();
    table.record(&ids[2], "runners", true).await.unwrap();
    // ids[3] has recorded nothing: no job since its agent started.

    let answer = plane
        .invoke(
            "termination-policy",
            &termination_request("SCALE_IN", 3, &ids),
        )
        .await
        .unwrap();
    assert_eq!(answer, json!({"InstanceIDs": ["i-0bbb", "i-0ddd"]}));
    // A refresh must end: busy runners after the idle ones (their drain lets the job end).
    let answer = plane
        .invoke(
            "termination-policy",
            &termination_request("INSTANCE_REFRESH", 3, &ids),
        )
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"InstanceIDs": ["i-0bbb", "i-0ddd", "i-0aaa"]})
    );
    // Nothing idle: nothing taken, and Auto Scaling asks again later.
    let answer = plane
        .invoke(
            "termination-policy",
            &termination_request("SCALE_IN", 1, &ids[..1]),
        )
        .await
        .unwrap();
    assert_eq!(answer, json!({"InstanceIDs": []}));
}

#[tokio::test]
async fn a_group_whose_termination_policy_is_the_function_scales_in_only_idle_runners() {
    let plane = Plane::start("1", None, &[POLICY], "", &[]).await;
    let table = plane.runner_table("runner-table").await;
    plane.aws.create("runners", 0, 3, 3, vec![]).await;
    let policy = warmfleet_testbed::aws::lambda::function_arn("termination-policy");
    plane
        .aws
        .asg
        .update_auto_scaling_group()
        .auto_scaling_group_name("runners")
        .termination_policies(&policy)
        .termination_policies("Default")
        .send()
        .await
        .unwrap();
    let described = plane
        .aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("runners")
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.auto_scaling_groups()[0].termination_policies(),
        [policy.clone(), "Default".to_owned()]
    );
    let ids: Vec<String> = plane
        .aws
        .until("runners", false, "in service", |i| {
            i.len() == 3 && i.iter().all(|x| x.1 == "InService")
        })
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // Two run a job, recorded as agents with a runner table do: none is protected.
    table.record(&ids[0], "runners", true).await.unwrap();
    table.record(&ids[1], "runners", true).await.unwrap();

    plane
        .aws
        .asg
        .set_desired_capacity()
        .auto_scaling_group_name("runners")
        .desired_capacity(1)
        .send()
        .await
        .unwrap();
    // The idle one goes; the busy ones stay, though the group is over its desired
    // capacity, until one is recorded idle (the policy is asked again a little later).
    let left = plane
        .aws
        .until("runners", false, "the idle runner taken", |i| {
            !i.iter().any(|x| x.0 == ids[2] && x.1 == "InService")
        })
        .await;
    assert!(
        ids[..2]
            .iter()
            .all(|id| left.iter().any(|x| &x.0 == id && x.1 == "InService")),
        "{left:?}"
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    let still = plane.aws.instances("runners").await;
    assert_eq!(
        still.iter().filter(|x| x.1 == "InService").count(),
        2,
        "busy runners are never taken: {still:?}"
    );
    table.record(&ids[1], "runners", false).await.unwrap();
    plane
        .aws
        .until("runners", false, "the runner recorded idle taken", |i| {
            !i.iter().any(|x| x.0 == ids[1] && x.1 == "InService")
                && i.iter().any(|x| x.0 == ids[0] && x.1 == "InService")
        })
        .await;
    let asked = plane.ended("termination-policy").await;
    assert!(asked.len() >= 3, "asked at each try: {asked:#?}");
}
