//! CloudWatch metrics and metric alarms: what the record_metric Lambda publishes and what
//! scales the group. `wire` speaks the protocols; this module is the model.
//!
//! Alarms are evaluated as AWS documents it, simplified where stated: every `min(period,
//! 60 s)` of world time, over the last `EvaluationPeriods` complete periods (aligned to the
//! period, as AWS aligns them to the minute), each period's statistic compared with the
//! threshold. Missing periods count per `TreatMissingData`: `breaching` and `notBreaching`
//! as named; `missing` and `ignore` leave them out, and with no datapoint at all the alarm
//! goes to INSUFFICIENT_DATA (`missing`) or stays as it is (`ignore`). The alarm is in ALARM
//! when at least `DatapointsToAlarm` periods breach, else OK. Actions run when the state
//! changes, and Auto Scaling actions again once a minute while it stays, as AWS does ("the
//! alarm continues to invoke the action once per minute that the alarm remains in the new
//! state": for a one-minute period, every evaluation; for a 10-second one, every sixth).
//! Timestamps are world time (see `Timestamps`): a client that stamps its own data under a
//! `--time-scale` should leave `Timestamp` out, so the receipt time counts.

pub mod wire;

use super::{ACCOUNT, REGION};
use crate::aws::protocol::json::{strings, JsonError};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MetricKey {
    pub namespace: String,
    pub name: String,
    pub dimensions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy)]
struct Datapoint {
    /// Epoch seconds.
    at: f64,
    sum: f64,
    count: f64,
    min: f64,
    max: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    Average,
    Sum,
    Minimum,
    Maximum,
    SampleCount,
}

impl Statistic {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Average" => Statistic::Average,
            "Sum" => Statistic::Sum,
            "Minimum" => Statistic::Minimum,
            "Maximum" => Statistic::Maximum,
            "SampleCount" => Statistic::SampleCount,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Statistic::Average => "Average",
            Statistic::Sum => "Sum",
            Statistic::Minimum => "Minimum",
            Statistic::Maximum => "Maximum",
            Statistic::SampleCount => "SampleCount",
        }
    }

    fn of(self, points: &[&Datapoint]) -> Option<f64> {
        if points.is_empty() {
            return None;
        }
        let sum: f64 = points.iter().map(|p| p.sum).sum();
        let count: f64 = points.iter().map(|p| p.count).sum();
        Some(match self {
            Statistic::Average => sum / count,
            Statistic::Sum => sum,
            Statistic::SampleCount => count,
            Statistic::Minimum => points.iter().map(|p| p.min).fold(f64::INFINITY, f64::min),
            Statistic::Maximum => points
                .iter()
                .map(|p| p.max)
                .fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

const COMPARISONS: &[&str] = &[
    "GreaterThanOrEqualToThreshold",
    "GreaterThanThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
];

fn breaches(comparison: &str, v: f64, threshold: f64) -> bool {
    match comparison {
        "GreaterThanOrEqualToThreshold" => v >= threshold,
        "GreaterThanThreshold" => v > threshold,
        "LessThanThreshold" => v < threshold,
        _ => v <= threshold,
    }
}

fn comparison_words(comparison: &str) -> &'static str {
    match comparison {
        "GreaterThanOrEqualToThreshold" => "greater than or equal to",
        "GreaterThanThreshold" => "greater than",
        "LessThanThreshold" => "less than",
        _ => "less than or equal to",
    }
}

#[derive(Debug, Clone)]
pub struct Alarm {
    pub name: String,
    pub arn: String,
    description: Option<String>,
    actions_enabled: bool,
    ok_actions: Vec<String>,
    alarm_actions: Vec<String>,
    insufficient_actions: Vec<String>,
    pub metric: MetricKey,
    statistic: Statistic,
    period: u64,
    evaluation_periods: u32,
    datapoints_to_alarm: u32,
    threshold: f64,
    comparison: String,
    treat_missing: String,
    pub state: String,
    reason: String,
    reason_data: Option<String>,
    state_updated: f64,
    /// When the actions last ran (Auto Scaling actions repeat once a minute).
    actions_ran: f64,
    config_updated: f64,
    next_evaluation: f64,
}

impl Alarm {
    pub fn actions(&self) -> impl Iterator<Item = &String> {
        self.ok_actions
            .iter()
            .chain(&self.alarm_actions)
            .chain(&self.insufficient_actions)
    }
}

/// What moved an alarm to a state.
#[derive(Debug, Clone, Copy)]
enum By {
    /// An evaluation, with the most recent period's value.
    Evaluation { latest: Option<f64> },
    /// `SetAlarmState`.
    Hand,
}

/// An alarm action to take: the world runs Auto Scaling policies and records the rest.
#[derive(Debug, Clone)]
pub struct ActionRun {
    pub alarm: String,
    pub arn: String,
    pub state: String,
    /// The most recent period's value, for step policies.
    pub metric_value: Option<f64>,
    pub threshold: f64,
}

#[derive(Debug, Clone)]
struct HistoryItem {
    alarm: String,
    at: f64,
    kind: &'static str,
    summary: String,
    data: Value,
}

#[derive(Default)]
pub struct CloudWatch {
    metrics: BTreeMap<MetricKey, Vec<Datapoint>>,
    alarms: BTreeMap<String, Alarm>,
    history: Vec<HistoryItem>,
}

fn invalid(message: impl Into<String>) -> JsonError {
    JsonError::new("InvalidParameterValue", message)
}

fn missing(name: &str) -> JsonError {
    JsonError::new(
        "MissingParameter",
        format!("The parameter {name} is required."),
    )
}

/// A number from any protocol: JSON and CBOR send numbers, awsQuery sends text.
fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn text<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str)
}

