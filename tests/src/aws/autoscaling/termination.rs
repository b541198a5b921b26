//! Termination policies, as far as AWS documents them: a group's `TerminationPolicies` are
//! named policies, or start with one Lambda function's ARN, a custom termination policy
//! ("Create a custom termination policy with Lambda", EC2 Auto Scaling User Guide). On a
//! scale-in such a group lowers its desired capacity, asks the function which of the
//! instances it could take to take (the capacity per zone and its proposals, the default
//! policy's order), and takes those the answer names, up to the capacity; none, fewer, or a
//! failing function: it asks again a short time later, desired capacity staying below the
//! group's. Protected instances are never proposed nor taken.
//!
//! What the testbed does not model: AWS asks the function for instance refreshes, the
//! maximum instance lifetime and zone rebalancing too, here those keep the default policy;
//! the testbed has one zone; it does not check that the function's resource policy lets
//! Auto Scaling invoke it, nor hold the function to its 2 s.

use super::model::{invalid, Asg, AsgError, Effect, Group, Instance};
use std::time::Duration;

/// The named policies AWS accepts.
const NAMED: [&str; 7] = [
    "Default",
    "AllocationStrategy",
    "ClosestToNextInstanceHour",
    "NewestInstance",
    "OldestInstance",
    "OldestLaunchConfiguration",
    "OldestLaunchTemplate",
];

/// How long after an answer that took fewer instances than needed (or a failure) the group
/// asks again: AWS says "a short time" and no more; the testbed's choice.
pub const ASK_AGAIN: Duration = Duration::from_secs(10);

/// An ask with no answer by then counts as failed (AWS allows the function 2 s).
const UNANSWERED: Duration = Duration::from_secs(60);

/// A Lambda function's ARN, in any partition (`arn:aws:lambda:...`, `arn:aws-cn:lambda:...`).
fn is_function(policy: &str) -> bool {
    let mut parts = policy.split(':');
    parts.next() == Some("arn") && parts.nth(1) == Some("lambda")
}

/// Checks a group's `TerminationPolicies` as AWS does: named policies, or one function ARN
/// first; `$LATEST` is refused (AWS asks for an unqualified ARN, a version or an alias).
pub fn validate(policies: &[String]) -> Result<(), AsgError> {
    for (i, p) in policies.iter().enumerate() {
        if is_function(p) {
            if i != 0 {
                return Err(invalid(format!(
                    "The custom termination policy {p} must be the first termination policy"
                )));
            }
            if p.ends_with(":$LATEST") {
                return Err(invalid(format!(
                    "{p}: use an unqualified function ARN, a version or an alias, not $LATEST"
                )));
            }
        } else if !NAMED.contains(&p.as_str()) {
            return Err(invalid(format!("Unknown termination policy: {p}")));
        }
    }
    Ok(())
}

/// The function ARN of a group's custom termination policy, if it has one.
pub fn custom(policies: &[String]) -> Option<&str> {
    policies
        .first()
        .map(String::as_str)
        .filter(|p| is_function(p))
}

impl Asg {
    /// A scale-in of `group` by `capacity` with the custom policy `function`: asks it
    /// (unless an ask is outstanding or was answered short a moment ago).
    pub(super) fn ask_termination(
        &mut self,
        group: &Group,
        function: &str,
        capacity: u32,
        candidates: &[&Instance],
        effects: &mut Vec<Effect>,
    ) {
        let now = self.now;
        if self
            .termination_asks
            .get(&group.name)
            .is_some_and(|t| now < *t)
        {
            return;
        }
        self.termination_asks
            .insert(group.name.clone(), now + UNANSWERED);
        effects.push(Effect::ChooseTermination {
            group: group.name.clone(),
            function: function.to_owned(),
            capacity,
            candidates: candidates.iter().map(|i| i.id.clone()).collect(),
            spot: group.spot,
        });
    }

