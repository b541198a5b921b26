//! CloudWatch with aws-sdk-cloudwatch (RPC v2 CBOR), awsJson1.0 and awsQuery; alarms that
//! run step scaling policies on the group.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_autoscaling::types::StepAdjustment;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, HistoryItemType, MetricDatum, StateValue, Statistic,
};
use common::aws::Aws;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

fn datum(value: f64) -> MetricDatum {
    MetricDatum::builder()
        .metric_name("IdleRunners")
        .dimensions(
            Dimension::builder()
                .name("AutoScalingGroupName")
                .value("g")
                .build(),
        )
        .value(value)
        .build()
}

/// A GetMetricData query, `idle`: group g's IdleRunners, Maximum over `period` seconds.
fn idle_query(period: i32) -> aws_sdk_cloudwatch::types::MetricDataQuery {
    aws_sdk_cloudwatch::types::MetricDataQuery::builder()
        .id("idle")
        .metric_stat(
            aws_sdk_cloudwatch::types::MetricStat::builder()
                .metric(
                    aws_sdk_cloudwatch::types::Metric::builder()
                        .namespace("Warmfleet")
                        .metric_name("IdleRunners")
                        .dimensions(dimension())
                        .build(),
                )
                .period(period)
                .stat("Maximum")
                .build(),
        )
        .build()
}

fn dimension() -> Dimension {
    Dimension::builder()
        .name("AutoScalingGroupName")
        .value("g")
        .build()
}

#[tokio::test]
async fn metric_data_lands_from_cbor_json_and_query_clients() {
    let aws = Aws::start(None, "1").await;
    let cw = aws_sdk_cloudwatch::Client::new(&aws.config);
    cw.put_metric_data()
        .namespace("Warmfleet")
        .metric_data(datum(2.0))
        .metric_data(datum(4.0))
        .send()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let json = http
        .post(&aws.url)
        .header("x-amz-target", "GraniteServiceVersion20100801.PutMetricData")
        .header("content-type", "application/x-amz-json-1.0")
        .body(r#"{"Namespace":"Warmfleet","MetricData":[{"MetricName":"IdleRunners","Value":6,"Dimensions":[{"Name":"AutoScalingGroupName","Value":"g"}]}]}"#)
        .send()
        .await
        .unwrap();
    assert!(json.status().is_success(), "{}", json.text().await.unwrap());
    let query = http
        .post(&aws.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Action=PutMetricData&Version=2010-08-01&Namespace=Warmfleet&MetricData.member.1.MetricName=IdleRunners&MetricData.member.1.Value=8&MetricData.member.1.Dimensions.member.1.Name=AutoScalingGroupName&MetricData.member.1.Dimensions.member.1.Value=g")
        .send()
        .await
        .unwrap();
    let text = query.text().await.unwrap();
    assert!(text.contains("<PutMetricDataResponse"), "{text}");

    let now = SystemTime::now();
    let stats = cw
        .get_metric_statistics()
        .namespace("Warmfleet")
        .metric_name("IdleRunners")
        .dimensions(dimension())
        .start_time(DateTime::from(now - Duration::from_secs(600)))
        .end_time(DateTime::from(now + Duration::from_secs(600)))
        .period(3600)
        .statistics(Statistic::Sum)
        .statistics(Statistic::SampleCount)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .unwrap();
    let points = stats.datapoints();
    let sum: f64 = points.iter().map(|p| p.sum().unwrap()).sum();
    let count: f64 = points.iter().map(|p| p.sample_count().unwrap()).sum();
    assert_eq!(
        (sum, count),
        (20.0, 4.0),
        "all four values, from three protocols: {points:?}"
    );

    let data = cw
        .get_metric_data()
        .metric_data_queries(idle_query(60))
        .start_time(DateTime::from(now - Duration::from_secs(600)))
        .end_time(DateTime::from(now + Duration::from_secs(600)))
        .send()
        .await
        .unwrap();
    let result = &data.metric_data_results()[0];
    assert_eq!(result.id(), Some("idle"));
    assert!(result.values().contains(&8.0), "{result:?}");
    assert!(!result.timestamps().is_empty());

    let err = cw
        .put_metric_data()
        .namespace("AWS/EC2")
        .metric_data(datum(1.0))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_parameter_value_exception(), "{err:?}");
}

/// The product's adapter (record_metric's, the sweep's, the agent's) publishes its counts at
/// high resolution: stamped to the second, as a 10-second scale-in alarm needs them; standard
/// data would be filed under its minute's start.
#[tokio::test]
async fn the_adapters_counts_are_stamped_to_the_second() {
    use warmfleet_core::ports::Metrics;
    let aws = Aws::start(None, "1").await;
    let cw = aws_sdk_cloudwatch::Client::new(&aws.config);
    let metrics = warmfleet_core::aws::CloudWatch::new(&aws.config);
    let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let before = SystemTime::now();
    metrics.publish("g", &[("IdleRunners", 3.0)]).await.unwrap();
    let after = SystemTime::now();
    let data = cw
        .get_metric_data()
        .metric_data_queries(idle_query(1))
        .start_time(DateTime::from(before - Duration::from_secs(120)))
        .end_time(DateTime::from(after + Duration::from_secs(60)))
        .send()
        .await
        .unwrap();
    let result = &data.metric_data_results()[0];
    assert_eq!(result.values(), [3.0], "{result:?}");
    let at = result.timestamps()[0].secs();
    assert!(
        (unix(before)..=unix(after)).contains(&at),
        "stamped {at}, published between {} and {}: {result:?}",
        unix(before),
        unix(after)
    );
}

/// An alarm on IdleRunners < 1 for 2 of 2 minutes, of group `group`.
async fn alarm(
    cw: &aws_sdk_cloudwatch::Client,
    name: &str,
    group: &str,
    missing: &str,
    actions: Option<&str>,
) {
    cw.put_metric_alarm()
        .alarm_name(name)
        .namespace("Warmfleet")
        .metric_name("IdleRunners")
        .dimensions(
            Dimension::builder()
                .name("AutoScalingGroupName")
                .value(group)
                .build(),
        )
        .statistic(Statistic::Minimum)
        .period(60)
        .evaluation_periods(2)
        .datapoints_to_alarm(2)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::LessThanThreshold)
        .treat_missing_data(missing)
        .set_alarm_actions(actions.map(|a| vec![a.to_owned()]))
        .send()
        .await
        .unwrap();
}

