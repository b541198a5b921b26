//! The registration Lambda, the real `warmfleet-registration` binary, run by the testbed
//! through the Lambda Runtime API on lifecycle events, with moto's Secrets Manager and the
//! GitHub fake.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_autoscaling::types::{InstanceReusePolicy, LifecycleHookSpecification, WarmPoolState};
use aws_sdk_dynamodb::types::AttributeValue;
use common::control::{Function, Plane};
use secrecy::ExposeSecret;
use serde_json::json;
use warmfleet_core::instance_secret::RunnerCredential;

const RULES: &str = r#"
[[rule]]
name = "registration"
event_pattern = { source = ["aws.autoscaling"], detail-type = ["EC2 Instance-launch Lifecycle Action"], detail = { LifecycleHookName = ["registration"] } }
targets = ["registration"]
"#;

const REGISTRATION: Function = Function {
    name: "registration",
    binary: "warmfleet-registration",
    timeout: 20.0,
    retries: 0,
    env: &[],
};

fn hook() -> LifecycleHookSpecification {
    LifecycleHookSpecification::builder()
        .lifecycle_hook_name("registration")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(300)
        .default_result("ABANDON")
        .build()
}

async fn start() -> Plane {
    Plane::start("1", None, &[REGISTRATION], RULES, &[]).await
}

/// The registration token an instance's secret holds.
async fn token(plane: &Plane, instance: &str) -> String {
    let secret = plane
        .instance_secret("runners", instance)
        .await
        .expect("a secret");
    match secret.credential {
        RunnerCredential::RegistrationToken { token, .. } => token.expose_secret().to_owned(),
        other => panic!("not a registration token: {other:?}"),
    }
}

/// The instance's token registers its runner, as the agent would.
async fn registers(plane: &Plane, instance: &str) {
    let t = token(plane, instance).await;
    plane
        .github
        .register_with(&t, instance, &["warmfleet", "runners", instance], false)
        .await;
}

#[tokio::test]
async fn a_cold_launch_leaves_a_fresh_token_in_the_instance_secret_and_the_hook_completed() {
    let plane = start().await;
    plane.aws.create("runners", 0, 2, 1, vec![hook()]).await;
    let instance = &plane.aws.sole_in_service("runners").await;
    let secret = plane.instance_secret("runners", instance).await.unwrap();
    assert_eq!(
        secret.lifecycle_action.len(),
        36,
        "the lifecycle action's token"
    );
    let described = plane
        .secrets
        .describe_secret()
        .secret_id(format!("warmfleet/runners/{instance}"))
        .send()
        .await
        .unwrap();
    let tags: Vec<(&str, &str)> = described
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert!(
        tags.contains(&("warmfleet:instance-id", instance.as_str())),
        "{tags:?}"
    );
    assert!(
        tags.contains(&("warmfleet:asg-name", "runners")),
        "{tags:?}"
    );
    // The token is GitHub's: a runner registers with it.
    registers(&plane, instance).await;
    let calls = plane.until_ended("registration", 1).await;
    assert_eq!(calls[0]["outcome"], "success", "{calls:#?}");
    assert_eq!(calls[0]["response"]["outcome"], "Registered");
    assert!(calls[0]["init_ms"].is_number());
}

