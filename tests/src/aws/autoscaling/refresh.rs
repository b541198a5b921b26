//! Instance refresh (`StartInstanceRefresh`, the Rolling strategy): replaces the group's
//! instances that were launched from another launch template (every instance, without skip
//! matching), those in service first, then the warm pool, as AWS documents it.
//!
//! The model's rules:
//! - MaxHealthyPercentage above 100 (or both at 100, which AWS documents as launch before
//!   terminate): replacements launch first (new instances, with the group's launch
//!   template), at most ceil(size × (max − 100) / 100) at a time; each one in service and
//!   past the warm-up takes one old instance out. With a maximum of 100: old instances go
//!   first, floor(size × (100 − min) / 100) (at least 1) at a time, each replaced by a new
//!   instance at once, once the previous ones are ready. The size is the desired capacity,
//!   then the warm pool's. (AWS may also go below 100 % when the maximum is above 100 and the
//!   minimum below; the model only launches first then.)
//! - Replacements that keep failing (abandoned launches) fail the refresh after an hour
//!   without one that succeeded, as AWS documents.
//! - A cancel waits for the launches and terminations under way, as AWS does by default.
//! - ScaleInProtectedInstances: `Refresh` replaces protected instances too, `Ignore` leaves
//!   them (and still succeeds), `Wait` waits for their protection to end and fails after
//!   an hour.
//! - Old instances go through the terminate hooks, protected or not, and never back to the
//!   warm pool.
//! - The warm pool is refreshed once no old instance is left in service and every one
//!   taken out has terminated (its terminate hooks done).
//!
//! AWS does not document the last two; docs/development/testbed.md says what the model
//! chose and why.

use super::model::{invalid, Asg, AsgError, Effect, Instance, State};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::Duration;

/// How long `Wait` waits for protected instances, and how long replacements may keep
/// failing, before the refresh fails.
const PATIENCE: Duration = Duration::from_secs(3600);

/// What a refresh does with instances protected from scale in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protected {
    Refresh,
    Ignore,
    Wait,
}

