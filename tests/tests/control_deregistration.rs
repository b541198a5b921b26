//! The deregistration Lambda, the real `warmfleet-deregistration` binary on the testbed:
//! the drain sent over SSM to the instance leaving service, the sweep that finishes it, and
//! the sweep's reconciliation of runners and secrets.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_autoscaling::types::LifecycleHookSpecification;
use aws_sdk_cloudwatch::types::Statistic;
use aws_sdk_dynamodb::types::AttributeValue;
use common::control::{Function, Plane};
use common::fast_retries;
use serde_json::{json, Value};
use std::time::Duration;
use warmfleet_core::ports::Occupancy;
use warmfleet_testbed::agent_setup::lifecycle_hooks;

/// What SSM runs instead of `warmfleet-agent drain` until the agent exists: it records that
/// it ran (the appended `--timeout` arguments land in `$@`).
const DRAIN: &str = "sh -c 'echo drained \"$@\" > drained.txt' drain";

const RULES: &str = r#"
[[rule]]
name = "deregistration"
event_pattern = { source = ["aws.autoscaling"], detail-type = ["EC2 Instance-terminate Lifecycle Action"], detail = { LifecycleHookName = ["deregistration"] } }
targets = ["deregistration"]

[[rule]]
name = "registration"
event_pattern = { source = ["aws.autoscaling"], detail-type = ["EC2 Instance-launch Lifecycle Action"], detail = { LifecycleHookName = ["registration"] } }
targets = ["registration"]
"#;

fn hooks() -> Vec<LifecycleHookSpecification> {
    lifecycle_hooks(&["registration", "deregistration"])
}

const DEREGISTRATION: Function = Function {
    name: "deregistration",
    binary: "warmfleet-deregistration",
    timeout: 30.0,
    retries: 0,
    env: &[
        ("WARMFLEET_GROUPS", "runners"),
        ("WARMFLEET_DRAIN_COMMAND", DRAIN),
    ],
};

async fn start() -> Plane {
    start_with(&[]).await
}

/// With the GitHub fake's own arguments.
async fn start_with(github_args: &[&str]) -> Plane {
    let functions = [
        DEREGISTRATION,
        Function {
            name: "registration",
            binary: "warmfleet-registration",
            timeout: 30.0,
            retries: 0,
            env: &[],
        },
    ];
    Plane::start("1", Some("exec sleep 600"), &functions, RULES, github_args).await
}

