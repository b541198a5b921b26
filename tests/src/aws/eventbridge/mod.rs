//! EventBridge: rules with event patterns or `rate(...)` schedules, whose targets are Lambda
//! functions, over awsJson1.1 (`AWSEvents.PutRule`, `PutTargets`...). Delivery is at least
//! once: a fault switch makes it duplicate and delay events, as AWS may.
//!
//! This module is the pure model: what matches, what is due, what to deliver when. The world
//! (`super`) turns its answers into invocations.

use crate::aws::lambda::function_name;
use crate::aws::protocol::json::{required, strings, uuid, JsonError};
use crate::aws::{ACCOUNT, REGION};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub name: String,
    pub arn: String,
    pub description: Option<String>,
    /// The pattern as given (JSON text).
    pub event_pattern: Option<String>,
    #[serde(skip)]
    pattern: Option<Value>,
    pub schedule_expression: Option<String>,
    #[serde(skip)]
    rate: Option<Duration>,
    /// World time of the next scheduled event.
    #[serde(skip)]
    next_fire: Duration,
    pub enabled: bool,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub id: String,
    pub arn: String,
    /// Constant JSON sent instead of the event.
    pub input: Option<String>,
}

/// Delivery faults: each delivery is duplicated with probability `duplicate`, and each copy
/// is delayed by a uniform random time up to `max_delay_seconds` (world time).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    #[serde(default)]
    pub duplicate: f64,
    #[serde(default)]
    pub max_delay_seconds: f64,
}

/// One copy of one event on its way to one function.
#[derive(Debug, Clone, Serialize)]
pub struct Dispatch {
    pub event_id: String,
    pub rule: String,
    pub function: String,
    /// World seconds it is held back.
    pub delay_seconds: f64,
    /// 0 for the delivery, 1 for a duplicate.
    pub copy: u32,
    #[serde(skip)]
    pub payload: Value,
}

pub struct Events {
    rules: BTreeMap<String, Rule>,
    pub faults: Faults,
    rng: StdRng,
}

fn rule_arn(name: &str) -> String {
    format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}")
}

/// `rate(N unit)` as EventBridge accepts it: a singular unit for 1, plural otherwise.
pub fn parse_rate(expr: &str) -> Result<Duration, String> {
    let invalid = || format!("Parameter ScheduleExpression is not valid: {expr}");
    if expr.starts_with("cron(") {
        return Err(format!(
            "cron() schedules are not modelled by the testbed; use rate(): {expr}"
        ));
    }
    let inner = expr
        .strip_prefix("rate(")
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(invalid)?;
    let (n, unit) = inner.trim().split_once(' ').ok_or_else(invalid)?;
    let n: u64 = n.parse().map_err(|_| invalid())?;
    let secs = match (n, unit) {
        (0, _) => return Err(invalid()),
        (1, "minute") | (2.., "minutes") => 60,
        (1, "hour") | (2.., "hours") => 3600,
        (1, "day") | (2.., "days") => 86400,
        _ => return Err(invalid()),
    };
    Ok(Duration::from_secs(n * secs))
}

/// Checks a pattern's shape: objects down to lists of values or matchers.
fn check_pattern(p: &Value, at: &str) -> Result<(), String> {
    let Value::Object(fields) = p else {
        return Err(format!(
            "Event pattern is not valid: {at} must be an object"
        ));
    };
    for (k, v) in fields {
        let here = format!("{at}.{k}");
        match v {
            Value::Object(_) => check_pattern(v, &here)?,
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(m) = item {
                        let known = [
                            "prefix",
                            "suffix",
                            "anything-but",
                            "exists",
                            "equals-ignore-case",
                        ];
                        if m.len() != 1 || !m.keys().all(|k| known.contains(&k.as_str())) {
                            return Err(format!(
                                "Event pattern is not valid: {here}: matcher {item} is not one the testbed models ({})",
                                known.join(", ")
                            ));
                        }
                    }
                }
            }
            _ => {
                return Err(format!(
                    "Event pattern is not valid: {here} must be an array or an object"
                ))
            }
        }
    }
    Ok(())
}

