//! Scaling policies: step scaling (step adjustments relative to the alarm's threshold,
//! estimated instance warm-up) and simple scaling (cooldown), as CloudWatch alarm actions or
//! `ExecutePolicy` run them.
//!
//! Warm-up, simplified: while a step policy's last scale-out is within its warm-up, a new
//! scale-out adds only what exceeds the capacity still warming up, as AWS describes it. And
//! while an instance is within the group's default instance warm-up after entering service,
//! no step policy scales in ("this blocks the scale-in activities for dynamic scaling until
//! the new instances finish warming up", AWS's default instance warm-up page; its cooldowns
//! page says the same of step and target tracking policies); a policy's own warm-up, and the
//! default cooldown AWS may apply without a default warm-up, do not block scale-in here.

use super::model::{Asg, AsgError, State};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AdjustmentType {
    ChangeInCapacity,
    ExactCapacity,
    PercentChangeInCapacity,
}

impl AdjustmentType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ChangeInCapacity" => AdjustmentType::ChangeInCapacity,
            "ExactCapacity" => AdjustmentType::ExactCapacity,
            "PercentChangeInCapacity" => AdjustmentType::PercentChangeInCapacity,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdjustmentType::ChangeInCapacity => "ChangeInCapacity",
            AdjustmentType::ExactCapacity => "ExactCapacity",
            AdjustmentType::PercentChangeInCapacity => "PercentChangeInCapacity",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Relative to the alarm threshold; `None` is minus infinity.
    pub lower: Option<f64>,
    /// `None` is infinity.
    pub upper: Option<f64>,
    pub adjustment: i64,
}

#[derive(Debug, Clone, Serialize)]
pub enum Kind {
    Step {
        steps: Vec<Step>,
        warmup: Option<Duration>,
        aggregation: String,
    },
    Simple {
        adjustment: i64,
        cooldown: Option<Duration>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub group: String,
    pub name: String,
    pub arn: String,
    pub kind: Kind,
    pub adjustment_type: AdjustmentType,
    pub min_adjustment_magnitude: Option<i64>,
    pub enabled: bool,
    /// When this policy last scaled out, and by how much (for warm-up).
    pub last_scale_out: Option<(Duration, i64)>,
}

/// A group's default cooldown (AWS's default; the testbed does not model setting it).
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);

/// What running a policy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Changed { from: u32, to: u32 },
    Unchanged(String),
}

impl Step {
    /// Whether a breach (metric minus threshold) falls in this step: above the threshold the
    /// lower bound is inclusive and the upper exclusive; below it, the other way round.
    fn holds(&self, breach: f64) -> bool {
        let lower = self.lower.unwrap_or(f64::NEG_INFINITY);
        let upper = self.upper.unwrap_or(f64::INFINITY);
        if breach >= 0.0 {
            lower <= breach && breach < upper
        } else {
            lower < breach && breach <= upper
        }
    }
}

/// The new capacity an adjustment asks for, before the group's bounds.
fn target(kind: AdjustmentType, adjustment: i64, min_magnitude: Option<i64>, desired: u32) -> i64 {
    let desired = i64::from(desired);
    match kind {
        AdjustmentType::ChangeInCapacity => desired + adjustment,
        AdjustmentType::ExactCapacity => adjustment,
        AdjustmentType::PercentChangeInCapacity => {
            let exact = desired as f64 * adjustment as f64 / 100.0;
            // AWS: between -1 and 1 (not 0) rounds away from zero, else towards zero.
            let mut change = if exact != 0.0 && exact.abs() < 1.0 {
                exact.signum() as i64
            } else {
                exact.trunc() as i64
            };
            if let Some(m) = min_magnitude {
                if adjustment != 0 && change.abs() < m {
                    change = m * adjustment.signum();
                }
            }
            desired + change
        }
    }
}

pub fn policy_arn(group: &str, name: &str) -> String {
    format!(
        "arn:aws:autoscaling:{}:{}:scalingPolicy:00000000-0000-4000-8000-000000000000:autoScalingGroupName/{group}:policyName/{name}",
        crate::aws::REGION,
        crate::aws::ACCOUNT
    )
}

