//! The events the Lambdas receive: Auto Scaling lifecycle actions (through EventBridge) and
//! scheduled events, read with `aws_lambda_events`' types into what the handlers need.

use aws_lambda_events::event::autoscaling::AutoScalingEvent;
use serde_json::Value;

/// Where an instance comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Ec2,
    AutoScalingGroup,
    WarmPool,
}

impl Place {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "EC2" => Place::Ec2,
            "AutoScalingGroup" => Place::AutoScalingGroup,
            "WarmPool" => Place::WarmPool,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Launching,
    Terminating,
}

impl Transition {
    /// As a lifecycle hook and its events name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Launching => "autoscaling:EC2_INSTANCE_LAUNCHING",
            Transition::Terminating => "autoscaling:EC2_INSTANCE_TERMINATING",
        }
    }
}

/// One lifecycle action, as the handlers need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// EventBridge's event id (repeated deliveries share it).
    pub id: String,
    pub group: String,
    pub hook: String,
    pub instance_id: String,
    /// The instance's ARN, built from the event's partition (that of the group's ARN in
    /// `resources`), region and account: what the instance's role credentials carry as
    /// `ec2:SourceInstanceARN`, which its IAM policy compares with its secret's tag.
    pub instance_arn: String,
    /// The lifecycle action's token: one per hook per launch or termination.
    pub token: String,
    pub transition: Transition,
    pub origin: Place,
    pub destination: Place,
}

/// What a Lambda was invoked with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Lifecycle(LifecycleEvent),
    /// An EventBridge schedule.
    Scheduled,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an event warmfleet handles: {0}")]
pub struct EventError(pub String);