    /// The function's answer (`None`: it failed): takes the instances it names that the
    /// scale-in may take, up to what the group is still over its desired capacity.
    pub fn termination_chosen(&mut self, group: &str, chosen: Option<&[String]>, now: Duration) {
        self.now = now;
        let Ok(g) = self.group(group).cloned() else {
            return;
        };
        let members: Vec<&Instance> = self
            .instances
            .values()
            .filter(|i| i.group == group && i.state.in_group_capacity())
            .collect();
        let excess = (members.len() as u32).saturating_sub(g.desired) as usize;
        let takeable = |id: &String| members.iter().any(|i| &i.id == id && !i.protected);
        let take: Vec<String> = chosen
            .unwrap_or_default()
            .iter()
            .filter(|id| takeable(id))
            .take(excess)
            .cloned()
            .collect();
        let reuse = g.warm_pool.as_ref().is_some_and(|p| p.reuse_on_scale_in);
        let mut effects = std::mem::take(&mut self.carried);
        for id in &take {
            if reuse {
                self.return_to_pool(id, now, &mut effects);
            } else {
                self.begin_termination(
                    id,
                    "an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity; the group's custom termination policy chose it",
                    now,
                    &mut effects,
                );
            }
        }
        self.carried = effects;
        if take.len() < excess {
            self.termination_asks
                .insert(group.to_owned(), now + ASK_AGAIN);
        } else {
            self.termination_asks.remove(group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::autoscaling::model::State;

    const F: &str = "arn:aws:lambda:us-east-1:123456789012:function:deregistration";
    const S: Duration = Duration::from_secs(1);

    fn asks(effects: &[Effect]) -> Vec<&Effect> {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::ChooseTermination { .. }))
            .collect()
    }

    #[test]
    fn a_scale_in_asks_the_function_takes_what_it_names_and_asks_again_when_short() {
        let mut asg = Asg::default();
        let mut g = Group::plain("g", 0, 4, 3);
        g.termination_policies = names(&[F, "Default"]);
        asg.create_group(g, Duration::ZERO).unwrap();
        asg.tick(Duration::ZERO);
        asg.tick(S);
        let ids: Vec<String> = asg.instances.keys().cloned().collect();
        asg.set_protection("g", &ids[..1], true).unwrap();
        asg.set_desired("g", 1, 2 * S).unwrap();
        let effects = asg.tick(2 * S);
        let ask = asks(&effects);
        assert_eq!(ask.len(), 1, "{effects:?}");
        let Effect::ChooseTermination {
            function,
            capacity,
            candidates,
            ..
        } = ask[0]
        else {
            unreachable!()
        };
        assert_eq!((function.as_str(), *capacity), (F, 2));
        assert_eq!(candidates, &ids[1..], "the protected one is not proposed");
        let in_service = |asg: &Asg, id: &String| asg.instances[id].state == State::InService;
        assert!(ids.iter().all(|i| in_service(&asg, i)), "nothing taken yet");
        assert!(asks(&asg.tick(3 * S)).is_empty(), "one ask at a time");

        // It names the protected instance (never taken) and one other: one taken, and the
        // group asks again a short time later for the one still over.
        asg.termination_chosen("g", Some(&[ids[0].clone(), ids[2].clone()]), 4 * S);
        asg.tick(4 * S);
        assert!(
            !in_service(&asg, &ids[2]),
            "{:?}",
            asg.instances[&ids[2]].state
        );
        assert!(in_service(&asg, &ids[0]) && in_service(&asg, &ids[1]));
        assert!(asks(&asg.tick(5 * S)).is_empty());
        assert_eq!(asks(&asg.tick(4 * S + ASK_AGAIN)).len(), 1);
        // A failing function takes nothing; the group asks again.
        asg.termination_chosen("g", None, 20 * S);
        assert!(in_service(&asg, &ids[1]));
        assert_eq!(asks(&asg.tick(20 * S + ASK_AGAIN)).len(), 1);
        asg.termination_chosen("g", Some(&[ids[1].clone()]), 40 * S);
        asg.tick(40 * S);
        assert!(!in_service(&asg, &ids[1]));
        assert!(
            asks(&asg.tick(60 * S)).is_empty(),
            "at its desired capacity"
        );
    }

    fn names(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn while_a_scale_in_waits_for_its_answer_the_warm_pool_does_not_grow_past_the_prepared_capacity(
    ) {
        use crate::aws::autoscaling::model::{PoolState, WarmPool};
        let mut asg = Asg::default();
        let mut g = Group::plain("g", 0, 4, 3);
        g.termination_policies = names(&[F]);
        asg.create_group(g, Duration::ZERO).unwrap();
        asg.put_warm_pool(
            "g",
            WarmPool {
                min_size: 0,
                max_prepared: Some(4),
                state: PoolState::Running,
                reuse_on_scale_in: true,
            },
        )
        .unwrap();
        for t in 0..5 {
            asg.tick(t * S);
        }
        let count = |asg: &Asg, warm: bool| {
            asg.instances
                .values()
                .filter(|i| !i.state.is_gone() && i.state.is_warmed() == warm)
                .count()
        };
        assert_eq!((count(&asg, false), count(&asg, true)), (3, 1));
        // Desired 1: the pool's size is 3, but two instances above the desired capacity
        // wait for the function's answer: group and pool stay at the prepared 4.
        asg.set_desired("g", 1, 5 * S).unwrap();
        for t in 5..10 {
            asg.tick(t * S);
        }
        assert_eq!((count(&asg, false), count(&asg, true)), (3, 1));
        // The answer takes both; they go back to the pool, which is then full.
        let ids: Vec<String> = asg
            .instances
            .values()
            .filter(|i| !i.state.is_warmed())
            .map(|i| i.id.clone())
            .take(2)
            .collect();
        asg.termination_chosen("g", Some(&ids), 10 * S);
        for t in 10..20 {
            asg.tick(t * S);
        }
        assert_eq!((count(&asg, false), count(&asg, true)), (1, 3));
    }

    #[test]
    fn a_function_comes_first_unqualified_or_by_version_and_names_must_be_known() {
        let f = "arn:aws:lambda:us-east-1:123456789012:function:deregistration";
        assert!(validate(&names(&[f, "OldestInstance", "Default"])).is_ok());
        assert!(validate(&names(&[&format!("{f}:live")])).is_ok());
        let china = "arn:aws-cn:lambda:cn-north-1:123456789012:function:termination-policy";
        assert_eq!(custom(&names(&[china])), Some(china));
        assert_eq!(custom(&names(&[f, "Default"])), Some(f));
        assert_eq!(custom(&names(&["Default"])), None);
        for bad in [
            names(&["Default", f]),
            names(&[&format!("{f}:$LATEST")]),
            names(&["Oldest"]),
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
    }
}