#[tokio::test]
async fn a_warm_pool_entry_mints_nothing_and_each_resume_mints_a_new_token() {
    let plane = start().await;
    // One instance in all, so that the same instance goes out, back and out again.
    plane.aws.create("runners", 0, 1, 0, vec![hook()]).await;
    plane
        .aws
        .asg
        .put_warm_pool()
        .auto_scaling_group_name("runners")
        .min_size(0)
        .pool_state(WarmPoolState::Hibernated)
        .instance_reuse_policy(
            InstanceReusePolicy::builder()
                .reuse_on_scale_in(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let warm = plane
        .aws
        .until("runners", true, "hibernated", |i| {
            i.len() == 1 && i[0].1 == "Warmed:Hibernated"
        })
        .await;
    let instance = warm[0].0.clone();
    assert!(plane.instance_secret("runners", &instance).await.is_none());
    assert_eq!(plane.github.count("POST", "/registration-token").await, 0);
    assert_eq!(
        plane.ended("registration").await[0]["response"]["outcome"],
        "WarmPoolEntry"
    );

    plane.aws.set_desired("runners", 1).await;
    let resumed = plane.aws.sole_in_service("runners").await;
    assert_eq!(resumed, instance);
    let first = token(&plane, &instance).await;
    // Back into the pool, then out again: a new lifecycle action, a new token.
    plane.aws.set_desired("runners", 0).await;
    plane
        .aws
        .until("runners", true, "back in the pool", |i| {
            i.len() == 1 && i[0].1 == "Warmed:Hibernated"
        })
        .await;
    plane.aws.set_desired("runners", 1).await;
    let resumed = plane.aws.sole_in_service("runners").await;
    assert_eq!(resumed, instance);
    let second = token(&plane, &instance).await;
    assert_ne!(first, second, "a resume never reuses the old token");
    assert_eq!(plane.versions("runners", &instance).await, 2);
    assert_eq!(plane.github.count("POST", "/registration-token").await, 2);
}

#[tokio::test]
async fn a_duplicate_event_is_harmless() {
    let plane = start().await;
    let faults = reqwest::Client::new()
        .put(format!("{}/_testbed/aws/faults/events", plane.aws.url))
        .json(&json!({"duplicate": 1.0, "max_delay_seconds": 0.5}))
        .send()
        .await
        .unwrap();
    assert!(faults.status().is_success());
    plane.aws.create("runners", 0, 2, 1, vec![hook()]).await;
    let instance = &plane.aws.sole_in_service("runners").await;
    let calls = plane.until_ended("registration", 2).await;
    assert!(
        calls.iter().all(|c| c["outcome"] == "success"),
        "{calls:#?}"
    );
    assert_eq!(calls[0]["source"], calls[1]["source"], "one event, twice");
    registers(&plane, instance).await;
}

#[tokio::test]
async fn github_failing_past_the_deadline_abandons_the_launch() {
    let plane = Plane::start(
        "1",
        None,
        &[Function {
            timeout: 5.0,
            retries: 0,
            ..REGISTRATION
        }],
        RULES,
        &[],
    )
    .await;
    plane
        .github
        .fault(json!({"path": "/orgs/acme/actions/runners/registration-token", "status": 502, "count": 100000}))
        .await;
    plane.aws.create("runners", 0, 2, 1, vec![hook()]).await;
    let calls = plane.until_ended("registration", 1).await;
    let outcome = calls[0]["response"]["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("Abandoned") && outcome.contains("502"),
        "{calls:#?}"
    );
    let first = plane.aws.effects().await.iter().find_map(|e| {
        e["effect"]["LifecycleAction"]["instance"]
            .as_str()
            .map(str::to_owned)
    });
    let first = first.unwrap();
    // ABANDON terminates the instance; the group launches another.
    plane
        .aws
        .until("runners", false, "replaced", |i| {
            i.iter().all(|(id, _)| *id != first) && !i.is_empty()
        })
        .await;
    assert!(plane.instance_secret("runners", &first).await.is_none());
}

#[tokio::test]
async fn a_bad_variable_fails_init_and_the_invocation_names_it() {
    let plane = Plane::start(
        "1",
        None,
        &[Function {
            env: &[("WARMFLEET_RUNNER_MODE", "sometimes")],
            ..REGISTRATION
        }],
        RULES,
        &[],
    )
    .await;
    plane.aws.create("runners", 0, 1, 1, vec![hook()]).await;
    let calls = plane.until_ended("registration", 1).await;
    assert_eq!(calls[0]["outcome"], "init_error", "{calls:#?}");
    assert_eq!(calls[0]["error"]["errorType"], "warmfleet.InitError");
    assert_eq!(
        calls[0]["error"]["errorMessage"],
        "configuration: WARMFLEET_RUNNER_MODE: \"sometimes\" is not persistent or ephemeral"
    );
}

#[tokio::test]
async fn ephemeral_mode_stores_a_jit_configuration_for_a_runner_named_after_the_instance() {
    let plane = Plane::start(
        "1",
        None,
        &[Function {
            env: &[
                ("WARMFLEET_RUNNER_MODE", "ephemeral"),
                ("WARMFLEET_RUNNER_LABELS", "linux, x64"),
            ],
            ..REGISTRATION
        }],
        RULES,
        &[],
    )
    .await;
    plane.aws.create("runners", 0, 1, 1, vec![hook()]).await;
    let instance = plane.aws.sole_in_service("runners").await;
    let secret = plane.instance_secret("runners", &instance).await.unwrap();
    let RunnerCredential::JitConfig {
        runner_id,
        encoded_jit_config,
    } = secret.credential
    else {
        panic!("not a JIT configuration");
    };
    assert!(!encoded_jit_config.expose_secret().is_empty());
    let runners = plane.github.get("/_testbed/runners").await;
    let runner = runners
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == runner_id)
        .unwrap_or_else(|| panic!("runner {runner_id} not in {runners:#}"));
    assert_eq!(runner["name"], instance.as_str());
    assert_eq!(runner["ephemeral"], true, "{runner:#}");
    let labels: Vec<&str> = runner["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str().or(l.as_str()))
        .collect();
    for want in ["warmfleet", "runners", instance.as_str(), "linux", "x64"] {
        assert!(labels.contains(&want), "{want} missing from {labels:?}");
    }
}

#[tokio::test]
async fn a_launch_event_stating_another_transition_is_refused_and_the_hook_left_alone() {
    // No rule: the test delivers the event itself.
    let plane = Plane::start("1", None, &[REGISTRATION], "", &[]).await;
    plane.aws.create("runners", 0, 1, 1, vec![hook()]).await;
    let action = plane
        .aws
        .until_effect(|e| e["LifecycleAction"]["hook"] == "registration")
        .await["LifecycleAction"]
        .clone();
    let instance = action["instance"].as_str().unwrap().to_owned();
    for transition in [
        json!("autoscaling:EC2_INSTANCE_TERMINATING"),
        json!("autoscaling:TEST_NOTIFICATION"),
        json!(1),
        serde_json::Value::Null,
    ] {
        let event = json!({
            "version": "0", "id": "7e1b9c2a-0000-4000-8000-000000000002",
            "detail-type": "EC2 Instance-launch Lifecycle Action", "source": "aws.autoscaling",
            "account": "123456789012", "time": "2026-11-28T12:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0:autoScalingGroupName/runners"],
            "detail": {
                "LifecycleActionToken": action["token"], "AutoScalingGroupName": "runners",
                "LifecycleHookName": "registration", "EC2InstanceId": instance,
                "LifecycleTransition": transition,
                "Origin": action["origin"], "Destination": action["destination"],
            },
        });
        let err = plane.invoke("registration", &event).await.unwrap_err();
        assert!(
            err["errorMessage"]
                .as_str()
                .unwrap()
                .contains("detail.LifecycleTransition"),
            "{err}"
        );
    }
    // Nothing minted, nothing stored, the hook still pending.
    assert_eq!(plane.github.count("POST", "/registration-token").await, 0);
    assert!(plane.instance_secret("runners", &instance).await.is_none());
    assert_eq!(
        plane.aws.instances("runners").await,
        [(instance, "Pending:Wait".to_owned())]
    );
}

#[tokio::test]
async fn a_rotated_github_token_is_read_again_by_a_warm_function() {
    let plane = start().await;
    plane.aws.create("runners", 0, 2, 1, vec![hook()]).await;
    let first = plane.aws.sole_in_service("runners").await;
    // The token is rotated: GitHub revokes the old one, the secret holds the new one. The
    // function, warm, still has the old one.
    const ROTATED: &str = "ghp_rotatedrotatedrotatedrotatedrotated0";
    plane.github.set_pats(&[ROTATED]).await;
    plane
        .secrets
        .put_secret_value()
        .secret_id(common::control::CREDENTIAL_SECRET)
        .secret_string(format!("{{\"token\": \"{ROTATED}\"}}"))
        .send()
        .await
        .unwrap();
    plane.aws.set_desired("runners", 2).await;
    let both = plane
        .aws
        .until("runners", false, "two in service", |i| {
            i.len() == 2 && i.iter().all(|(_, s)| s == "InService")
        })
        .await;
    let second = both.iter().find(|(id, _)| *id != first).unwrap().0.clone();
    let calls = plane.until_ended("registration", 2).await;
    assert!(
        calls.iter().all(|c| c["outcome"] == "success"),
        "{calls:#?}"
    );
    assert_eq!(calls[0]["pid"], calls[1]["pid"], "the same warm process");
    // The old token refused once, then the new one.
    let log = plane.github.requests().await;
    let minted: Vec<u64> = log
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with("/registration-token"))
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(minted, [201, 401, 201], "{log:#?}");
    registers(&plane, &second).await;
}