impl Asg {
    pub fn put_policy(&mut self, policy: Policy) -> Result<String, AsgError> {
        self.group(&policy.group)?;
        if let Kind::Step { steps, .. } = &policy.kind {
            if steps.is_empty() {
                return Err(AsgError::Validation(
                    "StepAdjustments are required for a StepScaling policy".into(),
                ));
            }
            if let Some(s) = steps
                .iter()
                .find(|s| matches!((s.lower, s.upper), (Some(l), Some(u)) if l >= u))
            {
                return Err(AsgError::Validation(format!(
                    "Step adjustment lower bound {:?} must be below its upper bound {:?}",
                    s.lower, s.upper
                )));
            }
            for (i, a) in steps.iter().enumerate() {
                for b in &steps[i + 1..] {
                    let (al, au) = (
                        a.lower.unwrap_or(f64::NEG_INFINITY),
                        a.upper.unwrap_or(f64::INFINITY),
                    );
                    let (bl, bu) = (
                        b.lower.unwrap_or(f64::NEG_INFINITY),
                        b.upper.unwrap_or(f64::INFINITY),
                    );
                    if al < bu && bl < au {
                        return Err(AsgError::Validation(
                            "Step adjustments may not overlap".into(),
                        ));
                    }
                }
            }
        }
        let arn = policy.arn.clone();
        self.policies
            .retain(|p| !(p.group == policy.group && p.name == policy.name));
        self.policies.push(policy);
        Ok(arn)
    }

    pub fn delete_policy(&mut self, group: &str, name: &str) -> Result<(), AsgError> {
        let before = self.policies.len();
        self.policies
            .retain(|p| !(p.group == group && (p.name == name || p.arn == name)));
        if before == self.policies.len() {
            return Err(AsgError::Validation(format!(
                "Policy {name} not found for group {group}"
            )));
        }
        Ok(())
    }