impl Protected {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Refresh" => Protected::Refresh,
            "Ignore" => Protected::Ignore,
            "Wait" => Protected::Wait,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protected::Refresh => "Refresh",
            Protected::Ignore => "Ignore",
            Protected::Wait => "Wait",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Preferences {
    pub min_healthy: u32,
    pub max_healthy: u32,
    /// How long a replacement must have been in service before the next step.
    pub warmup: Duration,
    pub skip_matching: bool,
    pub protected: Protected,
    /// `StandbyInstances` as given (the testbed has no standby instances).
    pub standby: String,
}

impl Preferences {
    /// AWS's bounds on the percentages.
    pub fn check(&self) -> Result<(), AsgError> {
        if self.min_healthy > 100 {
            return Err(invalid(format!(
                "MinHealthyPercentage {} must be between 0 and 100",
                self.min_healthy
            )));
        }
        if !(100..=200).contains(&self.max_healthy) {
            return Err(invalid(format!(
                "MaxHealthyPercentage {} must be between 100 and 200",
                self.max_healthy
            )));
        }
        if self.max_healthy - self.min_healthy > 100 {
            return Err(invalid(
                "The difference between MaxHealthyPercentage and MinHealthyPercentage cannot be greater than 100",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    Pending,
    InProgress,
    Successful,
    Failed,
    Cancelling,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::InProgress => "InProgress",
            Status::Successful => "Successful",
            Status::Failed => "Failed",
            Status::Cancelling => "Cancelling",
            Status::Cancelled => "Cancelled",
        }
    }

    fn active(self) -> bool {
        matches!(
            self,
            Status::Pending | Status::InProgress | Status::Cancelling
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Refresh {
    pub id: String,
    pub group: String,
    pub status: Status,
    pub reason: Option<String>,
    pub started: Duration,
    pub ended: Option<Duration>,
    pub preferences: Preferences,
    /// The instances to replace, as the refresh found them when it started.
    pub old: BTreeSet<String>,
    /// How many of them were in service, and in the warm pool, then.
    pub live_total: u32,
    pub warm_total: u32,
    /// Replacements launched whose old instance has not been taken out yet.
    pub surge: Vec<String>,
    /// Old instances it took out.
    pub retired: BTreeSet<String>,
    /// Since when it has waited for protected instances (`Wait`).
    pub waiting_since: Option<Duration>,
    /// Since when its replacements have failed without one succeeding.
    pub failing_since: Option<Duration>,
}

/// Instances still to replace, in service and in the warm pool.
pub struct Left {
    pub live: u32,
    pub warm: u32,
}

impl Refresh {
    fn finish(&mut self, status: Status, reason: Option<String>, now: Duration) {
        self.status = status;
        self.reason = reason;
        self.ended = Some(now);
        self.surge.clear();
    }

    /// The old instances not yet replaced, by pool.
    pub fn left(&self, asg: &Asg) -> Left {
        let mut left = Left { live: 0, warm: 0 };
        for i in self.outdated(asg) {
            if i.state.is_warmed() {
                left.warm += 1;
            } else {
                left.live += 1;
            }
        }
        left
    }

    /// Old instances still in the group and not taken out.
    fn outdated<'a>(&'a self, asg: &'a Asg) -> impl Iterator<Item = &'a Instance> + 'a {
        self.old
            .iter()
            .filter(|id| !self.retired.contains(*id))
            .filter_map(|id| asg.instances.get(id))
            .filter(|i| !i.state.is_leaving())
    }
}

impl Asg {
    /// `StartInstanceRefresh`: its id.
    pub fn start_refresh(
        &mut self,
        group: &str,
        preferences: Preferences,
        now: Duration,
    ) -> Result<String, AsgError> {
        preferences.check()?;
        let template = self.group(group)?.launch_template.clone();
        if self
            .refreshes
            .iter()
            .any(|r| r.group == group && r.status.active())
        {
            return Err(AsgError::RefreshInProgress(
                "An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.".into(),
            ));
        }
        let old: Vec<&Instance> = self
            .instances
            .values()
            .filter(|i| i.group == group && !i.state.is_leaving())
            .filter(|i| !preferences.skip_matching || i.launch_template != template)
            .collect();
        let warm_total = old.iter().filter(|i| i.state.is_warmed()).count() as u32;
        let live_total = old.len() as u32 - warm_total;
        let old = old.into_iter().map(|i| i.id.clone()).collect();
        let id = self.token();
        self.refreshes.push(Refresh {
            id: id.clone(),
            group: group.to_owned(),
            status: Status::Pending,
            reason: None,
            started: now,
            ended: None,
            preferences,
            old,
            live_total,
            warm_total,
            surge: Vec::new(),
            retired: BTreeSet::new(),
            waiting_since: None,
            failing_since: None,
        });
        Ok(id)
    }

    /// `CancelInstanceRefresh`: the id of the refresh it cancels.
    pub fn cancel_refresh(&mut self, group: &str) -> Result<String, AsgError> {
        self.group(group)?;
        let r = self
            .refreshes
            .iter_mut()
            .rev()
            .find(|r| {
                r.group == group && matches!(r.status, Status::Pending | Status::InProgress)
            })
            .ok_or_else(|| {
                AsgError::NoActiveRefresh(format!(
                    "No in progress or pending Instance Refresh found for Auto Scaling group {group}"
                ))
            })?;
        r.status = Status::Cancelling;
        Ok(r.id.clone())
    }

    /// The replacements above the group's capacity: (in service, in the warm pool).
    pub(super) fn surge(&self, group: &str) -> (u32, u32) {
        let (mut live, mut warm) = (0, 0);
        for r in self
            .refreshes
            .iter()
            .filter(|r| r.group == group && r.status.active())
        {
            for i in r.surge.iter().filter_map(|id| self.instances.get(id)) {
                if i.state.is_warmed() {
                    warm += 1;
                } else if !i.state.is_leaving() {
                    live += 1;
                }
            }
        }
        (live, warm)
    }

    /// Moves every refresh under way one step.
    pub(super) fn refresh_step(&mut self, now: Duration, effects: &mut Vec<Effect>) {
        for k in 0..self.refreshes.len() {
            let mut r = self.refreshes[k].clone();
            match r.status {
                Status::Pending | Status::InProgress => {
                    r.status = Status::InProgress;
                    self.refresh(&mut r, now, effects);
                }
                // Launches and terminations under way finish first.
                Status::Cancelling => {
                    if !self.in_flight(&r) {
                        r.finish(Status::Cancelled, None, now);
                    }
                }
                Status::Successful | Status::Failed | Status::Cancelled => continue,
            }
            self.refreshes[k] = r;
        }
    }

    /// Replacements not yet in service, or instances taken out not yet terminated.
    fn in_flight(&self, r: &Refresh) -> bool {
        let launching = r
            .surge
            .iter()
            .filter_map(|id| self.instances.get(id))
            .any(|i| {
                matches!(
                    i.state,
                    State::Pending
                        | State::PendingWait
                        | State::PendingProceed
                        | State::WarmedPending
                        | State::WarmedPendingWait
                        | State::WarmedPendingProceed
                )
            });
        launching || self.draining(r)
    }

    /// Instances it took out that have not terminated yet (their terminate hooks held).
    fn draining(&self, r: &Refresh) -> bool {
        r.retired
            .iter()
            .filter_map(|id| self.instances.get(id))
            .any(|i| !i.state.is_gone())
    }

    fn refresh(&mut self, r: &mut Refresh, now: Duration, effects: &mut Vec<Effect>) {
        let Some(desired) = self.groups.get(&r.group).map(|g| g.desired) else {
            r.finish(
                Status::Failed,
                Some("The Auto Scaling group was deleted.".into()),
                now,
            );
            return;
        };
        // A replacement that failed (its launch abandoned, or terminated) is no surge; an
        // hour of nothing but failures fails the refresh.
        let before = r.surge.len();
        r.surge.retain(|id| {
            self.instances
                .get(id)
                .is_some_and(|i| !i.state.is_leaving())
        });
        if r.surge.len() < before {
            r.failing_since.get_or_insert(now);
        }
        if r.failing_since.is_some_and(|since| now >= since + PATIENCE) {
            r.finish(
                Status::Failed,
                Some("Instance refresh failed: its replacement instances kept failing to launch for an hour.".into()),
                now,
            );
            return;
        }
        let mut live: Vec<&Instance> = r.outdated(self).filter(|i| !i.state.is_warmed()).collect();
        // In service before launching, unprotected first, oldest first.
        live.sort_by_key(|i| (i.state != State::InService, i.protected, i.launched_at));
        let (replaceable, blocked): (Vec<&Instance>, Vec<&Instance>) = live
            .into_iter()
            .partition(|i| r.preferences.protected == Protected::Refresh || !i.protected);
        let replaceable: Vec<String> = replaceable.into_iter().map(|i| i.id.clone()).collect();
        let blocked = !blocked.is_empty();
        let live_surge = r
            .surge
            .iter()
            .any(|id| self.instances.get(id).is_some_and(|i| !i.state.is_warmed()));
        if !replaceable.is_empty() || live_surge {
            r.waiting_since = None;
            self.replace(r, desired, replaceable, false, now, effects);
            return;
        }
        if blocked && r.preferences.protected == Protected::Wait {
            let since = *r.waiting_since.get_or_insert(now);
            if now >= since + PATIENCE {
                r.finish(
                    Status::Failed,
                    Some("Instance refresh failed: instances protected from scale in were still protected after an hour (ScaleInProtectedInstances is Wait).".into()),
                    now,
                );
            }
            return;
        }
        // The pool in service is done once the instances taken out have terminated.
        if self.draining(r) {
            return;
        }
        let warm: Vec<String> = {
            let mut warm: Vec<&Instance> =
                r.outdated(self).filter(|i| i.state.is_warmed()).collect();
            warm.sort_by_key(|i| i.launched_at);
            warm.into_iter().map(|i| i.id.clone()).collect()
        };
        if warm.is_empty() && r.surge.is_empty() {
            r.finish(Status::Successful, None, now);
            return;
        }
        // The pool's configured size (its instances in flight would make it drift).
        let pool = self
            .groups
            .get(&r.group)
            .and_then(|g| g.warm_pool_size())
            .unwrap_or(0);
        self.replace(r, pool, warm, true, now, effects);
    }

    /// One step in one pool: each replacement that is ready takes one of `old` (in order)
    /// out, then the next batch launches (or, at MaxHealthyPercentage 100, goes).
    fn replace(
        &mut self,
        r: &mut Refresh,
        size: u32,
        old: Vec<String>,
        warm: bool,
        now: Duration,
        effects: &mut Vec<Effect>,
    ) {
        let p = r.preferences.clone();
        let ready = |i: &Instance| {
            if warm {
                i.state.warmed_ready()
            } else {
                i.state == State::InService && now >= i.since + p.warmup
            }
        };
        let mut old = old.into_iter();
        let mine: Vec<String> = r
            .surge
            .iter()
            .filter(|id| {
                self.instances
                    .get(*id)
                    .is_some_and(|i| i.state.is_warmed() == warm)
            })
            .cloned()
            .collect();
        for id in &mine {
            if self.instances.get(id).is_some_and(ready) {
                r.failing_since = None;
                r.surge.retain(|s| s != id);
                if let Some(victim) = old.next() {
                    self.retire(r, &victim, now, effects);
                }
            }
        }
        let left: Vec<String> = old.collect();
        let in_flight = r.surge.iter().filter(|s| mine.contains(s)).count();
        // Both at 100: one replacement at a time, launched first.
        if p.max_healthy > 100 || p.min_healthy == 100 {
            let batch = (size * (p.max_healthy - 100)).div_ceil(100).max(1) as usize;
            let n = batch
                .saturating_sub(in_flight)
                .min(left.len().saturating_sub(in_flight));
            for _ in 0..n {
                let id = self.launch(&r.group, warm, now, effects);
                r.surge.push(id);
            }
        } else {
            // Old instances first, once the group has replaced the previous batch.
            let settling = self.instances.values().any(|i| {
                i.group == r.group
                    && i.state.is_warmed() == warm
                    && !i.state.is_leaving()
                    && !ready(i)
            });
            if !settling {
                // Each goes with a new instance in its place at once (not one from the
                // warm pool, which still holds old ones).
                let batch = (size * (100 - p.min_healthy) / 100).max(1) as usize;
                for victim in left.iter().take(batch) {
                    self.retire(r, victim, now, effects);
                    self.launch(&r.group, warm, now, effects);
                }
            }
        }
    }

    fn retire(&mut self, r: &mut Refresh, id: &str, now: Duration, effects: &mut Vec<Effect>) {
        self.begin_termination(
            id,
            "an instance was taken out of service in response to an instance refresh",
            now,
            effects,
        );
        r.retired.insert(id.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::autoscaling::model::{
        ActionRef, Group, Hook, HookResult, LaunchTemplate, PoolState, Transition, WarmPool,
    };

    const S: Duration = Duration::from_secs(1);

    fn template(version: &str) -> LaunchTemplate {
        LaunchTemplate {
            id: Some("lt-0123456789abcdef0".into()),
            name: None,
            version: version.into(),
        }
    }

    fn module_preferences() -> Preferences {
        Preferences {
            min_healthy: 100,
            max_healthy: 110,
            warmup: 60 * S,
            skip_matching: true,
            protected: Protected::Refresh,
            standby: "Ignore".into(),
        }
    }

    /// A group of 3 in service and a hibernated warm pool of 2, on version 1, with a
    /// terminate hook when `drain` (completed by hand).
    fn fleet(drain: bool) -> Asg {
        let mut asg = Asg::default();
        let mut g = Group::plain("g", 0, 6, 3);
        g.launch_template = Some(template("1"));
        asg.create_group(g, Duration::ZERO).unwrap();
        if drain {
            asg.put_hook(
                "g",
                Hook {
                    name: "deregistration".into(),
                    transition: Transition::Terminating,
                    heartbeat_timeout: Duration::from_secs(3600),
                    default_result: HookResult::Continue,
                    metadata: None,
                },
            )
            .unwrap();
        }
        asg.put_warm_pool(
            "g",
            WarmPool {
                min_size: 2,
                max_prepared: Some(5),
                state: PoolState::Hibernated,
                reuse_on_scale_in: true,
            },
        )
        .unwrap();
        asg.tick(Duration::ZERO);
        asg.tick(S);
        asg.set_launch_template("g", template("2")).unwrap();
        asg
    }

    /// Protects one instance in service (a busy runner); its id.
    fn protect_one(asg: &mut Asg) -> String {
        let busy = asg
            .instances
            .values()
            .find(|i| i.state == State::InService)
            .unwrap()
            .id
            .clone();
        asg.set_protection("g", std::slice::from_ref(&busy), true)
            .unwrap();
        busy
    }

    fn version(i: &Instance) -> &str {
        i.launch_template
            .as_ref()
            .map_or("", |t| t.version.as_str())
    }

    fn alive(asg: &Asg) -> Vec<&Instance> {
        asg.instances
            .values()
            .filter(|i| !i.state.is_leaving())
            .collect()
    }

    fn in_service(asg: &Asg) -> usize {
        alive(asg)
            .iter()
            .filter(|i| i.state == State::InService)
            .count()
    }

    /// Completes every terminate hook waiting, but `except`'s.
    fn drain_all(asg: &mut Asg, except: Option<&str>) {
        let waiting: Vec<String> = asg
            .instances
            .values()
            .filter(|i| {
                Some(i.id.as_str()) != except
                    && matches!(
                        i.state,
                        State::TerminatingWait | State::WarmedTerminatingWait
                    )
            })
            .map(|i| i.id.clone())
            .collect();
        for id in waiting {
            asg.complete(
                "g",
                "deregistration",
                ActionRef::Instance(&id),
                HookResult::Continue,
            )
            .unwrap();
        }
    }

    #[test]
    fn the_module_s_refresh_replaces_in_service_instances_one_ahead_then_the_warm_pool() {
        let mut asg = fleet(false);
        assert_eq!(in_service(&asg), 3);
        let id = asg.start_refresh("g", module_preferences(), 2 * S).unwrap();
        let mut warm_replaced_at = None;
        let mut live_done_at = None;
        for t in 2..2000u32 {
            let now = t * S;
            asg.tick(now);
            // MinHealthyPercentage 100: never fewer than 3 in service; 110 of 3: one more
            // at most.
            assert!(in_service(&asg) >= 3, "at {t}s: {:?}", alive(&asg));
            let in_group = alive(&asg).iter().filter(|i| !i.state.is_warmed()).count();
            assert!(in_group <= 4, "at {t}s: {in_group} in the group");
            let old_live = alive(&asg)
                .iter()
                .filter(|i| !i.state.is_warmed() && version(i) == "1")
                .count();
            if old_live == 0 && live_done_at.is_none() {
                live_done_at = Some(t);
            }
            let old_warm = alive(&asg)
                .iter()
                .filter(|i| i.state.is_warmed() && version(i) == "1")
                .count();
            if old_warm < 2 && warm_replaced_at.is_none() {
                warm_replaced_at = Some(t);
            }
            if asg.refreshes[0].status == Status::Successful {
                break;
            }
        }
        let r = &asg.refreshes[0];
        assert_eq!(r.id, id);
        assert_eq!(r.status, Status::Successful, "{r:?}");
        assert_eq!((r.live_total, r.warm_total), (3, 2));
        // In service first (each replacement past its 60 s warm-up), then the pool.
        let (live, warm) = (live_done_at.unwrap(), warm_replaced_at.unwrap());
        assert!(live >= 3 * 60, "the live pool finished at {live}s");
        assert!(
            warm >= live,
            "warm pool at {warm}s, live pool done at {live}s"
        );
        // Everything left runs version 2: 3 in service, 2 hibernated.
        let now: Vec<(&str, State)> = alive(&asg).iter().map(|i| (version(i), i.state)).collect();
        assert_eq!(now.len(), 5, "{now:?}");
        assert!(now.iter().all(|(v, _)| *v == "2"), "{now:?}");
        assert_eq!(
            now.iter()
                .filter(|(_, s)| *s == State::WarmedHibernated)
                .count(),
            2
        );
        assert_eq!(r.left(&asg).live + r.left(&asg).warm, 0);
    }

    #[test]
    fn a_protected_instance_is_replaced_through_its_terminate_hook_and_the_pool_waits_for_it() {
        let mut asg = fleet(true);
        let busy = protect_one(&mut asg);
        asg.start_refresh("g", module_preferences(), 2 * S).unwrap();
        // Let everything run except the busy instance's drain.
        for t in 2..1000u32 {
            asg.tick(t * S);
            drain_all(&mut asg, Some(&busy));
        }
        // Protected or not, it was taken out, and waits in its terminate hook (its job
        // draining); the warm pool is not touched meanwhile.
        assert_eq!(asg.instances[&busy].state, State::TerminatingWait);
        assert_eq!(asg.refreshes[0].status, Status::InProgress);
        let warm: Vec<&str> = alive(&asg)
            .iter()
            .filter(|i| i.state.is_warmed())
            .map(|i| version(i))
            .collect();
        assert_eq!(warm, ["1", "1"]);
        // The drain ends: the pool is refreshed, and the refresh succeeds.
        for t in 1000..2000u32 {
            drain_all(&mut asg, None);
            asg.tick(t * S);
        }
        assert_eq!(asg.instances[&busy].state, State::Terminated);
        assert_eq!(asg.refreshes[0].status, Status::Successful);
        assert!(alive(&asg).iter().all(|i| version(i) == "2"));
    }

    #[test]
    fn ignore_leaves_protected_instances_and_wait_fails_after_an_hour() {
        for (protected, status) in [
            (Protected::Ignore, Status::Successful),
            (Protected::Wait, Status::Failed),
        ] {
            let mut asg = fleet(false);
            let busy = protect_one(&mut asg);
            let preferences = Preferences {
                protected,
                ..module_preferences()
            };
            asg.start_refresh("g", preferences, 2 * S).unwrap();
            for t in 2..5000u32 {
                asg.tick(t * S);
            }
            let r = &asg.refreshes[0];
            assert_eq!(r.status, status, "{protected:?}: {r:?}");
            assert_eq!(
                asg.instances[&busy].state,
                State::InService,
                "{protected:?}"
            );
            assert_eq!(version(&asg.instances[&busy]), "1");
            let ended = r.ended.unwrap();
            if protected == Protected::Wait {
                assert!(r.reason.as_ref().unwrap().contains("protected"));
                assert!(ended >= PATIENCE, "failed at {ended:?}");
                // Wait does not go on to the warm pool.
                assert!(alive(&asg)
                    .iter()
                    .filter(|i| i.state.is_warmed())
                    .all(|i| version(i) == "1"));
            }
        }
    }

    #[test]
    fn skip_matching_keeps_current_instances_one_refresh_at_a_time_and_cancel_stops_it() {
        let mut asg = fleet(false);
        // Nothing differs from version 1: with skip matching, nothing to do.
        asg.set_launch_template("g", template("1")).unwrap();
        asg.start_refresh("g", module_preferences(), 2 * S).unwrap();
        asg.tick(3 * S);
        assert_eq!(asg.refreshes[0].status, Status::Successful);
        assert_eq!(asg.refreshes[0].old.len(), 0);
        // Without it, every instance is replaced, even on the same version.
        let all = Preferences {
            skip_matching: false,
            ..module_preferences()
        };
        asg.start_refresh("g", all.clone(), 4 * S).unwrap();
        assert_eq!(asg.refreshes[1].old.len(), 5);
        assert_eq!(
            asg.start_refresh("g", all, 5 * S),
            Err(AsgError::RefreshInProgress(
                "An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.".into()
            ))
        );
        asg.tick(5 * S);
        let cancelled = asg.cancel_refresh("g").unwrap();
        assert_eq!(cancelled, asg.refreshes[1].id);
        asg.tick(6 * S);
        assert_eq!(asg.refreshes[1].status, Status::Cancelled);
        assert!(matches!(
            asg.cancel_refresh("g"),
            Err(AsgError::NoActiveRefresh(_))
        ));
        // The replacement launched before the cancel is capacity no more: back to 3.
        for t in 7..100u32 {
            asg.tick(t * S);
        }
        let in_group = alive(&asg).iter().filter(|i| !i.state.is_warmed()).count();
        assert_eq!(in_group, 3);
    }

    #[test]
    fn terminate_first_at_a_max_of_100_keeps_the_minimum_in_service() {
        let mut asg = fleet(false);
        // Replacements take time to boot, so that a batch shows in the count.
        asg.boot_delay = 40 * S;
        let preferences = Preferences {
            min_healthy: 60,
            max_healthy: 100,
            ..module_preferences()
        };
        asg.start_refresh("g", preferences, 2 * S).unwrap();
        let mut lowest = usize::MAX;
        for t in 2..3000u32 {
            let effects = asg.tick(t * S);
            // 60 % of 3: one out at a time (floor(3 × 40 / 100) = 1).
            lowest = lowest.min(in_service(&asg));
            assert!(in_service(&asg) >= 2, "at {t}s");
            // Each goes with a new instance in its place, not an old one from the pool.
            assert!(
                !effects.iter().any(|e| matches!(e, Effect::Resume { .. })),
                "at {t}s: a warm instance of version 1 resumed"
            );
        }
        assert_eq!(lowest, 2, "old instances went first");
        assert_eq!(asg.refreshes[0].status, Status::Successful);
        assert!(alive(&asg).iter().all(|i| version(i) == "2"));
    }

    #[test]
    fn replacements_that_keep_failing_fail_the_refresh_after_an_hour_and_old_ones_stay() {
        let mut asg = fleet(false);
        // Every new launch is abandoned (its hook left alone).
        asg.put_hook(
            "g",
            Hook {
                name: "bootstrap".into(),
                transition: Transition::Launching,
                heartbeat_timeout: 60 * S,
                default_result: HookResult::Abandon,
                metadata: None,
            },
        )
        .unwrap();
        asg.start_refresh("g", module_preferences(), 2 * S).unwrap();
        for t in 2..5000u32 {
            asg.tick(t * S);
            if asg.refreshes[0].status != Status::InProgress {
                break;
            }
        }
        let r = &asg.refreshes[0];
        assert_eq!(r.status, Status::Failed, "{r:?}");
        assert!(r.reason.as_ref().unwrap().contains("kept failing"));
        assert!(r.ended.unwrap() >= PATIENCE);
        assert!(
            r.retired.is_empty(),
            "no old instance went for a failed replacement"
        );
        assert_eq!(in_service(&asg), 3);
    }

    #[test]
    fn the_percentages_are_checked_as_aws_checks_them() {
        for (min, max) in [(101, 150), (50, 99), (90, 201), (40, 150)] {
            let p = Preferences {
                min_healthy: min,
                max_healthy: max,
                ..module_preferences()
            };
            assert!(p.check().is_err(), "{min}/{max}");
        }
        let mut asg = fleet(false);
        let p = Preferences {
            min_healthy: 100,
            max_healthy: 99,
            ..module_preferences()
        };
        assert!(matches!(
            asg.start_refresh("g", p, S),
            Err(AsgError::Validation(_))
        ));
        assert!(asg.refreshes.is_empty());
    }
}