fn value_matches(matcher: &Value, v: Option<&Value>) -> bool {
    let s = v.and_then(Value::as_str);
    match matcher {
        Value::Object(m) => match m.iter().next() {
            Some((k, arg)) => match k.as_str() {
                "exists" => arg.as_bool() == Some(v.is_some()),
                "prefix" => matches!((s, arg.as_str()), (Some(s), Some(p)) if s.starts_with(p)),
                "suffix" => matches!((s, arg.as_str()), (Some(s), Some(p)) if s.ends_with(p)),
                "equals-ignore-case" => {
                    matches!((s, arg.as_str()), (Some(s), Some(p)) if s.eq_ignore_ascii_case(p))
                }
                "anything-but" => match (v, arg) {
                    (None, _) => false,
                    (Some(v), Value::Array(no)) => !no.contains(v),
                    (Some(v), no) => v != no,
                },
                _ => false,
            },
            None => false,
        },
        literal => v == Some(literal),
    }
}

/// Whether an event matches a pattern, as EventBridge decides: every field of the pattern
/// must match; a list matches when any of its entries does; an array in the event matches
/// when any of its elements does.
pub fn matches(pattern: &Value, event: &Value) -> bool {
    let Value::Object(fields) = pattern else {
        return false;
    };
    fields.iter().all(|(k, p)| {
        let v = event.get(k);
        match p {
            Value::Object(_) => v.is_some_and(|v| matches(p, v)),
            Value::Array(options) => options.iter().any(|m| match v {
                Some(Value::Array(items)) => items.iter().any(|i| value_matches(m, Some(i))),
                other => value_matches(m, other),
            }),
            _ => false,
        }
    })
}

impl Events {
    pub fn new(rng: StdRng) -> Self {
        Events {
            rules: BTreeMap::new(),
            faults: Faults::default(),
            rng,
        }
    }

    pub fn rules(&self) -> Vec<Rule> {
        self.rules.values().cloned().collect()
    }

    fn rule_mut(&mut self, name: &str) -> Result<&mut Rule, JsonError> {
        self.rules.get_mut(name).ok_or_else(|| {
            JsonError::new(
                "ResourceNotFoundException",
                format!("Rule {name} does not exist."),
            )
        })
    }

    /// One awsJson1.1 operation.
    pub fn handle(&mut self, op: &str, input: &Value, now: Duration) -> Result<Value, JsonError> {
        match op {
            "PutRule" => self.put_rule(input, now),
            "PutTargets" => self.put_targets(input),
            "RemoveTargets" => {
                let ids = strings(input, "Ids")?;
                let rule = self.rule_mut(required(input, "Rule")?)?;
                rule.targets.retain(|t| !ids.contains(&t.id));
                Ok(json!({"FailedEntryCount": 0, "FailedEntries": []}))
            }
            "DeleteRule" => {
                let name = required(input, "Name")?;
                if self.rules.get(name).is_some_and(|r| !r.targets.is_empty()) {
                    return Err(JsonError::validation(
                        "Rule can't be deleted since it has targets.",
                    ));
                }
                self.rules.remove(name);
                Ok(json!({}))
            }
            "DescribeRule" => {
                let rule = self.rule_mut(required(input, "Name")?)?;
                Ok(describe(rule))
            }
            "ListRules" => {
                let prefix = input
                    .get("NamePrefix")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let rules: Vec<Value> = self
                    .rules
                    .values()
                    .filter(|r| r.name.starts_with(prefix))
                    .map(describe)
                    .collect();
                Ok(json!({ "Rules": rules }))
            }
            "ListTargetsByRule" => {
                let rule = self.rule_mut(required(input, "Rule")?)?;
                let targets: Vec<Value> = rule
                    .targets
                    .iter()
                    .map(|t| {
                        let mut v = json!({"Id": t.id, "Arn": t.arn});
                        if let Some(i) = &t.input {
                            v["Input"] = json!(i);
                        }
                        v
                    })
                    .collect();
                Ok(json!({ "Targets": targets }))
            }
            "EnableRule" | "DisableRule" => {
                let rule = self.rule_mut(required(input, "Name")?)?;
                rule.enabled = op == "EnableRule";
                Ok(json!({}))
            }
            other => Err(JsonError::new(
                "UnknownOperationException",
                format!("EventBridge operation {other} is not modelled by the testbed"),
            )),
        }
    }