async fn state(cw: &aws_sdk_cloudwatch::Client, name: &str) -> StateValue {
    let out = cw.describe_alarms().alarm_names(name).send().await.unwrap();
    out.metric_alarms()[0].state_value().unwrap().clone()
}

#[tokio::test]
async fn an_alarm_below_its_threshold_runs_the_step_policy_and_the_group_grows() {
    // A world minute every real second.
    let aws = Aws::start(None, "60").await;
    aws.create("g", 0, 5, 1, vec![]).await;
    let policy = aws
        .asg
        .put_scaling_policy()
        .auto_scaling_group_name("g")
        .policy_name("scale-out")
        .policy_type("StepScaling")
        .adjustment_type("ChangeInCapacity")
        .estimated_instance_warmup(3600)
        .step_adjustments(
            StepAdjustment::builder()
                .metric_interval_upper_bound(0.0)
                .scaling_adjustment(1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let arn = policy.policy_arn().unwrap().to_owned();
    let cw = aws_sdk_cloudwatch::Client::new(&aws.config);
    alarm(&cw, "idle-low", "g", "missing", Some(&arn)).await;
    // Alarms on a group that reports nothing.
    alarm(&cw, "no-data-missing", "silent", "missing", None).await;
    alarm(&cw, "no-data-breaching", "silent", "breaching", None).await;
    alarm(&cw, "no-data-not-breaching", "silent", "notBreaching", None).await;
    assert_eq!(state(&cw, "idle-low").await, StateValue::InsufficientData);
    // Out of its initial state, so that going back to INSUFFICIENT_DATA shows evaluation.
    cw.set_alarm_state()
        .alarm_name("no-data-missing")
        .state_value(StateValue::Ok)
        .state_reason("test")
        .send()
        .await
        .unwrap();
    // Read from its history: at a world minute a real second, the next evaluation may already
    // have moved it back.
    let history = cw
        .describe_alarm_history()
        .alarm_name("no-data-missing")
        .history_item_type(HistoryItemType::StateUpdate)
        .send()
        .await
        .unwrap();
    let updates: Vec<&str> = history
        .alarm_history_items()
        .iter()
        .filter_map(|h| h.history_summary())
        .collect();
    assert!(
        updates.contains(&"Alarm updated from INSUFFICIENT_DATA to OK"),
        "{updates:?}"
    );

    // No idle runner, reported every half world minute.
    let until = Instant::now() + Duration::from_secs(20);
    let other = aws_sdk_cloudwatch::Client::new(&aws.config);
    let publisher = tokio::spawn(async move {
        loop {
            other
                .put_metric_data()
                .namespace("Warmfleet")
                .metric_data(datum(0.0))
                .send()
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    loop {
        if state(&cw, "idle-low").await == StateValue::Alarm {
            break;
        }
        assert!(Instant::now() < until, "the alarm never went off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let desired = || async {
        let out = aws
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names("g")
            .send()
            .await
            .unwrap();
        out.auto_scaling_groups()[0].desired_capacity().unwrap()
    };
    let until = Instant::now() + Duration::from_secs(5);
    while desired().await != 2 {
        assert!(Instant::now() < until, "the policy never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The alarm stays in ALARM and its action repeats each minute, but the instance added is
    // still warming up: the step adds nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    publisher.abort();
    assert_eq!(desired().await, 2);

    let alarms = cw
        .describe_alarms()
        .alarm_names("idle-low")
        .send()
        .await
        .unwrap();
    let reason = alarms.metric_alarms()[0].state_reason().unwrap();
    assert!(
        reason.starts_with("Threshold Crossed: 2 out of the last 2 datapoints"),
        "{reason}"
    );
    let history = cw
        .describe_alarm_history()
        .alarm_name("idle-low")
        .send()
        .await
        .unwrap();
    let kinds: Vec<&str> = history
        .alarm_history_items()
        .iter()
        .map(|h| h.history_item_type().unwrap().as_str())
        .collect();
    assert!(
        kinds.contains(&"StateUpdate") && kinds.contains(&"Action"),
        "{kinds:?}"
    );
    let activities = aws
        .asg
        .describe_scaling_activities()
        .auto_scaling_group_name("g")
        .send()
        .await
        .unwrap();
    let causes: Vec<&str> = activities
        .activities()
        .iter()
        .filter_map(|a| a.cause())
        .collect();
    let by_alarm: Vec<&&str> = causes
        .iter()
        .filter(|c| c.contains("monitor alarm idle-low in state ALARM triggered policy scale-out"))
        .collect();
    assert_eq!(by_alarm.len(), 1, "{causes:#?}");
    assert!(by_alarm[0].contains("from 1 to 2"), "{causes:#?}");
    let policies = aws
        .asg
        .describe_policies()
        .auto_scaling_group_name("g")
        .send()
        .await
        .unwrap();
    let p = &policies.scaling_policies()[0];
    assert_eq!(p.alarms()[0].alarm_name(), Some("idle-low"));
    assert_eq!(
        p.step_adjustments()[0].metric_interval_upper_bound(),
        Some(0.0)
    );

    // With no data at all, each alarm does what its TreatMissingData says.
    assert_eq!(state(&cw, "no-data-breaching").await, StateValue::Alarm);
    assert_eq!(state(&cw, "no-data-not-breaching").await, StateValue::Ok);
    assert_eq!(
        state(&cw, "no-data-missing").await,
        StateValue::InsufficientData
    );
}