#[tokio::test]
async fn scale_in_drains_over_ssm_and_the_sweep_completes_a_finished_drain() {
    let plane = start().await;
    plane.aws.create("runners", 0, 2, 1, hooks()).await;
    let instance = plane.aws.sole_in_service("runners").await;
    plane.aws.set_desired("runners", 0).await;
    plane
        .aws
        .until("runners", false, "draining", |i| {
            i.len() == 1 && i[0].1 == "Terminating:Wait"
        })
        .await;
    let calls = plane.until_ended("deregistration", 1).await;
    let outcome = calls[0]["response"]["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("Draining"), "{calls:#?}");
    // The agent got a remove token in its own secret, and the drain ran in the instance.
    let secret = plane.instance_secret("runners", &instance).await.unwrap();
    assert!(secret.remove_token.is_some());
    let root = plane.aws.instance(&instance).await["root"]
        .as_str()
        .unwrap()
        .to_owned();
    let drained = std::path::Path::new(&root).join("drained.txt");
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !drained.exists() {
        assert!(tokio::time::Instant::now() < until, "the drain never ran");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&drained).unwrap(),
        "drained --timeout 86400s\n"
    );
    // Here the agent would complete the hook. It did not: the sweep finds the drain
    // finished and completes it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let summary = plane.invoke_scheduled("deregistration").await.unwrap();
    assert_eq!(summary["drains_completed"], 1, "{summary:#}");
    plane
        .aws
        .until("runners", false, "terminated", |i| i.is_empty())
        .await;
    // The secret outlives the instance: it ties a runner the agent might have left to this
    // group. The next sweep, with the instance gone, deletes it.
    assert!(plane.instance_secret("runners", &instance).await.is_some());
    let summary = plane.invoke_scheduled("deregistration").await.unwrap();
    assert_eq!(summary["secrets_deleted"], 1, "{summary:#}");
    assert!(plane.instance_secret("runners", &instance).await.is_none());
}

#[tokio::test]
async fn the_sweep_removes_orphans_keeps_busy_runners_and_survives_a_failing_item() {
    let plane = start().await;
    let client = plane.github.pat_client(fast_retries()).await;
    let t = client
        .registration_token(common::deadline(10))
        .await
        .unwrap();
    let t = secrecy::ExposeSecret::expose_secret(&t.token).to_owned();
    let mut ids = vec![];
    for name in ["i-gone-1", "i-gone-2", "i-gone-3"] {
        let (id, _) = plane
            .github
            .register_with(&t, name, &["warmfleet", "runners", name], false)
            .await;
        ids.push(id);
    }
    // A busy orphan: registered, in a session, running a job.
    let (_, sid) = plane
        .github
        .fleet_runner(&t, "i-gone-busy", "runners")
        .await;
    plane.github.enqueue(&["i-gone-busy"], 600.0).await;
    let message = plane.github.poll(&sid).await;
    assert!(message["job"]["id"].is_number(), "the orphan took its job");
    // An orphan secret, and one runner GitHub will fail to delete.
    plane
        .secrets
        .create_secret()
        .name("warmfleet/runners/i-gone-9")
        .secret_string("{}")
        .send()
        .await
        .unwrap();
    plane
        .github
        .fault(json!({"path": format!("/orgs/acme/actions/runners/{}", ids[1]), "status": 500, "count": 1000}))
        .await;
    plane.aws.create("runners", 0, 1, 0, vec![]).await;

    let summary = plane.invoke_scheduled("deregistration").await.unwrap();
    assert_eq!(summary["runners_deleted"], 2, "{summary:#}");
    assert_eq!(summary["busy_runners_kept"], 1, "{summary:#}");
    assert_eq!(summary["secrets_deleted"], 1, "{summary:#}");
    assert_eq!(summary["errors"]["GitHub"], 1, "{summary:#}");
    let left: Vec<String> = client
        .list_runners(None, common::deadline(10))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(left, ["i-gone-2", "i-gone-busy"]);
    assert!(plane.instance_secret("runners", "i-gone-9").await.is_none());
}

#[tokio::test]
async fn the_sweep_publishes_offline_runners_and_lists_a_thousand_in_pages_free_when_unchanged() {
    let plane = start_with(&["--offline-after", "2s"]).await;
    plane.aws.create("runners", 0, 5, 2, vec![]).await;
    let ids: Vec<String> = plane
        .aws
        .until("runners", false, "in service", |i| {
            i.len() == 2 && i.iter().all(|x| x.1 == "InService")
        })
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let client = plane.github.pat_client(fast_retries()).await;
    let t = client
        .registration_token(common::deadline(10))
        .await
        .unwrap();
    let t = secrecy::ExposeSecret::expose_secret(&t.token).to_owned();
    // One runner listens; the other's instance is in service but its runner went silent.
    let (_, session) = plane.github.fleet_runner(&t, &ids[0], "runners").await;
    let url = plane.github.poll_url(&session);
    let listener = tokio::spawn(async move {
        loop {
            let _ = reqwest::get(&url).await;
        }
    });
    plane.github.fleet_runner(&t, &ids[1], "runners").await;
    // A thousand runners of another pool: not this group's, but on the pages it reads.
    for n in 0..1000 {
        let name = format!("r-{n:04}");
        plane
            .github
            .register_with(&t, &name, &["warmfleet", "elsewhere", &name], false)
            .await;
    }
    // Long enough for the silent runner to show offline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lists = |log: &[Value]| -> Vec<u64> {
        log.iter()
            .filter(|r| r["method"] == "GET" && r["path"] == "/orgs/acme/actions/runners")
            .map(|r| r["status"].as_u64().unwrap())
            .collect()
    };
    let before = lists(&plane.github.requests().await).len();

    let summary = plane.invoke_scheduled("deregistration").await.unwrap();
    assert_eq!(summary["listing"], "listed", "{summary:#}");
    assert_eq!(summary["offline_runners"], 1, "{summary:#}");
    assert_eq!(summary["orphan_runners"], 0, "{summary:#}");
    assert_eq!(summary["runners_deleted"], 0, "{summary:#}");
    let first = lists(&plane.github.requests().await)[before..].to_vec();
    assert_eq!(first, [200; 11], "1,002 runners in pages of 100");
    plane.invoke_scheduled("deregistration").await.unwrap();
    let second = lists(&plane.github.requests().await)[before + 11..].to_vec();
    listener.abort();
    assert_eq!(second, [304; 11], "an unchanged list is free of rate limit");

    for (metric, check) in [
        ("OfflineRunners", (|v: f64| v == 1.0) as fn(f64) -> bool),
        ("OrphanRunners", |v| v == 0.0),
        // GitHub charges neither the 304s nor reading the rate limit.
        ("GitHubApiCalls", |v| v == 0.0),
        ("GitHubRateLimitRemainingPercent", |v| v > 50.0 && v < 100.0),
    ] {
        let values = plane.metric("runners", metric, Statistic::Minimum).await;
        let min = values.into_iter().fold(f64::MAX, f64::min);
        assert!(check(min), "{metric}: {min}");
    }
}