    fn put_rule(&mut self, input: &Value, now: Duration) -> Result<Value, JsonError> {
        let name = required(input, "Name")?.to_owned();
        let text = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_owned);
        let event_pattern = text("EventPattern");
        let schedule_expression = text("ScheduleExpression");
        let pattern = match &event_pattern {
            Some(p) => {
                let v: Value = serde_json::from_str(p).map_err(|e| {
                    JsonError::new(
                        "InvalidEventPatternException",
                        format!("Event pattern is not valid JSON: {e}"),
                    )
                })?;
                check_pattern(&v, "pattern")
                    .map_err(|m| JsonError::new("InvalidEventPatternException", m))?;
                Some(v)
            }
            None => None,
        };
        let rate = schedule_expression
            .as_deref()
            .map(parse_rate)
            .transpose()
            .map_err(JsonError::validation)?;
        if pattern.is_none() && rate.is_none() {
            return Err(JsonError::validation(
                "Parameter(s) EventPattern or ScheduleExpression must be specified.",
            ));
        }
        let enabled = match text("State").as_deref() {
            None | Some("ENABLED") => true,
            Some("DISABLED") => false,
            Some(other) => {
                return Err(JsonError::validation(format!(
                    "State {other} is not valid: ENABLED or DISABLED"
                )))
            }
        };
        let targets = self
            .rules
            .get(&name)
            .map(|r| r.targets.clone())
            .unwrap_or_default();
        let arn = rule_arn(&name);
        self.rules.insert(
            name.clone(),
            Rule {
                name,
                arn: arn.clone(),
                description: text("Description"),
                event_pattern,
                pattern,
                schedule_expression,
                next_fire: now + rate.unwrap_or_default(),
                rate,
                enabled,
                targets,
            },
        );
        Ok(json!({ "RuleArn": arn }))
    }

    fn put_targets(&mut self, input: &Value) -> Result<Value, JsonError> {
        let rule = self.rule_mut(required(input, "Rule")?)?;
        let targets = input
            .get("Targets")
            .and_then(Value::as_array)
            .ok_or_else(|| JsonError::validation("Targets is required"))?;
        let mut failed = vec![];
        for t in targets {
            let (Some(id), Some(arn)) = (
                t.get("Id").and_then(Value::as_str),
                t.get("Arn").and_then(Value::as_str),
            ) else {
                return Err(JsonError::validation("every target needs an Id and an Arn"));
            };
            if function_name(arn).is_none() {
                failed.push(json!({"TargetId": id, "ErrorCode": "ValidationException",
                    "ErrorMessage": format!("target {arn}: the testbed delivers only to Lambda functions")}));
                continue;
            }
            let target = Target {
                id: id.to_owned(),
                arn: arn.to_owned(),
                input: t.get("Input").and_then(Value::as_str).map(str::to_owned),
            };
            rule.targets.retain(|t| t.id != id);
            rule.targets.push(target);
        }
        Ok(json!({"FailedEntryCount": failed.len(), "FailedEntries": failed}))
    }

    /// The copies of one event that rules send to functions, faults applied.
    fn deliver(&mut self, rule: &Rule, event: &Value) -> Vec<Dispatch> {
        let event_id = event["id"].as_str().unwrap_or_default().to_owned();
        let mut out = vec![];
        for t in &rule.targets {
            let Some(function) = function_name(&t.arn) else {
                continue;
            };
            let payload = match &t.input {
                Some(text) => serde_json::from_str(text).unwrap_or(Value::String(text.clone())),
                None => event.clone(),
            };
            let copies = if self.rng.gen_bool(self.faults.duplicate.clamp(0.0, 1.0)) {
                2
            } else {
                1
            };
            for copy in 0..copies {
                let delay = if self.faults.max_delay_seconds > 0.0 {
                    self.rng.gen_range(0.0..=self.faults.max_delay_seconds)
                } else {
                    0.0
                };
                out.push(Dispatch {
                    event_id: event_id.clone(),
                    rule: rule.name.clone(),
                    function: function.to_owned(),
                    delay_seconds: delay,
                    copy,
                    payload: payload.clone(),
                });
            }
        }
        out
    }

    /// What an event sent onto the bus turns into.
    pub fn route(&mut self, event: &Value) -> Vec<Dispatch> {
        let rules: Vec<Rule> = self
            .rules
            .values()
            .filter(|r| r.enabled && r.pattern.as_ref().is_some_and(|p| matches(p, event)))
            .cloned()
            .collect();
        rules.iter().flat_map(|r| self.deliver(r, event)).collect()
    }

    /// Scheduled events that are due by `now`; `time` prints a world time as AWS does.
    pub fn due(&mut self, now: Duration, time: impl Fn(Duration) -> String) -> Vec<Dispatch> {
        let mut events = vec![];
        for rule in self.rules.values_mut() {
            let Some(rate) = rule.rate else { continue };
            while rule.next_fire <= now {
                if rule.enabled {
                    events.push((rule.clone(), rule.next_fire));
                }
                rule.next_fire += rate;
            }
        }
        let mut out = vec![];
        for (rule, at) in events {
            let event = self.envelope(
                "Scheduled Event",
                "aws.events",
                vec![rule.arn.clone()],
                json!({}),
                &time(at),
            );
            out.extend(self.deliver(&rule, &event));
        }
        out
    }

    /// An event in EventBridge's envelope.
    pub fn envelope(
        &mut self,
        detail_type: &str,
        source: &str,
        resources: Vec<String>,
        detail: Value,
        time: &str,
    ) -> Value {
        json!({
            "version": "0",
            "id": uuid(&mut self.rng),
            "detail-type": detail_type,
            "source": source,
            "account": ACCOUNT,
            "time": time,
            "region": REGION,
            "resources": resources,
            "detail": detail,
        })
    }
}

