//! The record_metric Lambda, the real `warmfleet-record-metric` binary on the testbed:
//! counts from the GitHub fake and the Auto Scaling simulator, published to CloudWatch.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use common::control::{Function, Plane};
use common::fast_retries;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

const RECORD: Function = Function {
    name: "record-metric",
    binary: "warmfleet-record-metric",
    timeout: 30.0,
    retries: 0,
    env: &[("WARMFLEET_GROUPS", "runners")],
};

/// A registration token from the fake, as the registration Lambda would mint it.
async fn token(plane: &Plane) -> String {
    let client = plane.github.pat_client(fast_retries()).await;
    let t = client
        .registration_token(common::deadline(10))
        .await
        .unwrap();
    secrecy::ExposeSecret::expose_secret(&t.token).to_owned()
}

/// Keeps a runner online by polling for work (at `url`), as a listener does.
fn poll(url: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = reqwest::get(&url).await;
        }
    })
}

#[tokio::test]
async fn counts_idle_busy_protected_and_offline_runners_and_publishes_them() {
    let plane = Plane::start("1", None, &[RECORD], "", &["--offline-after", "2s"]).await;
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
    let t = token(&plane).await;
    let (idle, busy, protected, offline) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    // Busy: it takes a job only it can run.
    let (_, busy_session) = plane.github.fleet_runner(&t, busy, "runners").await;
    let job = plane.github.enqueue(&[busy.as_str()], 600.0).await;
    let message = plane.github.poll(&busy_session).await;
    assert_eq!(message["job"]["id"], job);
    let (_, s1) = plane.github.fleet_runner(&t, idle, "runners").await;
    let (_, s2) = plane.github.fleet_runner(&t, protected, "runners").await;
    let pollers = [
        poll(plane.github.poll_url(&s1)),
        poll(plane.github.poll_url(&s2)),
        poll(plane.github.poll_url(&busy_session)),
    ];
    plane.github.fleet_runner(&t, offline, "runners").await;
    // Another pool's runner: not this group's.
    plane.github.fleet_runner(&t, "i-elsewhere", "other").await;
    plane
        .aws
        .asg
        .set_instance_protection()
        .auto_scaling_group_name("runners")
        .instance_ids(protected)
        .protected_from_scale_in(true)
        .send()
        .await
        .unwrap();
    // Long enough for the silent runner to show offline.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let counts = plane.invoke_scheduled("record-metric").await.unwrap();
    for p in pollers {
        p.abort();
    }
    assert_eq!(
        counts,
        json!({"runners": {"idle": 1, "busy": 2, "offline": 1}})
    );

    let cw = aws_sdk_cloudwatch::Client::new(&plane.aws.config);
    let now = SystemTime::now();
    for (metric, want) in [
        ("IdleRunners", 1.0),
        ("BusyRunners", 2.0),
        ("OfflineRunners", 1.0),
    ] {
        let stats = cw
            .get_metric_statistics()
            .namespace("Warmfleet")
            .metric_name(metric)
            .dimensions(
                Dimension::builder()
                    .name("AutoScalingGroupName")
                    .value("runners")
                    .build(),
            )
            .start_time(DateTime::from(now - Duration::from_secs(3600)))
            .end_time(DateTime::from(now + Duration::from_secs(3600)))
            .period(60)
            .statistics(Statistic::Maximum)
            .send()
            .await
            .unwrap();
        let max = stats
            .datapoints()
            .iter()
            .filter_map(|d| d.maximum())
            .fold(f64::MIN, f64::max);
        assert_eq!(max, want, "{metric}");
    }
}

#[tokio::test]
async fn a_thousand_runners_take_ten_list_requests_and_none_cost_rate_limit_when_unchanged() {
    let plane = Plane::start("1", None, &[RECORD], "", &[]).await;
    plane.aws.create("runners", 0, 1, 0, vec![]).await;
    let t = token(&plane).await;
    for n in 0..1000 {
        let name = format!("r-{n:04}");
        plane
            .github
            .register_with(&t, &name, &["warmfleet", "runners", &name], false)
            .await;
    }
    let lists = |log: &[Value]| -> Vec<u64> {
        log.iter()
            .filter(|r| r["method"] == "GET" && r["path"] == "/orgs/acme/actions/runners")
            .map(|r| r["status"].as_u64().unwrap())
            .collect()
    };
    plane.invoke_scheduled("record-metric").await.unwrap();
    let first = lists(&plane.github.requests().await);
    assert_eq!(first.len(), 10, "{first:?}");
    assert!(first.iter().all(|s| *s == 200));
    plane.invoke_scheduled("record-metric").await.unwrap();
    let both = lists(&plane.github.requests().await);
    assert_eq!(
        &both[10..],
        [304; 10],
        "an unchanged list is answered 304, free of rate limit"
    );
}