#[tokio::test]
async fn a_rate_limit_past_the_deadline_keeps_the_launch_for_the_events_retry() {
    // World time 20 times real: Lambda's retry comes 60 world seconds (3 s) later; the
    // function has 100 world seconds (5 s), GitHub asks to wait 10 s.
    let plane = Plane::start(
        "20",
        None,
        &[Function {
            timeout: 100.0,
            retries: 2,
            ..REGISTRATION
        }],
        RULES,
        &[],
    )
    .await;
    plane
        .github
        .fault(
            json!({"path": "/orgs/acme/actions/runners/registration-token", "status": 403,
                      "retry_after": 10, "count": 1}),
        )
        .await;
    plane.aws.create("runners", 0, 1, 1, vec![hook()]).await;
    let instance = plane.aws.sole_in_service("runners").await;
    let calls = plane.until_ended("registration", 2).await;
    assert_eq!(calls[0]["outcome"], "error", "{calls:#?}");
    assert_eq!(calls[0]["error"]["errorType"], "warmfleet.Retryable");
    assert_eq!(calls[1]["outcome"], "success", "{calls:#?}");
    assert_eq!(calls[1]["attempt"], 1);
    assert_eq!(
        calls[0]["source"], calls[1]["source"],
        "the same event, retried"
    );
    // The first instance launched, kept: never abandoned, never replaced.
    let first = plane
        .aws
        .until_effect(|e| e["LifecycleAction"]["hook"] == "registration")
        .await;
    assert_eq!(first["LifecycleAction"]["instance"], instance.as_str());
    token(&plane, &instance).await;
}