fn describe(r: &Rule) -> Value {
    let mut v = Map::new();
    v.insert("Name".into(), json!(r.name));
    v.insert("Arn".into(), json!(r.arn));
    v.insert(
        "State".into(),
        json!(if r.enabled { "ENABLED" } else { "DISABLED" }),
    );
    v.insert("EventBusName".into(), json!("default"));
    for (k, x) in [
        ("Description", &r.description),
        ("EventPattern", &r.event_pattern),
        ("ScheduleExpression", &r.schedule_expression),
    ] {
        if let Some(x) = x {
            v.insert(k.into(), json!(x));
        }
    }
    Value::Object(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn lifecycle(hook: &str) -> Value {
        json!({"source": "aws.autoscaling", "detail-type": "EC2 Instance-launch Lifecycle Action",
               "resources": ["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:x:autoScalingGroupName/g"],
               "detail": {"LifecycleHookName": hook, "Origin": "EC2", "Destination": "AutoScalingGroup"}})
    }

    #[test]
    fn patterns_match_as_eventbridge_does() {
        let p = json!({"source": ["aws.autoscaling"], "detail": {"LifecycleHookName": ["registration"]}});
        assert!(matches(&p, &lifecycle("registration")));
        assert!(!matches(&p, &lifecycle("deregistration")));
        let p = json!({"detail": {"LifecycleHookName": [{"prefix": "reg"}], "Missing": [{"exists": false}]}});
        assert!(matches(&p, &lifecycle("registration")));
        let p = json!({"detail": {"Destination": [{"anything-but": ["WarmPool"]}]}});
        assert!(matches(&p, &lifecycle("x")));
        let p = json!({"resources": [{"suffix": "autoScalingGroupName/g"}]});
        assert!(
            matches(&p, &lifecycle("x")),
            "arrays in the event match any element"
        );
        let p = json!({"detail": {"Origin": [{"exists": true}], "Nope": ["a"]}});
        assert!(!matches(&p, &lifecycle("x")));
    }

    #[test]
    fn bad_patterns_and_schedules_are_refused_with_the_reason() {
        assert!(check_pattern(&json!({"a": "b"}), "pattern").is_err());
        assert!(
            check_pattern(&json!({"a": [{"numeric": [">", 1]}]}), "pattern")
                .unwrap_err()
                .contains("numeric")
        );
        assert_eq!(parse_rate("rate(1 minute)"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_rate("rate(5 minutes)"), Ok(Duration::from_secs(300)));
        assert!(parse_rate("rate(1 minutes)").is_err());
        assert!(parse_rate("rate(0 hours)").is_err());
        assert!(parse_rate("cron(0 * * * ? *)")
            .unwrap_err()
            .contains("not modelled"));
    }

    #[test]
    fn schedules_fire_at_their_rate_and_faults_duplicate() {
        let mut ev = Events::new(StdRng::seed_from_u64(1));
        let now = Duration::ZERO;
        ev.handle(
            "PutRule",
            &json!({"Name": "sweep", "ScheduleExpression": "rate(5 minutes)"}),
            now,
        )
        .unwrap();
        ev.handle("PutTargets", &json!({"Rule": "sweep", "Targets": [{"Id": "f", "Arn": "arn:aws:lambda:us-east-1:123456789012:function:f"}]}), now)
            .unwrap();
        let stamp = |d: Duration| format!("t{}", d.as_secs());
        assert!(ev.due(Duration::from_secs(299), stamp).is_empty());
        let fired = ev.due(Duration::from_secs(900), stamp);
        let times: Vec<&str> = fired
            .iter()
            .map(|d| d.payload["time"].as_str().unwrap())
            .collect();
        assert_eq!(times, ["t300", "t600", "t900"]);
        assert_eq!(fired[0].payload["detail-type"], "Scheduled Event");
        ev.faults.duplicate = 1.0;
        let fired = ev.due(Duration::from_secs(1200), stamp);
        assert_eq!(fired.len(), 2);
        assert_eq!(fired[0].event_id, fired[1].event_id);
    }
}
