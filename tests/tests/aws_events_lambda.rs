//! EventBridge to Lambda: lifecycle events and schedules invoke a real `lambda_runtime`
//! binary through the testbed's Lambda Runtime API.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_autoscaling::types::LifecycleHookSpecification;
use common::aws::Aws;
use serde_json::{json, Value};

const LAMBDA: &str = env!("CARGO_BIN_EXE_testbed-lambda");

/// A world file with these functions (name, mode, timeout seconds, extra TOML) and rules.
fn world(functions: &[(&str, &str, f64, &str)], rules: &str) -> tempfile::NamedTempFile {
    let mut text = String::new();
    for (name, mode, timeout, extra) in functions {
        text.push_str(&format!(
            "[[function]]\nname = \"{name}\"\ncommand = \"{LAMBDA}\"\ntimeout_seconds = {timeout}\n\
             environment = {{ TESTBED_LAMBDA = \"{mode}\", TESTBED_LAMBDA_SLEEP_MS = \"1500\" }}\n{extra}\n"
        ));
    }
    text.push_str(rules);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

fn hook(name: &str) -> LifecycleHookSpecification {
    LifecycleHookSpecification::builder()
        .lifecycle_hook_name(name)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(600)
        .notification_metadata(format!("{{\"hook\":\"{name}\"}}"))
        .build()
}

fn of<'a>(invocations: &'a [Value], function: &str) -> Vec<&'a Value> {
    invocations
        .iter()
        .filter(|i| i["function"] == function)
        .collect()
}

const LIFECYCLE_RULES: &str = r#"
[[rule]]
name = "registration"
event_pattern = { source = ["aws.autoscaling"], detail-type = ["EC2 Instance-launch Lifecycle Action"], detail = { LifecycleHookName = ["registration"] } }
targets = ["complete"]

[[rule]]
name = "everything"
event_pattern = { source = ["aws.autoscaling"] }
targets = ["echo"]
"#;