#[tokio::test]
async fn launches_share_the_groups_token_and_each_instance_holds_its_own_copy() {
    let plane = start().await;
    // As the module creates it: a secret without a value yet.
    plane
        .secrets
        .create_secret()
        .name("warmfleet/runners/tokens/registration")
        .send()
        .await
        .unwrap();
    plane.aws.create("runners", 0, 3, 1, vec![hook()]).await;
    let first = plane.aws.sole_in_service("runners").await;
    plane.aws.set_desired("runners", 3).await;
    let instances = plane
        .aws
        .until("runners", false, "in service", |i| {
            i.len() == 3 && i.iter().all(|x| x.1 == "InService")
        })
        .await;
    assert!(instances.iter().any(|(id, _)| *id == first));
    let shared = token(&plane, &first).await;
    for (instance, _) in &instances {
        assert_eq!(token(&plane, instance).await, shared, "{instance}");
        // Each registers its runner with its copy.
        registers(&plane, instance).await;
    }
    assert_eq!(plane.github.count("POST", "/registration-token").await, 1);
    let stored = plane
        .secrets
        .get_secret_value()
        .secret_id("warmfleet/runners/tokens/registration")
        .send()
        .await
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(stored.secret_string().unwrap()).unwrap();
    assert_eq!(stored["token"], shared.as_str());
}

#[tokio::test]
async fn a_launch_adds_its_github_requests_to_the_deployments_account() {
    const ACCOUNTED: Function = Function {
        env: &[("WARMFLEET_JOB_TABLE", "jobs")],
        ..REGISTRATION
    };
    let plane = Plane::start("1", None, &[ACCOUNTED], RULES, &[]).await;
    let table = plane.job_table("jobs").await;
    plane.aws.create("runners", 0, 2, 1, vec![hook()]).await;
    let instance = &plane.aws.sole_in_service("runners").await;
    assert!(!token(&plane, instance).await.is_empty());
    // The window GitHub charged the token to, as GitHub tells it (free to ask).
    let reset = plane.github_rate_limit().await["reset"].as_i64().unwrap();
    let window = table
        .get_item()
        .table_name("jobs")
        .key("job_id", AttributeValue::N((-reset).to_string()))
        .send()
        .await
        .unwrap();
    let item = window.item().expect("the window's item");
    assert_eq!(item["github_requests"], AttributeValue::N("1".into()));
    assert_eq!(
        item["expires_at"],
        AttributeValue::N((reset + 3600).to_string()),
        "kept an hour past its window"
    );
}