    /// Runs a policy (`name` or ARN) of a group: from an alarm (with the metric value and
    /// the alarm's threshold) or from `ExecutePolicy`. `cause` says who asked.
    pub fn execute_policy(
        &mut self,
        group: &str,
        name: &str,
        breach: Option<(f64, f64)>,
        honor_cooldown: bool,
        cause: &str,
        now: Duration,
    ) -> Result<Outcome, AsgError> {
        let index = self
            .policies
            .iter()
            .position(|p| p.group == group && (p.name == name || p.arn == name))
            .ok_or_else(|| {
                AsgError::Validation(format!("Policy {name} not found for group {group}"))
            })?;
        let policy = self.policies[index].clone();
        if !policy.enabled {
            return Ok(Outcome::Unchanged(format!(
                "policy {} is disabled",
                policy.name
            )));
        }
        let g = self.group(group)?;
        let (min, max, desired) = (g.min, g.max, g.desired);
        let default_warmup = g.default_instance_warmup;
        // AWS: while instances warm up, dynamic scaling does not scale in.
        let warming = default_warmup.is_some_and(|w| {
            self.instances
                .values()
                .any(|i| i.group == group && i.state == State::InService && now < i.since + w)
        });
        let adjustment = match &policy.kind {
            Kind::Step { steps, .. } => {
                let (metric, threshold) = breach.ok_or_else(|| {
                    AsgError::Validation(
                        "MetricValue and BreachThreshold are required for a step scaling policy"
                            .into(),
                    )
                })?;
                let diff = metric - threshold;
                match steps.iter().find(|s| s.holds(diff)) {
                    Some(s) => s.adjustment,
                    None => {
                        return Ok(Outcome::Unchanged(format!(
                            "no step adjustment holds a breach of {diff}"
                        )))
                    }
                }
            }
            Kind::Simple {
                adjustment,
                cooldown,
            } => {
                let cooldown = cooldown.unwrap_or(DEFAULT_COOLDOWN);
                if let Some(last) = self.cooldowns.get(group) {
                    if honor_cooldown && now < *last + cooldown {
                        return Ok(Outcome::Unchanged("the group is in its cooldown".into()));
                    }
                }
                *adjustment
            }
        };
        let wanted = target(
            policy.adjustment_type,
            adjustment,
            policy.min_adjustment_magnitude,
            desired,
        );
        let mut change = wanted - i64::from(desired);
        let mut last_scale_out = policy.last_scale_out;
        if let Kind::Step { warmup, .. } = policy.kind {
            // Without a warm-up of its own a step policy uses the group's default instance
            // warm-up, else its default cooldown (300 s; the testbed does not model setting
            // the cooldown).
            let w = warmup.or(default_warmup).unwrap_or(DEFAULT_COOLDOWN);
            match last_scale_out {
                Some((at, warming)) if change > 0 && now < at + w => {
                    change = (change - warming).max(0);
                    last_scale_out = Some((at, warming + change));
                }
                _ if change > 0 => last_scale_out = Some((now, change)),
                _ => {}
            }
        }
        // Documented for step (and target tracking) policies; simple ones have cooldowns.
        if change < 0 && warming && matches!(policy.kind, Kind::Step { .. }) {
            return Ok(Outcome::Unchanged(
                "no scale-in while instances warm up (the group's default instance warm-up)".into(),
            ));
        }
        let to = (i64::from(desired) + change).clamp(i64::from(min), i64::from(max)) as u32;
        self.policies[index].last_scale_out = last_scale_out;
        if to == desired {
            return Ok(Outcome::Unchanged(format!(
                "the desired capacity stays {desired} (bounds {min} to {max})"
            )));
        }
        self.cooldowns.insert(group.to_owned(), now);
        self.change_desired(
            group,
            to,
            format!(
                "{cause} triggered policy {} changing the desired capacity from {desired} to {to}",
                policy.name
            ),
            now,
        )?;
        Ok(Outcome::Changed { from: desired, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::autoscaling::model::Group;

    fn world(desired: u32) -> Asg {
        let mut asg = Asg::new(Duration::ZERO, Duration::ZERO, Duration::ZERO);
        asg.create_group(Group::plain("g", 0, 10, desired), Duration::ZERO)
            .unwrap();
        asg
    }

    fn step_policy(warmup: Option<u64>) -> Policy {
        Policy {
            group: "g".into(),
            name: "out".into(),
            arn: policy_arn("g", "out"),
            kind: Kind::Step {
                // Idle runners below a threshold of 1 (below it the upper bound is
                // inclusive): a breach of -1 or -2 adds 1, anything lower adds 3.
                steps: vec![
                    Step {
                        lower: Some(-2.0),
                        upper: Some(0.0),
                        adjustment: 1,
                    },
                    Step {
                        lower: None,
                        upper: Some(-2.0),
                        adjustment: 3,
                    },
                ],
                warmup: warmup.map(Duration::from_secs),
                aggregation: "Average".into(),
            },
            adjustment_type: AdjustmentType::ChangeInCapacity,
            min_adjustment_magnitude: None,
            enabled: true,
            last_scale_out: None,
        }
    }

    /// One instance fewer for any breach above the threshold.
    fn scale_in_policy() -> Policy {
        Policy {
            name: "in".into(),
            arn: policy_arn("g", "in"),
            kind: Kind::Step {
                steps: vec![Step {
                    lower: Some(0.0),
                    upper: None,
                    adjustment: -1,
                }],
                warmup: None,
                aggregation: "Average".into(),
            },
            ..step_policy(None)
        }
    }

    #[test]
    fn no_scale_in_while_an_instance_is_within_the_default_instance_warm_up() {
        let run = |asg: &mut Asg, s: u64| {
            asg.execute_policy(
                "g",
                "in",
                Some((3.0, 1.0)),
                true,
                "t",
                Duration::from_secs(s),
            )
            .unwrap()
        };
        let mut asg = world(2);
        asg.set_default_instance_warmup("g", Some(Duration::from_secs(60)))
            .unwrap();
        asg.tick(Duration::ZERO);
        asg.put_policy(scale_in_policy()).unwrap();
        // Both instances entered service at 0: warming until 60.
        assert!(matches!(run(&mut asg, 59), Outcome::Unchanged(why) if why.contains("warm up")));
        assert_eq!(asg.group("g").unwrap().desired, 2);
        assert_eq!(run(&mut asg, 60), Outcome::Changed { from: 2, to: 1 });
        // A simple policy has its cooldown instead: not held back by the warm-up.
        asg.tick(Duration::from_secs(61));
        asg.put_policy(Policy {
            name: "simple-in".into(),
            arn: policy_arn("g", "simple-in"),
            kind: Kind::Simple {
                adjustment: -1,
                cooldown: Some(Duration::ZERO),
            },
            ..step_policy(None)
        })
        .unwrap();
        asg.set_desired("g", 2, Duration::from_secs(61)).unwrap();
        asg.tick(Duration::from_secs(61));
        assert_eq!(
            asg.execute_policy("g", "simple-in", None, false, "t", Duration::from_secs(62))
                .unwrap(),
            Outcome::Changed { from: 2, to: 1 }
        );
        // Without a default warm-up, nothing holds a scale-in back.
        let mut asg = world(2);
        asg.tick(Duration::ZERO);
        asg.put_policy(scale_in_policy()).unwrap();
        assert_eq!(run(&mut asg, 1), Outcome::Changed { from: 2, to: 1 });
    }

    #[test]
    fn the_matching_step_sets_the_change() {
        let mut asg = world(1);
        asg.put_policy(step_policy(Some(0))).unwrap();
        let t = Duration::from_secs(10);
        let out = asg
            .execute_policy("g", "out", Some((0.0, 1.0)), true, "test", t)
            .unwrap();
        assert_eq!(out, Outcome::Changed { from: 1, to: 2 });
        let out = asg
            .execute_policy("g", "out", Some((-5.0, 1.0)), true, "test", t)
            .unwrap();
        assert_eq!(out, Outcome::Changed { from: 2, to: 5 });
        let out = asg
            .execute_policy("g", "out", Some((3.0, 1.0)), true, "test", t)
            .unwrap();
        assert!(
            matches!(out, Outcome::Unchanged(_)),
            "no step above the threshold"
        );
        assert!(asg
            .activities
            .last()
            .unwrap()
            .cause
            .contains("changing the desired capacity from 2 to 5"));
    }

    #[test]
    fn without_a_warm_up_of_its_own_a_step_policy_warms_up_for_the_default_cooldown() {
        let mut asg = world(1);
        asg.put_policy(step_policy(None)).unwrap();
        let at = |s| Duration::from_secs(s);
        asg.execute_policy("g", "out", Some((0.0, 1.0)), true, "t", at(0))
            .unwrap();
        assert!(matches!(
            asg.execute_policy("g", "out", Some((0.0, 1.0)), true, "t", at(299))
                .unwrap(),
            Outcome::Unchanged(_)
        ));
        assert_eq!(
            asg.execute_policy("g", "out", Some((0.0, 1.0)), true, "t", at(300))
                .unwrap(),
            Outcome::Changed { from: 2, to: 3 }
        );
    }

    #[test]
    fn with_no_warm_up_every_execution_adds_its_step() {
        let mut asg = world(1);
        asg.put_policy(step_policy(Some(0))).unwrap();
        for to in 2..=10 {
            assert_eq!(
                asg.execute_policy("g", "out", Some((0.0, 1.0)), false, "t", Duration::ZERO)
                    .unwrap(),
                Outcome::Changed { from: to - 1, to }
            );
        }
        assert!(
            matches!(
                asg.execute_policy("g", "out", Some((0.0, 1.0)), false, "t", Duration::ZERO)
                    .unwrap(),
                Outcome::Unchanged(_)
            ),
            "capped at the maximum"
        );
    }

    #[test]
    fn warm_up_counts_capacity_still_warming() {
        let mut asg = world(1);
        asg.put_policy(step_policy(Some(300))).unwrap();
        let at = |s| Duration::from_secs(s);
        asg.execute_policy("g", "out", Some((0.0, 1.0)), true, "t", at(0))
            .unwrap();
        let again = asg
            .execute_policy("g", "out", Some((0.0, 1.0)), true, "t", at(60))
            .unwrap();
        assert!(
            matches!(again, Outcome::Unchanged(_)),
            "one instance is still warming up"
        );
        let bigger = asg
            .execute_policy("g", "out", Some((-5.0, 1.0)), true, "t", at(120))
            .unwrap();
        assert_eq!(
            bigger,
            Outcome::Changed { from: 2, to: 4 },
            "3 wanted, 1 warming"
        );
        let later = asg
            .execute_policy("g", "out", Some((0.0, 1.0)), true, "t", at(500))
            .unwrap();
        assert_eq!(later, Outcome::Changed { from: 4, to: 5 });
    }

    #[test]
    fn percent_and_exact_adjustments_and_simple_cooldown() {
        assert_eq!(
            target(AdjustmentType::PercentChangeInCapacity, 50, None, 3),
            4
        );
        assert_eq!(
            target(AdjustmentType::PercentChangeInCapacity, 10, None, 3),
            4,
            "0.3 rounds up to 1"
        );
        assert_eq!(
            target(AdjustmentType::PercentChangeInCapacity, 10, Some(2), 3),
            5
        );
        assert_eq!(
            target(AdjustmentType::PercentChangeInCapacity, -50, None, 5),
            3
        );
        assert_eq!(target(AdjustmentType::ExactCapacity, 7, None, 3), 7);
        let mut asg = world(1);
        asg.put_policy(Policy {
            name: "in".into(),
            arn: policy_arn("g", "in"),
            kind: Kind::Simple {
                adjustment: -1,
                cooldown: Some(Duration::from_secs(100)),
            },
            ..step_policy(None)
        })
        .unwrap();
        let at = |s| Duration::from_secs(s);
        asg.set_desired("g", 3, at(0)).unwrap();
        assert_eq!(
            asg.execute_policy("g", "in", None, true, "t", at(1))
                .unwrap(),
            Outcome::Changed { from: 3, to: 2 }
        );
        assert!(matches!(
            asg.execute_policy("g", "in", None, true, "t", at(50))
                .unwrap(),
            Outcome::Unchanged(_)
        ));
        assert_eq!(
            asg.execute_policy("g", "in", None, false, "t", at(50))
                .unwrap(),
            Outcome::Changed { from: 2, to: 1 }
        );
        assert_eq!(
            asg.execute_policy("g", "in", None, true, "t", at(200))
                .unwrap(),
            Outcome::Changed { from: 1, to: 0 }
        );
        assert!(
            matches!(
                asg.execute_policy("g", "in", None, true, "t", at(400))
                    .unwrap(),
                Outcome::Unchanged(_)
            ),
            "min bound"
        );
    }
}