#[tokio::test]
async fn a_lifecycle_event_invokes_the_function_its_rule_matches_by_hook_name() {
    let file = world(
        &[
            ("complete", "complete-hook", 30.0, ""),
            ("echo", "echo", 10.0, ""),
        ],
        LIFECYCLE_RULES,
    );
    let aws = Aws::start_with(None, "1", &["--world", file.path().to_str().unwrap()]).await;
    aws.create("g", 0, 2, 1, vec![hook("registration"), hook("audit")])
        .await;
    // The function completes `registration`; the test completes `audit` once it is pending.
    let echoed = aws
        .control_until("invocations", |all| {
            of(all, "echo")
                .iter()
                .filter(|i| i["outcome"] == "success")
                .count()
                == 2
        })
        .await;
    let instance = aws.instances("g").await[0].0.clone();
    let echoes = of(&echoed, "echo");
    let events: Vec<&Value> = echoes.iter().map(|i| &i["response"]["event"]).collect();
    let registration = events
        .iter()
        .find(|e| e["detail"]["LifecycleHookName"] == "registration")
        .unwrap();
    assert_eq!(registration["source"], "aws.autoscaling");
    assert_eq!(
        registration["detail-type"],
        "EC2 Instance-launch Lifecycle Action"
    );
    assert_eq!(registration["account"], "123456789012");
    assert_eq!(registration["detail"]["EC2InstanceId"], instance.as_str());
    assert_eq!(registration["detail"]["AutoScalingGroupName"], "g");
    assert_eq!(registration["detail"]["Origin"], "EC2");
    assert_eq!(registration["detail"]["Destination"], "AutoScalingGroup");
    assert_eq!(
        registration["detail"]["LifecycleTransition"],
        "autoscaling:EC2_INSTANCE_LAUNCHING"
    );
    assert_eq!(
        registration["detail"]["NotificationMetadata"],
        "{\"hook\":\"registration\"}"
    );
    assert_eq!(
        registration["detail"]["LifecycleActionToken"]
            .as_str()
            .unwrap()
            .len(),
        36
    );
    assert!(registration["resources"][0]
        .as_str()
        .unwrap()
        .ends_with("autoScalingGroupName/g"));

    aws.complete("g", "audit", &instance).await;
    aws.until("g", false, "in service", |i| {
        i.len() == 1 && i[0].1 == "InService"
    })
    .await;
    let all = aws.control("invocations").await;
    let completed = of(&all, "complete");
    assert_eq!(
        completed.len(),
        1,
        "only the registration hook reaches `complete`: {all:#?}"
    );
    assert_eq!(completed[0]["outcome"], "success");
    assert_eq!(completed[0]["response"]["completed"], instance.as_str());
    assert!(
        completed[0]["init_ms"].as_f64().unwrap() > 0.0,
        "a cold start records its init time"
    );
    assert!(completed[0]["duration_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn duplicate_deliveries_reach_the_function_twice() {
    let file = world(
        &[
            ("complete", "complete-hook", 30.0, "retries = 0"),
            ("echo", "echo", 10.0, ""),
        ],
        LIFECYCLE_RULES,
    );
    let aws = Aws::start_with(None, "1", &["--world", file.path().to_str().unwrap()]).await;
    let faults = reqwest::Client::new()
        .put(format!("{}/_testbed/aws/faults/events", aws.url))
        .json(&json!({"duplicate": 1.0, "max_delay_seconds": 0.5}))
        .send()
        .await
        .unwrap();
    assert!(faults.status().is_success());
    aws.create("g", 0, 2, 1, vec![hook("registration")]).await;
    aws.until("g", false, "in service", |i| {
        i.len() == 1 && i[0].1 == "InService"
    })
    .await;
    let all = aws
        .control_until("invocations", |all| {
            all.len() == 4 && all.iter().all(|i| i["ended_at"].is_number())
        })
        .await;
    let deliveries = aws.control("deliveries").await;
    assert_eq!(
        deliveries.len(),
        4,
        "two copies for each of two targets: {deliveries:#?}"
    );
    let completes = of(&all, "complete");
    assert_eq!(
        completes[0]["source"], completes[1]["source"],
        "the same event, twice"
    );
    let mut outcomes: Vec<&str> = completes
        .iter()
        .map(|i| i["outcome"].as_str().unwrap())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["error", "success"]);
    let failed = completes.iter().find(|i| i["outcome"] == "error").unwrap();
    assert!(
        failed["error"]
            .to_string()
            .contains("No active Lifecycle Action"),
        "the late copy finds the hook done: {failed:#}"
    );
}

#[tokio::test]
async fn a_schedule_fires_at_its_rate_in_world_time() {
    let rules = "[[rule]]\nname = \"tick\"\nschedule_expression = \"rate(1 minute)\"\ntargets = [\"echo\"]\n";
    let file = world(&[("echo", "echo", 10.0, "")], rules);
    // 60 world seconds a real second: a tick a second.
    let aws = Aws::start_with(None, "60", &["--world", file.path().to_str().unwrap()]).await;
    let all = aws
        .control_until("invocations", |all| {
            all.iter().filter(|i| i["outcome"] == "success").count() >= 3
        })
        .await;
    let done: Vec<&Value> = all
        .iter()
        .filter(|i| i["outcome"] == "success")
        .take(3)
        .collect();
    let times: Vec<chrono::DateTime<chrono::Utc>> = done
        .iter()
        .map(|i| {
            i["response"]["event"]["time"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!((times[1] - times[0]).num_seconds(), 60);
    assert_eq!((times[2] - times[1]).num_seconds(), 60);
    for (n, i) in done.iter().enumerate() {
        let queued = i["queued_at"].as_f64().unwrap();
        let due = 60.0 * (n as f64 + 1.0);
        // Never early; how late depends on the machine's load (the event times above show
        // the rate exactly).
        assert!(
            queued >= due,
            "invocation {n} queued at {queued}, before {due}"
        );
        assert_eq!(i["response"]["event"]["detail-type"], "Scheduled Event");
        assert_eq!(i["response"]["event"]["source"], "aws.events");
    }
    // One warm process served them all; only the first was a cold start.
    assert_eq!(done[0]["pid"], done[2]["pid"]);
    assert!(done[0]["init_ms"].is_number());
    assert!(done[1]["init_ms"].is_null() && done[2]["init_ms"].is_null());
}

#[tokio::test]
async fn a_function_that_times_out_or_crashes_gets_a_new_process_next_time() {
    let rules = "[[rule]]\nname = \"tick\"\nschedule_expression = \"rate(1 minute)\"\n\
                 targets = [\"slow\", \"crash\", \"broken\"]\n";
    // Timeout 6 world seconds = 0.2 s real at this scale; the function sleeps 1.5 s.
    let file = world(
        &[
            ("slow", "sleep", 6.0, "retries = 0"),
            ("crash", "crash", 10.0, "retries = 0"),
            ("broken", "init-error", 10.0, "retries = 0"),
        ],
        rules,
    );
    let aws = Aws::start_with(None, "30", &["--world", file.path().to_str().unwrap()]).await;
    let all = aws
        .control_until("invocations", |all| {
            ["slow", "crash", "broken"].iter().all(|f| {
                of(all, f)
                    .iter()
                    .filter(|i| i["ended_at"].is_number())
                    .count()
                    >= 2
            })
        })
        .await;
    for (function, outcome) in [
        ("slow", "timeout"),
        ("crash", "crash"),
        ("broken", "init_error"),
    ] {
        let runs: Vec<&Value> = of(&all, function)
            .into_iter()
            .filter(|i| i["ended_at"].is_number())
            .take(2)
            .collect();
        assert_eq!(runs.len(), 2, "{function}: {all:#?}");
        for r in &runs {
            assert_eq!(r["outcome"], outcome, "{r:#}");
            assert!(r["init_ms"].is_number(), "each run is a cold start: {r:#}");
        }
        assert_ne!(
            runs[0]["pid"], runs[1]["pid"],
            "{function}: a new process each time"
        );
    }
    let broken = of(&all, "broken");
    assert_eq!(
        broken[0]["error"]["errorMessage"],
        "WARMFLEET_GROUP is not set"
    );
    let slow = of(&all, "slow");
    assert!(slow[0]["error"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("Task timed out after 6.00 seconds"));
}

#[tokio::test]
async fn an_idle_process_that_died_is_replaced_not_blamed() {
    let rules = "[[rule]]\nname = \"tick\"\nschedule_expression = \"rate(1 minute)\"\ntargets = [\"echo\"]\n";
    let file = world(&[("echo", "echo", 10.0, "retries = 0")], rules);
    let aws = Aws::start_with(None, "60", &["--world", file.path().to_str().unwrap()]).await;
    let first = aws
        .control_until("invocations", |all| {
            all.iter().any(|i| i["outcome"] == "success")
        })
        .await;
    let pid = first[0]["pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let all = aws
        .control_until("invocations", |all| {
            all.iter().filter(|i| i["outcome"] == "success").count() >= 2
        })
        .await;
    assert!(all.iter().all(|i| i["outcome"] != "crash"), "{all:#?}");
    let second = all
        .iter()
        .filter(|i| i["outcome"] == "success")
        .nth(1)
        .unwrap();
    assert_ne!(second["pid"].as_u64().unwrap(), pid);
    assert!(second["init_ms"].is_number(), "a cold start");
}

#[tokio::test]
async fn the_invoke_api_answers_with_the_function_result_or_its_error() {
    let file = world(
        &[
            ("echo", "echo", 10.0, ""),
            ("fail", "fail", 10.0, "retries = 0"),
        ],
        "",
    );
    let aws = Aws::start_with(None, "1", &["--world", file.path().to_str().unwrap()]).await;
    let http = reqwest::Client::new();
    let invoke = |name: &str| {
        http.post(format!(
            "{}/2015-03-31/functions/{name}/invocations",
            aws.url
        ))
        .body(r#"{"hello": "world"}"#)
        .send()
    };
    let ok = invoke("echo").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().get("x-amz-function-error").is_none());
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["event"], json!({"hello": "world"}));
    let failed = invoke("fail").await.unwrap();
    assert_eq!(failed.status(), 200);
    assert_eq!(failed.headers()["x-amz-function-error"], "Unhandled");
    let body: Value = failed.json().await.unwrap();
    assert_eq!(body["errorMessage"], "asked to fail");
    // Lambda takes up to 6 MB: 3 MB goes through (and back), 7 MB is refused as AWS does.
    let big = |bytes: usize| {
        http.post(format!("{}/2015-03-31/functions/echo/invocations", aws.url))
            .body(json!({ "padding": "x".repeat(bytes) }).to_string())
            .send()
    };
    let ok = big(3 << 20).await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(
        body["event"]["padding"].as_str().map(str::len),
        Some(3 << 20)
    );
    let refused = big(7 << 20).await.unwrap();
    assert_eq!(refused.status(), 413);
    assert_eq!(
        refused.headers()["x-amzn-errortype"],
        "RequestTooLargeException"
    );
    let missing = invoke("nope").await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["x-amzn-errortype"],
        "ResourceNotFoundException"
    );
}