fn required_text<'a>(input: &'a Value, name: &str) -> Result<&'a str, JsonError> {
    text(input, name).ok_or_else(|| missing(name))
}

fn flag(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A timestamp from any protocol: epoch seconds, or ISO 8601 text (awsQuery).
fn time(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis() as f64 / 1000.0)
            .or_else(|| s.parse().ok()),
        _ => None,
    }
}

fn list(input: &Value, name: &str) -> Vec<Value> {
    input
        .get(name)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn dimensions(input: &Value) -> Result<BTreeMap<String, String>, JsonError> {
    let mut out = BTreeMap::new();
    for d in list(input, "Dimensions") {
        let (Some(n), Some(v)) = (text(&d, "Name"), text(&d, "Value")) else {
            return Err(invalid("every dimension needs a Name and a Value"));
        };
        out.insert(n.to_owned(), v.to_owned());
    }
    if out.len() > 30 {
        return Err(invalid("at most 30 dimensions"));
    }
    Ok(out)
}

fn metric_key(input: &Value) -> Result<MetricKey, JsonError> {
    Ok(MetricKey {
        namespace: required_text(input, "Namespace")?.to_owned(),
        name: required_text(input, "MetricName")?.to_owned(),
        dimensions: dimensions(input)?,
    })
}

fn dimensions_out(d: &BTreeMap<String, String>) -> Value {
    Value::Array(
        d.iter()
            .map(|(k, v)| json!({"Name": k, "Value": v}))
            .collect(),
    )
}

fn period_ok(p: u64) -> bool {
    matches!(p, 1 | 5 | 10 | 20 | 30) || (p >= 60 && p % 60 == 0)
}

/// One period's statistic: the datapoints in `[start, start + period)`.
fn period_value(points: &[Datapoint], start: f64, period: f64, stat: Statistic) -> Option<f64> {
    let inside: Vec<&Datapoint> = points
        .iter()
        .filter(|p| p.at >= start && p.at < start + period)
        .collect();
    stat.of(&inside)
}

fn stamp(epoch: f64) -> String {
    chrono::DateTime::from_timestamp_millis((epoch * 1000.0) as i64)
        .unwrap_or_default()
        .format("%d/%m/%y %H:%M:%S")
        .to_string()
}

impl CloudWatch {
    pub fn alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.alarms.values()
    }

    /// One operation; `now` is the world's epoch seconds. Returns the answer and the alarm
    /// actions it set off.
    pub fn handle(
        &mut self,
        op: &str,
        input: &Value,
        now: f64,
    ) -> Result<(Value, Vec<ActionRun>), JsonError> {
        let answer = match op {
            "PutMetricData" => self.put_metric_data(input, now)?,
            "GetMetricStatistics" => self.get_metric_statistics(input)?,
            "GetMetricData" => self.get_metric_data(input)?,
            "ListMetrics" => {
                let ns = text(input, "Namespace");
                let name = text(input, "MetricName");
                let metrics: Vec<Value> = self
                    .metrics
                    .keys()
                    .filter(|k| ns.is_none_or(|n| n == k.namespace))
                    .filter(|k| name.is_none_or(|n| n == k.name))
                    .map(|k| json!({"Namespace": k.namespace, "MetricName": k.name, "Dimensions": dimensions_out(&k.dimensions)}))
                    .collect();
                json!({ "Metrics": metrics })
            }
            "PutMetricAlarm" => self.put_metric_alarm(input, now)?,
            "DescribeAlarms" => self.describe_alarms(input)?,
            "DescribeAlarmHistory" => {
                let alarm = text(input, "AlarmName");
                let kind = text(input, "HistoryItemType");
                let items: Vec<Value> = self
                    .history
                    .iter()
                    .rev()
                    .filter(|h| alarm.is_none_or(|a| a == h.alarm))
                    .filter(|h| kind.is_none_or(|k| k == h.kind))
                    .map(|h| {
                        json!({"AlarmName": h.alarm, "AlarmType": "MetricAlarm", "Timestamp": h.at,
                               "HistoryItemType": h.kind, "HistorySummary": h.summary,
                               "HistoryData": h.data.to_string()})
                    })
                    .collect();
                json!({ "AlarmHistoryItems": items })
            }
            "DeleteAlarms" => {
                let names = strings(input, "AlarmNames").map_err(|e| invalid(e.message))?;
                if let Some(gone) = names.iter().find(|n| !self.alarms.contains_key(*n)) {
                    return Err(JsonError::new(
                        "ResourceNotFound",
                        format!("Alarm {gone} does not exist"),
                    ));
                }
                for n in names {
                    self.alarms.remove(&n);
                }
                json!({})
            }
            "SetAlarmState" => {
                let name = required_text(input, "AlarmName")?;
                let state = required_text(input, "StateValue")?;
                if !matches!(state, "OK" | "ALARM" | "INSUFFICIENT_DATA") {
                    return Err(invalid(format!(
                        "StateValue {state} is not OK, ALARM or INSUFFICIENT_DATA"
                    )));
                }
                let reason = required_text(input, "StateReason")?.to_owned();
                let data = text(input, "StateReasonData").map(str::to_owned);
                if !self.alarms.contains_key(name) {
                    return Err(JsonError::new(
                        "ResourceNotFound",
                        format!("Alarm {name} does not exist"),
                    ));
                }
                // Setting the state an alarm is in already runs nothing: its repeats belong
                // to its evaluations.
                let runs = self.set_state(name, state, reason, data, By::Hand, now);
                return Ok((json!({}), runs));
            }
            other => {
                return Err(JsonError::new(
                    "UnknownOperationException",
                    format!("CloudWatch operation {other} is not modelled by the testbed"),
                ))
            }
        };
        Ok((answer, vec![]))
    }

    fn put_metric_data(&mut self, input: &Value, now: f64) -> Result<Value, JsonError> {
        let namespace = required_text(input, "Namespace")?.to_owned();
        if namespace.starts_with("AWS/") {
            return Err(invalid(
                "The value AWS/ for parameter Namespace is invalid: reserved for AWS",
            ));
        }
        let data = list(input, "MetricData");
        if data.is_empty() || data.len() > 1000 {
            return Err(invalid("MetricData must hold 1 to 1000 items"));
        }
        let mut points = vec![];
        for (i, d) in data.iter().enumerate() {
            let key = MetricKey {
                namespace: namespace.clone(),
                name: text(d, "MetricName")
                    .ok_or_else(|| missing(&format!("MetricData.member.{}.MetricName", i + 1)))?
                    .to_owned(),
                dimensions: dimensions(d)?,
            };
            let at = match d.get("Timestamp") {
                None => now,
                v => time(v).ok_or_else(|| invalid("Timestamp is not a timestamp"))?,
            };
            // Standard resolution (the default) keeps a minute's data under the minute's
            // start; high resolution (1) keeps the second, for alarms with periods under a
            // minute.
            let at = match d.get("StorageResolution").map(|v| number(Some(v))) {
                None | Some(Some(60.0)) => (at / 60.0).floor() * 60.0,
                Some(Some(1.0)) => at,
                Some(_) => {
                    return Err(invalid(format!(
                        "The parameter MetricData.member.{}.StorageResolution must be 1 or 60",
                        i + 1
                    )))
                }
            };
            if at < now - 14.0 * 86400.0 || at > now + 2.0 * 3600.0 {
                return Err(invalid(format!(
                    "The parameter MetricData.member.{}.Timestamp must specify a time no more than two weeks in the past and no more than two hours in the future (world time)",
                    i + 1
                )));
            }
            let point = if let Some(s) = d.get("StatisticValues") {
                let f = |k: &str| {
                    number(s.get(k)).ok_or_else(|| missing(&format!("StatisticValues.{k}")))
                };
                Datapoint {
                    at,
                    sum: f("Sum")?,
                    count: f("SampleCount")?,
                    min: f("Minimum")?,
                    max: f("Maximum")?,
                }
            } else if let Some(v) = number(d.get("Value")) {
                Datapoint {
                    at,
                    sum: v,
                    count: 1.0,
                    min: v,
                    max: v,
                }
            } else if let Some(values) = d.get("Values").and_then(Value::as_array) {
                let counts = list(d, "Counts");
                let mut p = Datapoint {
                    at,
                    sum: 0.0,
                    count: 0.0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                };
                for (j, v) in values.iter().enumerate() {
                    let v = number(Some(v)).ok_or_else(|| invalid("Values must be numbers"))?;
                    let c = counts.get(j).and_then(|c| number(Some(c))).unwrap_or(1.0);
                    p.sum += v * c;
                    p.count += c;
                    p.min = p.min.min(v);
                    p.max = p.max.max(v);
                }
                if p.count == 0.0 {
                    return Err(invalid("Values is empty"));
                }
                p
            } else {
                return Err(JsonError::new(
                    "InvalidParameterCombination",
                    format!(
                        "MetricData.member.{} needs a Value, Values or StatisticValues",
                        i + 1
                    ),
                ));
            };
            if ![point.sum, point.count, point.min, point.max]
                .iter()
                .all(|x| x.is_finite())
            {
                return Err(invalid("metric values must be finite numbers"));
            }
            points.push((key, point));
        }
        for (key, point) in points {
            self.metrics.entry(key).or_default().push(point);
        }
        Ok(json!({}))
    }

    fn points(&self, key: &MetricKey) -> &[Datapoint] {
        self.metrics.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    fn get_metric_statistics(&self, input: &Value) -> Result<Value, JsonError> {
        let key = metric_key(input)?;
        let start = time(input.get("StartTime")).ok_or_else(|| missing("StartTime"))?;
        let end = time(input.get("EndTime")).ok_or_else(|| missing("EndTime"))?;
        let period = number(input.get("Period")).ok_or_else(|| missing("Period"))? as u64;
        if !period_ok(period) {
            return Err(invalid(format!(
                "Period {period} must be 1, 5, 10, 20, 30 or a multiple of 60"
            )));
        }
        let stats: Vec<Statistic> = strings(input, "Statistics")
            .map_err(|e| invalid(e.message))?
            .iter()
            .map(|s| Statistic::parse(s).ok_or_else(|| invalid(format!("Statistic {s} is not modelled (Average, Sum, Minimum, Maximum, SampleCount)"))))
            .collect::<Result<_, _>>()?;
        if stats.is_empty() {
            return Err(missing("Statistics"));
        }
        let p = period as f64;
        let mut datapoints = vec![];
        let mut t = (start / p).floor() * p;
        let points = self.points(&key);
        while t < end {
            let inside: Vec<&Datapoint> = points
                .iter()
                .filter(|d| d.at >= t && d.at < t + p)
                .collect();
            if !inside.is_empty() {
                let mut dp = json!({"Timestamp": t, "Unit": "None"});
                for s in &stats {
                    dp[s.as_str()] = json!(s.of(&inside).unwrap_or_default());
                }
                datapoints.push(dp);
            }
            t += p;
        }
        Ok(json!({"Label": key.name, "Datapoints": datapoints}))
    }

    fn get_metric_data(&self, input: &Value) -> Result<Value, JsonError> {
        let start = time(input.get("StartTime")).ok_or_else(|| missing("StartTime"))?;
        let end = time(input.get("EndTime")).ok_or_else(|| missing("EndTime"))?;
        let ascending = text(input, "ScanBy") == Some("TimestampAscending");
        let mut results = vec![];
        for q in list(input, "MetricDataQueries") {
            let id = required_text(&q, "Id")?.to_owned();
            if q.get("Expression").is_some() {
                return Err(invalid(format!(
                    "query {id}: metric math is not modelled by the testbed"
                )));
            }
            let stat = q.get("MetricStat").ok_or_else(|| missing("MetricStat"))?;
            let key = metric_key(
                stat.get("Metric")
                    .ok_or_else(|| missing("MetricStat.Metric"))?,
            )?;
            let period =
                number(stat.get("Period")).ok_or_else(|| missing("MetricStat.Period"))? as u64;
            if !period_ok(period) {
                return Err(invalid(format!(
                    "Period {period} must be 1, 5, 10, 20, 30 or a multiple of 60"
                )));
            }
            let name = required_text(stat, "Stat")?;
            let s = Statistic::parse(name)
                .ok_or_else(|| invalid(format!("Stat {name} is not modelled")))?;
            let p = period as f64;
            let (mut stamps, mut values) = (vec![], vec![]);
            let mut t = (start / p).floor() * p;
            while t < end {
                if let Some(v) = period_value(self.points(&key), t, p, s) {
                    stamps.push(json!(t));
                    values.push(json!(v));
                }
                t += p;
            }
            if !ascending {
                stamps.reverse();
                values.reverse();
            }
            if flag(q.get("ReturnData")).unwrap_or(true) {
                results.push(
                    json!({"Id": id, "Label": text(&q, "Label").unwrap_or(&key.name),
                    "Timestamps": stamps, "Values": values, "StatusCode": "Complete"}),
                );
            }
        }
        Ok(json!({"MetricDataResults": results, "Messages": []}))
    }

    fn put_metric_alarm(&mut self, input: &Value, now: f64) -> Result<Value, JsonError> {
        let name = required_text(input, "AlarmName")?.to_owned();
        if input.get("Metrics").is_some() {
            return Err(invalid(
                "alarms on metric math (Metrics) are not modelled by the testbed",
            ));
        }
        let metric = metric_key(input)?;
        let statistic = match (text(input, "Statistic"), text(input, "ExtendedStatistic")) {
            (Some(s), None) => Statistic::parse(s).ok_or_else(|| {
                invalid(format!(
                    "Statistic {s} is not one of Average, Sum, Minimum, Maximum, SampleCount"
                ))
            })?,
            (None, Some(e)) => {
                return Err(invalid(format!(
                    "ExtendedStatistic {e} is not modelled by the testbed"
                )))
            }
            _ => {
                return Err(JsonError::new(
                    "InvalidParameterCombination",
                    "Exactly one of Statistic and ExtendedStatistic must be given",
                ))
            }
        };
        let period = number(input.get("Period")).ok_or_else(|| missing("Period"))? as u64;
        if !(matches!(period, 10 | 20 | 30) || (period >= 60 && period % 60 == 0)) {
            return Err(invalid(format!(
                "Period {period} must be 10, 20, 30 or a multiple of 60"
            )));
        }
        let evaluation_periods = number(input.get("EvaluationPeriods"))
            .ok_or_else(|| missing("EvaluationPeriods"))? as u32;
        let datapoints_to_alarm =
            number(input.get("DatapointsToAlarm")).map_or(evaluation_periods, |v| v as u32);
        if evaluation_periods == 0
            || datapoints_to_alarm == 0
            || datapoints_to_alarm > evaluation_periods
        {
            return Err(invalid("EvaluationPeriods must be at least 1, and DatapointsToAlarm from 1 to EvaluationPeriods"));
        }
        let threshold = number(input.get("Threshold")).ok_or_else(|| missing("Threshold"))?;
        let comparison = required_text(input, "ComparisonOperator")?.to_owned();
        if !COMPARISONS.contains(&comparison.as_str()) {
            return Err(invalid(format!(
                "ComparisonOperator {comparison} is not modelled (one of {})",
                COMPARISONS.join(", ")
            )));
        }
        let treat_missing = text(input, "TreatMissingData")
            .unwrap_or("missing")
            .to_owned();
        if !["missing", "ignore", "breaching", "notBreaching"].contains(&treat_missing.as_str()) {
            return Err(invalid(format!("TreatMissingData {treat_missing} is not missing, ignore, breaching or notBreaching")));
        }
        let actions = |k: &str| strings(input, k).map_err(|e| invalid(e.message));
        let interval = (period as f64).min(60.0);
        let old = self.alarms.remove(&name);
        let alarm = Alarm {
            arn: format!("arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}"),
            description: text(input, "AlarmDescription").map(str::to_owned),
            actions_enabled: flag(input.get("ActionsEnabled")).unwrap_or(true),
            ok_actions: actions("OKActions")?,
            alarm_actions: actions("AlarmActions")?,
            insufficient_actions: actions("InsufficientDataActions")?,
            metric,
            statistic,
            period,
            evaluation_periods,
            datapoints_to_alarm,
            threshold,
            comparison,
            treat_missing,
            state: old
                .as_ref()
                .map_or("INSUFFICIENT_DATA".to_owned(), |o| o.state.clone()),
            reason: old
                .as_ref()
                .map_or("Unchecked: Initial alarm creation".to_owned(), |o| {
                    o.reason.clone()
                }),
            reason_data: old.as_ref().and_then(|o| o.reason_data.clone()),
            state_updated: old.as_ref().map_or(now, |o| o.state_updated),
            actions_ran: old.as_ref().map_or(f64::NEG_INFINITY, |o| o.actions_ran),
            config_updated: now,
            next_evaluation: ((now / interval).floor() + 1.0) * interval,
            name: name.clone(),
        };
        self.history.push(HistoryItem {
            alarm: name.clone(),
            at: now,
            kind: "ConfigurationUpdate",
            summary: format!(
                "Alarm \"{name}\" {}",
                if old.is_some() { "updated" } else { "created" }
            ),
            data: json!({"type": "Update"}),
        });
        self.alarms.insert(name, alarm);
        Ok(json!({}))
    }

    fn describe_alarms(&self, input: &Value) -> Result<Value, JsonError> {
        let names = strings(input, "AlarmNames").map_err(|e| invalid(e.message))?;
        let prefix = text(input, "AlarmNamePrefix");
        let state = text(input, "StateValue");
        let action_prefix = text(input, "ActionPrefix");
        let alarms: Vec<Value> = self
            .alarms
            .values()
            .filter(|a| names.is_empty() || names.contains(&a.name))
            .filter(|a| prefix.is_none_or(|p| a.name.starts_with(p)))
            .filter(|a| state.is_none_or(|s| s == a.state))
            .filter(|a| action_prefix.is_none_or(|p| a.actions().any(|x| x.starts_with(p))))
            .map(|a| {
                let mut v = json!({
                    "AlarmName": a.name, "AlarmArn": a.arn,
                    "AlarmConfigurationUpdatedTimestamp": a.config_updated,
                    "ActionsEnabled": a.actions_enabled, "OKActions": a.ok_actions,
                    "AlarmActions": a.alarm_actions, "InsufficientDataActions": a.insufficient_actions,
                    "StateValue": a.state, "StateReason": a.reason,
                    "StateUpdatedTimestamp": a.state_updated, "StateTransitionedTimestamp": a.state_updated,
                    "MetricName": a.metric.name, "Namespace": a.metric.namespace,
                    "Statistic": a.statistic.as_str(), "Dimensions": dimensions_out(&a.metric.dimensions),
                    "Period": a.period, "EvaluationPeriods": a.evaluation_periods,
                    "DatapointsToAlarm": a.datapoints_to_alarm, "Threshold": a.threshold,
                    "ComparisonOperator": a.comparison, "TreatMissingData": a.treat_missing,
                });
                if let Some(d) = &a.description {
                    v["AlarmDescription"] = json!(d);
                }
                if let Some(d) = &a.reason_data {
                    v["StateReasonData"] = json!(d);
                }
                v
            })
            .collect();
        Ok(json!({"MetricAlarms": alarms, "CompositeAlarms": []}))
    }

    /// Moves an alarm to a state; returns the actions that state change sets off (and, for an
    /// evaluation, the Auto Scaling actions of a state that did not change, once a minute).
    fn set_state(
        &mut self,
        name: &str,
        state: &str,
        reason: String,
        data: Option<String>,
        by: By,
        now: f64,
    ) -> Vec<ActionRun> {
        let Some(a) = self.alarms.get_mut(name) else {
            return vec![];
        };
        let changed = a.state != state;
        if changed {
            self.history.push(HistoryItem {
                alarm: name.to_owned(),
                at: now,
                kind: "StateUpdate",
                summary: format!("Alarm updated from {} to {state}", a.state),
                data: json!({"version": "1.0", "oldState": {"stateValue": a.state, "stateReason": a.reason},
                             "newState": {"stateValue": state, "stateReason": reason}}),
            });
            a.state = state.to_owned();
            a.reason = reason;
            a.reason_data = data;
            a.state_updated = now;
        }
        // A state that stays repeats its Auto Scaling actions once a minute.
        let (repeat, latest) = match by {
            By::Evaluation { latest } => (true, latest),
            By::Hand => (false, None),
        };
        if !a.actions_enabled || (!changed && (!repeat || now - a.actions_ran < 60.0)) {
            return vec![];
        }
        let arns = match state {
            "OK" => &a.ok_actions,
            "ALARM" => &a.alarm_actions,
            _ => &a.insufficient_actions,
        };
        let runs: Vec<ActionRun> = arns
            .iter()
            .filter(|arn| changed || arn.starts_with("arn:aws:autoscaling:"))
            .map(|arn| ActionRun {
                alarm: a.name.clone(),
                arn: arn.clone(),
                state: state.to_owned(),
                metric_value: latest,
                threshold: a.threshold,
            })
            .collect();
        if !runs.is_empty() {
            a.actions_ran = now;
        }
        runs
    }

    /// Records what became of an action.
    pub fn action_done(&mut self, run: &ActionRun, outcome: Result<String, String>, now: f64) {
        let summary = match &outcome {
            Ok(what) => format!("Successfully executed action {}: {what}", run.arn),
            Err(why) => format!("Failed to execute action {}: {why}", run.arn),
        };
        self.history.push(HistoryItem {
            alarm: run.alarm.clone(),
            at: now,
            kind: "Action",
            summary,
            data: json!({"actionState": if outcome.is_ok() { "Succeeded" } else { "Failed" }, "stateUpdateTimestamp": now}),
        });
    }

    /// Evaluates every alarm whose evaluation time has come, up to `now`.
    pub fn evaluate(&mut self, now: f64) -> Vec<ActionRun> {
        let mut runs = vec![];
        let names: Vec<String> = self.alarms.keys().cloned().collect();
        for name in names {
            // At most a day of evaluations at once, should the world jump.
            for _ in 0..1440 {
                let Some(a) = self.alarms.get(&name) else {
                    break;
                };
                if a.next_evaluation > now {
                    break;
                }
                let at = a.next_evaluation;
                let interval = (a.period as f64).min(60.0);
                let (state, reason, data, latest) = self.judge(a, at);
                runs.extend(match state {
                    Some(state) => self.set_state(
                        &name,
                        state,
                        reason,
                        Some(data),
                        By::Evaluation { latest },
                        at,
                    ),
                    None => vec![],
                });
                if let Some(a) = self.alarms.get_mut(&name) {
                    a.next_evaluation = at + interval;
                }
            }
        }
        runs
    }

    /// The state the data puts an alarm in at `at` (None: leave it), with AWS's reason.
    fn judge(&self, a: &Alarm, at: f64) -> (Option<&'static str>, String, String, Option<f64>) {
        let p = a.period as f64;
        let end = (at / p).floor() * p;
        let points = self.points(&a.metric);
        // Most recent first.
        let values: Vec<(f64, Option<f64>)> = (0..a.evaluation_periods)
            .map(|i| {
                let start = end - p * f64::from(i + 1);
                (start, period_value(points, start, p, a.statistic))
            })
            .collect();
        let latest = values.iter().find_map(|(_, v)| *v);
        let present: Vec<(f64, f64)> = values
            .iter()
            .filter_map(|(t, v)| v.map(|v| (*t, v)))
            .collect();
        let mut breaching = present
            .iter()
            .filter(|(_, v)| breaches(&a.comparison, *v, a.threshold))
            .count();
        let absent = values.len() - present.len();
        match a.treat_missing.as_str() {
            "breaching" => breaching += absent,
            "missing" | "ignore" if present.is_empty() => {
                let data = json!({"version": "1.0", "statistic": a.statistic.as_str(), "period": a.period, "recentDatapoints": [], "threshold": a.threshold}).to_string();
                let reason = format!(
                    "Insufficient Data: {} datapoints were unknown.",
                    values.len()
                );
                let state = (a.treat_missing == "missing").then_some("INSUFFICIENT_DATA");
                return (state, reason, data, None);
            }
            _ => {}
        }
        let shown: Vec<String> = present
            .iter()
            .map(|(t, v)| format!("{v} ({})", stamp(*t)))
            .collect();
        let data = json!({"version": "1.0", "statistic": a.statistic.as_str(), "period": a.period,
            "recentDatapoints": present.iter().map(|(_, v)| *v).collect::<Vec<f64>>(), "threshold": a.threshold,
            "evaluatedDatapoints": present.iter().map(|(t, v)| json!({"timestamp": t, "value": v})).collect::<Vec<_>>()})
        .to_string();
        let alarm = breaching >= a.datapoints_to_alarm as usize;
        let reason = format!(
            "Threshold Crossed: {} out of the last {} datapoints [{}] {} {} the threshold ({}) (minimum {} datapoints for {} transition).",
            if alarm { breaching } else { present.len() - breaching.min(present.len()) },
            values.len(),
            shown.join(", "),
            if alarm { "were" } else { "were not" },
            comparison_words(&a.comparison),
            a.threshold,
            if alarm { a.datapoints_to_alarm } else { 1 },
            if alarm { "OK -> ALARM" } else { "ALARM -> OK" },
        );
        (
            Some(if alarm { "ALARM" } else { "OK" }),
            reason,
            data,
            latest,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(cw: &mut CloudWatch, missing: &str) {
        let input = json!({"AlarmName": "low", "Namespace": "wf", "MetricName": "Idle", "Statistic": "Minimum",
            "Period": 60, "EvaluationPeriods": 3, "DatapointsToAlarm": 2, "Threshold": 1.0,
            "ComparisonOperator": "LessThanThreshold", "TreatMissingData": missing,
            "AlarmActions": ["arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:x:autoScalingGroupName/g:policyName/out"]});
        cw.handle("PutMetricAlarm", &input, 0.0).unwrap();
    }

    fn put(cw: &mut CloudWatch, at: f64, v: f64) {
        let input = json!({"Namespace": "wf", "MetricData": [{"MetricName": "Idle", "Value": v, "Timestamp": at}]});
        cw.handle("PutMetricData", &input, at).unwrap();
    }

    #[test]
    fn m_of_n_breaching_periods_alarm_and_repeat_autoscaling_actions() {
        let mut cw = CloudWatch::default();
        alarm(&mut cw, "missing");
        put(&mut cw, 10.0, 0.0);
        put(&mut cw, 70.0, 3.0);
        put(&mut cw, 130.0, 0.0);
        // At 180: periods [0,60)=0 breaching, [60,120)=3 not, [120,180)=0 breaching: 2 of 3.
        let runs = cw.evaluate(180.0);
        let a = cw.alarms().next().unwrap();
        assert_eq!(a.state, "ALARM", "{}", a.reason);
        assert!(
            a.reason
                .starts_with("Threshold Crossed: 2 out of the last 3 datapoints"),
            "{}",
            a.reason
        );
        // Evaluations at 60 and 120 saw fewer breaching periods: OK then, ALARM at 180 only.
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].metric_value, Some(0.0));
        put(&mut cw, 190.0, 0.0);
        assert_eq!(
            cw.evaluate(240.0).len(),
            1,
            "auto scaling actions repeat while in ALARM"
        );
    }

    #[test]
    fn missing_data_follows_the_alarms_setting() {
        // Each alarm starts in a state other than the one its setting must lead to (but
        // `ignore`, which must keep it), so every case shows the evaluation acting.
        for (setting, start, want) in [
            ("missing", "OK", "INSUFFICIENT_DATA"),
            ("ignore", "ALARM", "ALARM"),
            ("breaching", "OK", "ALARM"),
            ("notBreaching", "ALARM", "OK"),
        ] {
            let mut cw = CloudWatch::default();
            alarm(&mut cw, setting);
            let set = json!({"AlarmName": "low", "StateValue": start, "StateReason": "test"});
            cw.handle("SetAlarmState", &set, 1.0).unwrap();
            cw.evaluate(600.0);
            let a = cw.alarms().next().unwrap();
            assert_eq!(a.state, want, "{setting}");
            if setting == "missing" {
                assert!(
                    a.reason
                        .starts_with("Insufficient Data: 3 datapoints were unknown"),
                    "{}",
                    a.reason
                );
            }
        }
    }

    #[test]
    fn a_ten_second_alarm_sees_high_resolution_data_within_seconds_and_standard_data_by_the_minute()
    {
        let mut cw = CloudWatch::default();
        let input = json!({"AlarmName": "high", "Namespace": "wf", "MetricName": "Idle", "Statistic": "Minimum",
            "Period": 10, "EvaluationPeriods": 1, "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
            "AlarmActions": ["arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:x:autoScalingGroupName/g:policyName/in"]});
        cw.handle("PutMetricAlarm", &input, 0.0).unwrap();
        let put = |cw: &mut CloudWatch, at: f64, resolution: Option<u32>| {
            let mut datum = json!({"MetricName": "Idle", "Value": 3.0});
            if let Some(r) = resolution {
                datum["StorageResolution"] = json!(r);
            }
            cw.handle(
                "PutMetricData",
                &json!({"Namespace": "wf", "MetricData": [datum]}),
                at,
            )
            .unwrap();
        };
        cw.evaluate(60.0);
        // High resolution, at 75: the period [70, 80) breaches, evaluated at 80; the next
        // period has no data (not breaching): one action, then OK.
        put(&mut cw, 75.0, Some(1));
        assert_eq!(cw.evaluate(79.0).len(), 0);
        assert_eq!(cw.evaluate(80.0).len(), 1);
        assert_eq!(cw.alarms().next().unwrap().state, "ALARM");
        assert_eq!(cw.evaluate(90.0).len(), 0);
        assert_eq!(cw.alarms().next().unwrap().state, "OK");
        // Standard resolution, at 135: stored under the minute (120), a period the alarm
        // evaluated before the data came; it never acts on it.
        assert_eq!(cw.evaluate(135.0).len(), 0);
        put(&mut cw, 135.0, None);
        assert_eq!(cw.evaluate(200.0).len(), 0);
        assert_eq!(cw.alarms().next().unwrap().state, "OK");
        let e = cw
            .handle("PutMetricData", &json!({"Namespace": "wf", "MetricData": [{"MetricName": "Idle", "Value": 1, "StorageResolution": 5}]}), 210.0)
            .unwrap_err();
        assert!(e.message.contains("StorageResolution"), "{}", e.message);
        // While it stays in ALARM (a breaching count in every period), its Auto Scaling
        // action repeats once a minute, not at every 10-second evaluation.
        let stays = json!({"AlarmName": "stays", "Namespace": "wf", "MetricName": "Idle", "Statistic": "Minimum",
            "Period": 10, "EvaluationPeriods": 1, "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanThreshold",
            "AlarmActions": ["arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:x:autoScalingGroupName/g:policyName/in"]});
        cw.handle("PutMetricAlarm", &stays, 300.0).unwrap();
        let mut runs = vec![];
        for t in (300..=360).step_by(10) {
            put(&mut cw, f64::from(t) + 5.0, Some(1));
            let n = cw
                .evaluate(f64::from(t) + 10.0)
                .iter()
                .filter(|r| r.alarm == "stays")
                .count();
            runs.push((t + 10, n));
        }
        assert_eq!(
            runs,
            [
                (310, 1),
                (320, 0),
                (330, 0),
                (340, 0),
                (350, 0),
                (360, 0),
                (370, 1)
            ],
            "into ALARM at 310, again a minute later"
        );
    }

    #[test]
    fn set_alarm_state_runs_actions_only_when_the_state_changes() {
        let mut cw = CloudWatch::default();
        alarm(&mut cw, "missing");
        let set = json!({"AlarmName": "low", "StateValue": "ALARM", "StateReason": "test"});
        let (_, runs) = cw.handle("SetAlarmState", &set, 1.0).unwrap();
        assert_eq!(runs.len(), 1, "into ALARM: its action");
        let (_, runs) = cw.handle("SetAlarmState", &set, 100.0).unwrap();
        assert!(runs.is_empty(), "already in ALARM: nothing");
    }

    #[test]
    fn bad_input_names_the_parameter() {
        let mut cw = CloudWatch::default();
        let e = cw
            .handle("PutMetricData", &json!({"MetricData": []}), 0.0)
            .unwrap_err();
        assert_eq!(e.code, "MissingParameter");
        assert!(e.message.contains("Namespace"));
        let e = cw
            .handle("PutMetricAlarm", &json!({"AlarmName": "a", "Namespace": "n", "MetricName": "m", "Statistic": "p99",
                "Period": 60, "EvaluationPeriods": 1, "Threshold": 1, "ComparisonOperator": "LessThanThreshold"}), 0.0)
            .unwrap_err();
        assert!(e.message.contains("p99"));
        let e = cw
            .handle("PutMetricData", &json!({"Namespace": "n", "MetricData": [{"MetricName": "m", "Value": 1, "Timestamp": 1.0e9}]}), 2.0e9)
            .unwrap_err();
        assert!(e.message.contains("two weeks"));
    }
}