impl Event {
    pub fn parse(payload: Value) -> Result<Event, EventError> {
        let detail_type = payload
            .get("detail-type")
            .and_then(Value::as_str)
            .ok_or_else(|| EventError("no detail-type (is this an EventBridge event?)".into()))?
            .to_owned();
        let transition = match detail_type.as_str() {
            "Scheduled Event" => return Ok(Event::Scheduled),
            "EC2 Instance-launch Lifecycle Action" => Transition::Launching,
            "EC2 Instance-terminate Lifecycle Action" => Transition::Terminating,
            other => return Err(EventError(format!("detail-type {other:?}"))),
        };
        let event: AutoScalingEvent = serde_json::from_value(payload)
            .map_err(|e| EventError(format!("{detail_type}: {e}")))?;
        // The detail says the transition again: acting on a launch event that says it is
        // something else (a test notification, a termination, nothing) would mint a
        // credential and complete a hook for an instance that is not launching.
        let expected = transition.as_str();
        match event.detail.get("LifecycleTransition") {
            Some(Value::String(t)) if t == expected => {}
            Some(Value::String(t)) => {
                return Err(EventError(format!(
                    "{detail_type} with detail.LifecycleTransition {t:?}, not {expected:?}"
                )))
            }
            Some(other) => {
                return Err(EventError(format!(
                    "{detail_type} with detail.LifecycleTransition {other}, not the string {expected:?}"
                )))
            }
            None => {
                return Err(EventError(format!(
                    "{detail_type} without detail.LifecycleTransition"
                )))
            }
        }
        let field = |k: &str| {
            event
                .detail
                .get(k)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| EventError(format!("{detail_type} without detail.{k}")))
        };
        let place = |k: &str| {
            let v = field(k)?;
            Place::parse(&v).ok_or_else(|| {
                EventError(format!(
                    "detail.{k} {v:?} is not EC2, AutoScalingGroup or WarmPool"
                ))
            })
        };
        // Older events carry no Origin/Destination: they are launches into and terminations
        // from the group itself.
        let (default_origin, default_destination) = match transition {
            Transition::Launching => (Place::Ec2, Place::AutoScalingGroup),
            Transition::Terminating => (Place::AutoScalingGroup, Place::Ec2),
        };
        let or = |k: &str, default: Place| match event.detail.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(_) => place(k),
        };
        let instance_id = field("EC2InstanceId")?;
        let partition = event
            .resources
            .first()
            .and_then(|arn| arn.split(':').nth(1))
            .filter(|p| !p.is_empty())
            .unwrap_or("aws");
        let (region, account) = match (&event.region, &event.account_id) {
            (Some(r), Some(a)) if !r.is_empty() && !a.is_empty() => (r, a),
            _ => {
                return Err(EventError(format!(
                    "{detail_type} without region or account"
                )))
            }
        };
        Ok(Event::Lifecycle(LifecycleEvent {
            id: event.id.clone().unwrap_or_default(),
            group: field("AutoScalingGroupName")?,
            hook: field("LifecycleHookName")?,
            instance_arn: format!("arn:{partition}:ec2:{region}:{account}:instance/{instance_id}"),
            instance_id,
            token: field("LifecycleActionToken")?,
            transition,
            origin: or("Origin", default_origin)?,
            destination: or("Destination", default_destination)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Event, EventError> {
        Event::parse(serde_json::from_str(text).unwrap())
    }

    #[test]
    fn reads_the_documented_shapes() {
        let Event::Lifecycle(e) = parse(include_str!(
            "../tests/fixtures/launch-warm-pool-resume.json"
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (e.origin, e.destination),
            (Place::WarmPool, Place::AutoScalingGroup)
        );
        assert_eq!(e.group, "runners");
        assert_eq!(e.hook, "registration");
        assert_eq!(
            e.instance_arn,
            format!(
                "arn:aws:ec2:us-west-2:123456789012:instance/{}",
                e.instance_id
            )
        );
        assert_eq!(e.transition, Transition::Launching);
        let Event::Lifecycle(e) = parse(include_str!(
            "../tests/fixtures/terminate-warm-pool-trim.json"
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (e.origin, e.destination, e.transition),
            (Place::WarmPool, Place::Ec2, Transition::Terminating)
        );
        assert_eq!(
            parse(include_str!("../tests/fixtures/scheduled.json")).unwrap(),
            Event::Scheduled
        );
    }

    #[test]
    fn a_malformed_event_says_what_is_missing() {
        let e = parse(include_str!("../tests/fixtures/malformed-no-token.json")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not an event warmfleet handles: EC2 Instance-launch Lifecycle Action without detail.LifecycleActionToken"
        );
        // The transition the detail states must be the detail type's.
        let launch: Value =
            serde_json::from_str(include_str!("../tests/fixtures/launch-cold.json")).unwrap();
        for (value, says) in [
            (
                json!("autoscaling:EC2_INSTANCE_TERMINATING"),
                "detail.LifecycleTransition \"autoscaling:EC2_INSTANCE_TERMINATING\", not \"autoscaling:EC2_INSTANCE_LAUNCHING\"",
            ),
            (
                json!("autoscaling:TEST_NOTIFICATION"),
                "detail.LifecycleTransition \"autoscaling:TEST_NOTIFICATION\"",
            ),
            (json!(7), "detail.LifecycleTransition 7, not the string"),
            (Value::Null, "detail.LifecycleTransition null"),
        ] {
            let mut e = launch.clone();
            e["detail"]["LifecycleTransition"] = value;
            let err = Event::parse(e).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        let mut e = launch.clone();
        e["detail"]
            .as_object_mut()
            .unwrap()
            .remove("LifecycleTransition");
        assert!(Event::parse(e)
            .unwrap_err()
            .to_string()
            .ends_with("without detail.LifecycleTransition"));
        let mut e: Value =
            serde_json::from_str(include_str!("../tests/fixtures/terminate-scale-in.json"))
                .unwrap();
        e["detail"]["LifecycleTransition"] = json!("autoscaling:EC2_INSTANCE_LAUNCHING");
        assert!(Event::parse(e).is_err());
        assert!(parse("{\"hello\": 1}")
            .unwrap_err()
            .to_string()
            .contains("no detail-type"));
    }
}