#[tokio::test]
async fn the_sweep_puts_its_listing_off_once_the_deployments_account_holds_its_share() {
    let functions = [Function {
        env: &[
            ("WARMFLEET_GROUPS", "runners"),
            ("WARMFLEET_DRAIN_COMMAND", DRAIN),
            ("WARMFLEET_JOB_TABLE", "jobs"),
        ],
        ..DEREGISTRATION
    }];
    let plane = Plane::start("1", None, &functions, "", &[]).await;
    let table = plane.job_table("jobs").await;
    plane.aws.create("runners", 0, 2, 0, vec![]).await;
    let summary = plane.invoke_scheduled("deregistration").await.unwrap();
    assert_eq!(
        (&summary["listing"], &summary["github_spent"]),
        (&json!("listed"), &json!(0)),
        "{summary:#}"
    );
    // GitHub's window, as GitHub tells it (free to ask).
    let core = plane.github_rate_limit().await;
    let (limit, reset) = (
        core["limit"].as_u64().unwrap(),
        core["reset"].as_i64().unwrap(),
    );
    let key = AttributeValue::N((-reset).to_string());
    let spent = || async {
        let item = table
            .get_item()
            .table_name("jobs")
            .key("job_id", key.clone())
            .send()
            .await
            .unwrap();
        item.item().unwrap()["github_requests"]
            .as_n()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    // Its page, in the account.
    assert_eq!(spent().await, 1);
    // Launches and drains spend the rest of the deployment's share (WARMFLEET_GITHUB_SHARE,
    // 0.2): the next listing waits, though GitHub itself has plenty left.
    let share = limit / 5;
    table
        .update_item()
        .table_name("jobs")
        .key("job_id", key.clone())
        .update_expression("ADD github_requests :n")
        .expression_attribute_values(":n", AttributeValue::N((share - 1).to_string()))
        .send()
        .await
        .unwrap();
    let summary = plane.invoke_scheduled("deregistration").await.unwrap();
    assert_eq!(
        (&summary["listing"], &summary["github_spent"]),
        (&json!("deferred"), &json!(share)),
        "{summary:#}"
    );
    assert_eq!(spent().await, share, "a deferred sweep spends nothing");
}

#[tokio::test]
async fn the_sweep_deletes_the_runner_records_of_instances_gone() {
    let functions = [Function {
        env: &[
            ("WARMFLEET_GROUPS", "runners"),
            ("WARMFLEET_DRAIN_COMMAND", DRAIN),
            ("WARMFLEET_RUNNER_TABLE", "runner-table"),
        ],
        ..DEREGISTRATION
    }];
    let plane = Plane::start("1", None, &functions, "", &[]).await;
    let table = plane.runner_table("runner-table").await;
    plane.aws.create("runners", 0, 2, 1, vec![]).await;
    let live = plane.aws.sole_in_service("runners").await;
    table.record(&live, "runners", true).await.unwrap();
    table.record("i-0gone", "runners", false).await.unwrap();
    table.record("i-0gone-busy", "runners", true).await.unwrap();
    // Another deployment's group sharing the table is not this sweep's to judge.
    table.record("i-0elsewhere", "other", true).await.unwrap();
    let summary = plane.invoke_scheduled("deregistration").await.unwrap();
    assert_eq!(summary["records_deleted"], 2, "{summary:#}");
    let mut left = table.recorded().await.unwrap();
    left.sort();
    assert_eq!(
        left,
        [
            (live, "runners".to_owned()),
            ("i-0elsewhere".to_owned(), "other".to_owned())
        ]
    );
}
