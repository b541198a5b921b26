//! Auto Scaling's rules, without I/O: groups, lifecycle hooks, a warm pool, instance
//! lifecycle states, scale-in protection, health and maximum lifetime. The server feeds it
//! API calls and the clock; it answers with effects (start, hibernate, resume or stop an
//! instance's process) and events (what EventBridge would carry).
//!
//! Time is world time since the simulator started, passed in by the caller.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Every state of AWS's instance lifecycle that the simulator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum State {
    Pending,
    PendingWait,
    PendingProceed,
    InService,
    Terminating,
    TerminatingWait,
    TerminatingProceed,
    Terminated,
    WarmedPending,
    WarmedPendingWait,
    WarmedPendingProceed,
    WarmedHibernated,
    WarmedStopped,
    WarmedRunning,
    WarmedTerminating,
    WarmedTerminatingWait,
    WarmedTerminatingProceed,
    WarmedTerminated,
}

impl State {
    /// AWS's spelling (`Pending:Wait`, `Warmed:Hibernated`...).
    pub fn as_str(self) -> &'static str {
        use State::*;
        match self {
            Pending => "Pending",
            PendingWait => "Pending:Wait",
            PendingProceed => "Pending:Proceed",
            InService => "InService",
            Terminating => "Terminating",
            TerminatingWait => "Terminating:Wait",
            TerminatingProceed => "Terminating:Proceed",
            Terminated => "Terminated",
            WarmedPending => "Warmed:Pending",
            WarmedPendingWait => "Warmed:Pending:Wait",
            WarmedPendingProceed => "Warmed:Pending:Proceed",
            WarmedHibernated => "Warmed:Hibernated",
            WarmedStopped => "Warmed:Stopped",
            WarmedRunning => "Warmed:Running",
            WarmedTerminating => "Warmed:Terminating",
            WarmedTerminatingWait => "Warmed:Terminating:Wait",
            WarmedTerminatingProceed => "Warmed:Terminating:Proceed",
            WarmedTerminated => "Warmed:Terminated",
        }
    }

    pub(crate) fn in_group_capacity(self) -> bool {
        matches!(
            self,
            State::Pending | State::PendingWait | State::PendingProceed | State::InService
        )
    }

    pub fn is_warmed(self) -> bool {
        matches!(
            self,
            State::WarmedPending
                | State::WarmedPendingWait
                | State::WarmedPendingProceed
                | State::WarmedHibernated
                | State::WarmedStopped
                | State::WarmedRunning
        )
    }

    pub(crate) fn warmed_ready(self) -> bool {
        matches!(
            self,
            State::WarmedHibernated | State::WarmedStopped | State::WarmedRunning
        )
    }

    pub fn is_gone(self) -> bool {
        matches!(self, State::Terminated | State::WarmedTerminated)
    }

    /// Terminating (in service or warm), or gone.
    pub(crate) fn is_leaving(self) -> bool {
        matches!(
            self,
            State::Terminating
                | State::TerminatingWait
                | State::TerminatingProceed
                | State::WarmedTerminating
                | State::WarmedTerminatingWait
                | State::WarmedTerminatingProceed
        ) || self.is_gone()
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Transition {
    Launching,
    Terminating,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Launching => "autoscaling:EC2_INSTANCE_LAUNCHING",
            Transition::Terminating => "autoscaling:EC2_INSTANCE_TERMINATING",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "autoscaling:EC2_INSTANCE_LAUNCHING" => Some(Transition::Launching),
            "autoscaling:EC2_INSTANCE_TERMINATING" => Some(Transition::Terminating),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HookResult {
    Continue,
    Abandon,
}

impl HookResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HookResult::Continue => "CONTINUE",
            HookResult::Abandon => "ABANDON",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CONTINUE" => Some(HookResult::Continue),
            "ABANDON" => Some(HookResult::Abandon),
            _ => None,
        }
    }
}

/// Where an instance comes from or goes to, as lifecycle events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Place {
    EC2,
    AutoScalingGroup,
    WarmPool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PoolState {
    Hibernated,
    Stopped,
    Running,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hook {
    pub name: String,
    pub transition: Transition,
    pub heartbeat_timeout: Duration,
    pub default_result: HookResult,
    pub metadata: Option<String>,
}

impl Hook {
    /// AWS: 100 × the heartbeat timeout, at most 48 hours.
    pub fn global_timeout(&self) -> Duration {
        (self.heartbeat_timeout * 100).min(Duration::from_secs(48 * 3600))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WarmPool {
    pub min_size: u32,
    /// Defaults to the group's max size.
    pub max_prepared: Option<u32>,
    pub state: PoolState,
    pub reuse_on_scale_in: bool,
}

/// The launch template a group launches from, as `LaunchTemplate` names it: by id or by
/// name, and a version (a number, `$Latest` or `$Default`, kept as given: the testbed has no
/// EC2 launch templates to resolve them against).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchTemplate {
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub name: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub max_instance_lifetime: Option<Duration>,
    pub new_instances_protected: bool,
    /// `TerminationPolicies` (empty: `Default`); a function ARN first is a custom policy
    /// (`termination.rs`).
    pub termination_policies: Vec<String>,
    pub tags: Vec<(String, String)>,
    pub spot: bool,
    pub hooks: Vec<Hook>,
    pub warm_pool: Option<WarmPool>,
    pub launch_template: Option<LaunchTemplate>,
    /// `DefaultInstanceWarmup`: how long an instance warms up after it enters service;
    /// while one does, dynamic scaling does not scale in (`policy.rs`).
    pub default_instance_warmup: Option<Duration>,
    pub created_at: Duration,
}

impl Group {
    /// The size its warm pool keeps: max(min size, max prepared capacity − desired), max
    /// prepared defaulting to the group's max; `None` without a pool.
    pub fn warm_pool_size(&self) -> Option<u32> {
        let pool = self.warm_pool.as_ref()?;
        let prepared = pool.max_prepared.unwrap_or(self.max);
        Some(prepared.saturating_sub(self.desired).max(pool.min_size))
    }
}

#[cfg(test)]
impl Group {
    /// A group with these sizes and nothing else, for tests of the model.
    pub fn plain(name: &str, min: u32, max: u32, desired: u32) -> Group {
        Group {
            name: name.into(),
            min,
            max,
            desired,
            max_instance_lifetime: None,
            new_instances_protected: false,
            termination_policies: vec![],
            tags: vec![],
            spot: false,
            hooks: vec![],
            warm_pool: None,
            launch_template: None,
            default_instance_warmup: None,
            created_at: Duration::ZERO,
        }
    }
}

/// One wait on one hook.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub hook: String,
    pub token: String,
    pub started: Duration,
    pub heartbeat_deadline: Duration,
    pub global_deadline: Duration,
    pub result: Option<HookResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub id: String,
    pub group: String,
    pub state: State,
    pub healthy: bool,
    pub protected: bool,
    pub launched_at: Duration,
    /// The group's launch template when it launched (an instance keeps it, warm or not).
    pub launch_template: Option<LaunchTemplate>,
    /// Where the current transition comes from and goes to.
    pub origin: Place,
    pub destination: Place,
    pub actions: Vec<Action>,
    /// When it entered its current state.
    pub since: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub id: String,
    pub group: String,
    pub description: String,
    pub cause: String,
    pub at: Duration,
    pub status: &'static str,
}

/// What the driver must do, and what it must tell the world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Effect {
    /// Start a new instance's process (booting).
    Start { instance: String },
    /// Run the sleep hooks with `pre hibernate`, then stop the process group.
    Hibernate { instance: String },
    /// Continue the process group, then run the sleep hooks with `post hibernate`.
    Resume { instance: String },
    /// The instance is gone: end its process.
    Stop { instance: String },
    /// An instance entered a wait state for a hook: a lifecycle event.
    LifecycleAction {
        group: String,
        hook: String,
        token: String,
        instance: String,
        transition: Transition,
        origin: Place,
        destination: Place,
        metadata: Option<String>,
    },
    StateChanged {
        instance: String,
        from: State,
        to: State,
    },
    /// A scale-in asks the group's custom termination policy (a function) which of the
    /// `candidates` (the default policy's order) to take, `capacity` of them.
    ChooseTermination {
        group: String,
        function: String,
        capacity: u32,
        candidates: Vec<String>,
        spot: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsgError {
    /// AWS's `ValidationError`.
    Validation(String),
    /// AWS's `AlreadyExists`.
    AlreadyExists(String),
    /// AWS's `InstanceRefreshInProgress`: a refresh is already under way.
    RefreshInProgress(String),
    /// AWS's `ActiveInstanceRefreshNotFound`: no refresh to cancel.
    NoActiveRefresh(String),
}

impl fmt::Display for AsgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsgError::Validation(m)
            | AsgError::AlreadyExists(m)
            | AsgError::RefreshInProgress(m)
            | AsgError::NoActiveRefresh(m) => f.write_str(m),
        }
    }
}

pub(super) fn invalid(m: impl Into<String>) -> AsgError {
    AsgError::Validation(m.into())
}

#[derive(Debug, Default)]
pub struct Asg {
    /// How long a new instance takes to boot before its launch hooks fire.
    pub boot_delay: Duration,
    /// How long a warm instance takes to resume before its launch hooks fire.
    pub resume_delay: Duration,
    /// How long an instance takes to hibernate (or stop) before it counts as warm.
    pub hibernate_delay: Duration,
    pub groups: BTreeMap<String, Group>,
    pub instances: BTreeMap<String, Instance>,
    pub activities: Vec<Activity>,
    pub policies: Vec<super::policy::Policy>,
    /// When a simple scaling policy last changed each group (for cooldowns).
    pub cooldowns: BTreeMap<String, Duration>,
    /// Every instance refresh, oldest first (`refresh.rs`).
    pub refreshes: Vec<super::refresh::Refresh>,
    serial: u64,
    /// The time of the tick or call in progress.
    pub(super) now: Duration,
    /// Effects of API calls between ticks, handed out by the next tick.
    pub(super) carried: Vec<Effect>,
    /// Per group with a custom termination policy: no new ask before this time (one is
    /// outstanding, or the last answer took fewer than needed) (`termination.rs`).
    pub(super) termination_asks: BTreeMap<String, Duration>,
}

/// Which instance a `CompleteLifecycleAction` or heartbeat means.
pub enum ActionRef<'a> {
    Token(&'a str),
    Instance(&'a str),
}

impl Asg {
    /// A world whose instances take these times to boot, resume and hibernate.
    pub fn new(boot_delay: Duration, resume_delay: Duration, hibernate_delay: Duration) -> Self {
        Asg {
            boot_delay,
            resume_delay,
            hibernate_delay,
            ..Asg::default()
        }
    }

    pub(super) fn next(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn instance_id(&mut self) -> String {
        format!("i-{:017x}", 0x0a00_0000_0000_0000u64 + self.next())
    }

    pub(super) fn token(&mut self) -> String {
        let n = self.next();
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            n * 2654435761 % (1 << 32),
            n % 0xffff,
            n % 0xfff,
            (n * 7) % 0xfff,
            n * 1_000_003
        )
    }

    pub(super) fn activity(
        &mut self,
        group: &str,
        description: String,
        cause: String,
        now: Duration,
    ) {
        let id = self.token();
        self.activities.push(Activity {
            id,
            group: group.to_owned(),
            description,
            cause,
            at: now,
            status: "Successful",
        });
    }

    pub fn group(&self, name: &str) -> Result<&Group, AsgError> {
        self.groups.get(name).ok_or_else(|| {
            invalid(format!(
                "AutoScalingGroup name not found - AutoScalingGroup {name} not found"
            ))
        })
    }

    pub(super) fn group_mut(&mut self, name: &str) -> Result<&mut Group, AsgError> {
        self.groups.get_mut(name).ok_or_else(|| {
            invalid(format!(
                "AutoScalingGroup name not found - AutoScalingGroup {name} not found"
            ))
        })
    }

    fn check_sizes(min: u32, max: u32, desired: u32) -> Result<(), AsgError> {
        if min > max {
            return Err(invalid(format!(
                "Max bound, {max}, must be greater than or equal to min bound, {min}"
            )));
        }
        if desired > max {
            return Err(invalid(format!(
                "Desired capacity:{desired} must be between the specified min size:{min} and max size:{max}"
            )));
        }
        if desired < min {
            return Err(invalid(format!(
                "Desired capacity:{desired} must be between the specified min size:{min} and max size:{max}"
            )));
        }
        Ok(())
    }

    pub fn create_group(&mut self, mut group: Group, now: Duration) -> Result<(), AsgError> {
        if self.groups.contains_key(&group.name) {
            return Err(AsgError::AlreadyExists(format!("AutoScalingGroup by this name already exists - A group with the name {} already exists", group.name)));
        }
        Self::check_sizes(group.min, group.max, group.desired)?;
        if let Some(lifetime) = group.max_instance_lifetime {
            if lifetime != Duration::ZERO && lifetime < Duration::from_secs(86_400) {
                return Err(invalid(
                    "MaxInstanceLifetime must be 0 or between 86400 and 31536000 seconds",
                ));
            }
        }
        if group.max_instance_lifetime == Some(Duration::ZERO) {
            group.max_instance_lifetime = None;
        }
        group.created_at = now;
        self.groups.insert(group.name.clone(), group);
        Ok(())
    }

    pub fn update_group(
        &mut self,
        name: &str,
        min: Option<u32>,
        max: Option<u32>,
        desired: Option<u32>,
        lifetime: Option<Duration>,
        protect_new: Option<bool>,
    ) -> Result<(), AsgError> {
        let g = self.group_mut(name)?;
        let (min, max) = (min.unwrap_or(g.min), max.unwrap_or(g.max));
        // AWS moves desired into the new bounds when only the bounds change.
        let desired = desired.unwrap_or_else(|| g.desired.clamp(min, max.max(min)));
        Self::check_sizes(min, max, desired)?;
        g.min = min;
        g.max = max;
        g.desired = desired;
        if let Some(l) = lifetime {
            g.max_instance_lifetime = (l != Duration::ZERO).then_some(l);
        }
        if let Some(p) = protect_new {
            g.new_instances_protected = p;
        }
        Ok(())
    }

    /// `DefaultInstanceWarmup` of UpdateAutoScalingGroup (`None`: cleared, AWS's -1).
    pub fn set_default_instance_warmup(
        &mut self,
        name: &str,
        warmup: Option<Duration>,
    ) -> Result<(), AsgError> {
        self.group_mut(name)?.default_instance_warmup = warmup;
        Ok(())
    }

    /// `UpdateAutoScalingGroup`'s `LaunchTemplate`: new launches use it, instances keep theirs
    /// until an instance refresh replaces them.
    pub fn set_launch_template(
        &mut self,
        name: &str,
        template: LaunchTemplate,
    ) -> Result<(), AsgError> {
        self.group_mut(name)?.launch_template = Some(template);
        Ok(())
    }

    pub fn set_desired(&mut self, name: &str, desired: u32, now: Duration) -> Result<(), AsgError> {
        let g = self.group_mut(name)?;
        Self::check_sizes(g.min, g.max, desired).map_err(|_| {
            invalid(format!(
                "New SetDesiredCapacity value {desired} is above max value {} for the AutoScalingGroup.",
                g.max
            ))
        })?;
        let old = g.desired;
        self.change_desired(
            name,
            desired,
            format!("a user request explicitly set group desired capacity changing the desired capacity from {old} to {desired}"),
            now,
        )
    }

    /// Sets a group's desired capacity (within its bounds) for `cause`, recorded as a
    /// scaling activity.
    pub(super) fn change_desired(
        &mut self,
        name: &str,
        desired: u32,
        cause: String,
        now: Duration,
    ) -> Result<(), AsgError> {
        let g = self.group_mut(name)?;
        let (old, name) = (g.desired, g.name.clone());
        g.desired = desired;
        if old != desired {
            self.activity(
                &name,
                format!("Changing the desired capacity from {old} to {desired}"),
                cause,
                now,
            );
        }
        Ok(())
    }

    pub fn put_hook(&mut self, group: &str, hook: Hook) -> Result<(), AsgError> {
        if hook.heartbeat_timeout < Duration::from_secs(30)
            || hook.heartbeat_timeout > Duration::from_secs(7200)
        {
            return Err(invalid(
                "HeartbeatTimeout must be between 30 and 7200 seconds",
            ));
        }
        let g = self.group_mut(group)?;
        g.hooks.retain(|h| h.name != hook.name);
        g.hooks.push(hook);
        Ok(())
    }

    pub fn put_warm_pool(&mut self, group: &str, pool: WarmPool) -> Result<(), AsgError> {
        let g = self.group_mut(group)?;
        if g.spot {
            return Err(invalid(
                "You can't add a warm pool to an Auto Scaling group that uses Spot Instances.",
            ));
        }
        g.warm_pool = Some(pool);
        Ok(())
    }

    /// `DeleteWarmPool`: its instances terminate, through the terminate hooks; with `force`
    /// without them (AWS: "deletes any outstanding lifecycle actions").
    pub fn delete_warm_pool(
        &mut self,
        group: &str,
        force: bool,
        now: Duration,
    ) -> Result<(), AsgError> {
        let g = self.group_mut(group)?;
        if g.warm_pool.take().is_none() {
            return Err(invalid(format!(
                "No warm pool found for Auto Scaling group {group}"
            )));
        }
        let warm: Vec<String> = self
            .instances
            .values()
            .filter(|i| i.group == group && i.state.is_warmed())
            .map(|i| i.id.clone())
            .collect();
        let mut effects = std::mem::take(&mut self.carried);
        for id in warm {
            self.begin_termination(&id, "the warm pool was deleted", now, &mut effects);
            if force {
                if let Some(i) = self.instances.get_mut(&id) {
                    i.actions.clear();
                }
                self.set_state(&id, State::WarmedTerminatingProceed, &mut effects);
            }
        }
        self.carried = effects;
        Ok(())
    }

    fn find_action(
        &mut self,
        group: &str,
        hook: &str,
        which: ActionRef<'_>,
    ) -> Result<(String, usize), AsgError> {
        self.group(group)?;
        for inst in self.instances.values() {
            if inst.group != group {
                continue;
            }
            if let ActionRef::Instance(id) = which {
                if inst.id != id {
                    continue;
                }
            }
            let wanted = |a: &Action| {
                a.hook == hook
                    && a.result.is_none()
                    && match which {
                        ActionRef::Token(t) => a.token == t,
                        ActionRef::Instance(_) => true,
                    }
            };
            if let Some(i) = inst.actions.iter().position(wanted) {
                return Ok((inst.id.clone(), i));
            }
        }
        Err(invalid(match which {
            ActionRef::Token(t) => format!("No active Lifecycle Action found with token {t}"),
            ActionRef::Instance(id) => {
                format!("No active Lifecycle Action found with instance ID {id}")
            }
        }))
    }

    pub fn complete(
        &mut self,
        group: &str,
        hook: &str,
        which: ActionRef<'_>,
        result: HookResult,
    ) -> Result<(), AsgError> {
        let (id, i) = self.find_action(group, hook, which)?;
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.actions[i].result = Some(result);
        }
        Ok(())
    }

    pub fn heartbeat(
        &mut self,
        group: &str,
        hook: &str,
        which: ActionRef<'_>,
        now: Duration,
    ) -> Result<(), AsgError> {
        let (id, i) = self.find_action(group, hook, which)?;
        let timeout = self
            .group(group)?
            .hooks
            .iter()
            .find(|h| h.name == hook)
            .map(|h| h.heartbeat_timeout)
            .ok_or_else(|| invalid(format!("No Lifecycle Hook found with name {hook}")))?;
        if let Some(inst) = self.instances.get_mut(&id) {
            let a = &mut inst.actions[i];
            a.heartbeat_deadline = (now + timeout).min(a.global_deadline);
        }
        Ok(())
    }

    fn member(&self, group: &str, id: &str) -> Result<(), AsgError> {
        match self.instances.get(id) {
            Some(i) if i.group == group && !i.state.is_gone() => Ok(()),
            _ => Err(invalid(format!(
                "The instance {id} is not part of Auto Scaling group {group}."
            ))),
        }
    }

    pub fn set_protection(
        &mut self,
        group: &str,
        ids: &[String],
        protected: bool,
    ) -> Result<(), AsgError> {
        self.group(group)?;
        for id in ids {
            self.member(group, id)?;
            // AWS documents that it "cannot be called on instances in a warm pool", and
            // answers this for any instance not in service (Pending:Wait included); the
            // testbed models no standby.
            if self.instances[id].state != State::InService {
                return Err(invalid(format!(
                    "The instance {id} is not in InService or EnteringStandby or Standby."
                )));
            }
        }
        for id in ids {
            if let Some(i) = self.instances.get_mut(id) {
                i.protected = protected;
            }
        }
        Ok(())
    }

    pub fn set_health(&mut self, id: &str, healthy: bool) -> Result<(), AsgError> {
        let inst = self
            .instances
            .get_mut(id)
            .filter(|i| !i.state.is_gone())
            .ok_or_else(|| {
                invalid(format!(
                    "Instance Id not found - No instance(s) currently exist with instance ID {id}"
                ))
            })?;
        inst.healthy = healthy;
        Ok(())
    }

    /// `TerminateInstanceInAutoScalingGroup`; with `decrement` the group shrinks instead of
    /// replacing it.
    pub fn terminate(&mut self, id: &str, decrement: bool, now: Duration) -> Result<(), AsgError> {
        let inst = self
            .instances
            .get(id)
            .filter(|i| !i.state.is_gone())
            .ok_or_else(|| {
                invalid(format!(
                    "Instance Id not found - No managed instance found for instance ID: {id}"
                ))
            })?;
        let group = inst.group.clone();
        if decrement {
            let g = self.group_mut(&group)?;
            if g.desired == 0 || g.desired - 1 < g.min {
                return Err(invalid(format!(
                    "Currently, desiredSize equals minSize ({}). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.",
                    g.min
                )));
            }
            g.desired -= 1;
        }
        let mut effects = std::mem::take(&mut self.carried);
        self.begin_termination(
            id,
            "an instance was taken out of service in response to a user request",
            now,
            &mut effects,
        );
        self.carried = effects;
        Ok(())
    }

    /// The pool state of the instance's group (Stopped when it has no pool).
    fn pool_state(&self, id: &str) -> PoolState {
        self.instances
            .get(id)
            .and_then(|i| self.groups.get(&i.group))
            .and_then(|g| g.warm_pool.as_ref())
            .map(|p| p.state)
            .unwrap_or(PoolState::Stopped)
    }

    fn set_state(&mut self, id: &str, to: State, effects: &mut Vec<Effect>) {
        let now = self.now;
        let hibernate =
            to == State::WarmedPendingProceed && self.pool_state(id) != PoolState::Running;
        if let Some(inst) = self.instances.get_mut(id) {
            let from = inst.state;
            if from != to {
                inst.state = to;
                inst.since = now;
                effects.push(Effect::StateChanged {
                    instance: id.to_owned(),
                    from,
                    to,
                });
                if hibernate {
                    effects.push(Effect::Hibernate {
                        instance: id.to_owned(),
                    });
                }
            }
        }
    }

    pub(super) fn begin_termination(
        &mut self,
        id: &str,
        cause: &str,
        now: Duration,
        effects: &mut Vec<Effect>,
    ) {
        let Some(inst) = self.instances.get(id) else {
            return;
        };
        let (group, warm) = (inst.group.clone(), inst.state.is_warmed());
        if inst.state.is_leaving() {
            return;
        }
        if let Some(inst) = self.instances.get_mut(id) {
            inst.origin = if warm {
                Place::WarmPool
            } else {
                Place::AutoScalingGroup
            };
            inst.destination = Place::EC2;
            inst.actions.clear();
        }
        let to = if warm {
            State::WarmedTerminating
        } else {
            State::Terminating
        };
        self.set_state(id, to, effects);
        self.activity(
            &group,
            format!("Terminating EC2 instance: {id}"),
            format!("At {}s {cause}.", now.as_secs()),
            now,
        );
    }

    /// Scale-in with a reuse policy: the instance goes back to the warm pool (through
    /// Warmed:Pending, where the terminate hooks hold it) instead of terminating.
    pub(super) fn return_to_pool(&mut self, id: &str, now: Duration, effects: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get_mut(id) else {
            return;
        };
        inst.origin = Place::AutoScalingGroup;
        inst.destination = Place::WarmPool;
        inst.actions.clear();
        let group = inst.group.clone();
        self.set_state(id, State::WarmedPending, effects);
        self.activity(
            &group,
            format!("Moving EC2 instance to the warm pool: {id}"),
            format!("At {}s an instance was returned to the warm pool in response to a difference between desired and actual capacity, shrinking the capacity.", now.as_secs()),
            now,
        );
    }

    /// Launches a new instance into the group or its warm pool; its id.
    pub(super) fn launch(
        &mut self,
        group: &str,
        warm: bool,
        now: Duration,
        effects: &mut Vec<Effect>,
    ) -> String {
        let id = self.instance_id();
        let protected = self
            .groups
            .get(group)
            .is_some_and(|g| g.new_instances_protected && !warm);
        let launch_template = self
            .groups
            .get(group)
            .and_then(|g| g.launch_template.clone());
        let state = if warm {
            State::WarmedPending
        } else {
            State::Pending
        };
        self.instances.insert(
            id.clone(),
            Instance {
                id: id.clone(),
                group: group.to_owned(),
                state,
                healthy: true,
                protected,
                launched_at: now,
                launch_template,
                origin: Place::EC2,
                destination: if warm {
                    Place::WarmPool
                } else {
                    Place::AutoScalingGroup
                },
                actions: Vec::new(),
                since: now,
            },
        );
        effects.push(Effect::Start {
            instance: id.clone(),
        });
        let place = if warm { "the warm pool" } else { "the group" };
        self.activity(
            group,
            format!("Launching a new EC2 instance: {id}"),
            format!("At {}s an instance was started in {place}.", now.as_secs()),
            now,
        );
        id
    }

    /// Enters the wait state of `transition` with one action per hook, or proceeds at once.
    fn wait_for_hooks(
        &mut self,
        id: &str,
        transition: Transition,
        wait: State,
        proceed: State,
        now: Duration,
        effects: &mut Vec<Effect>,
    ) {
        let Some(inst) = self.instances.get(id) else {
            return;
        };
        let hooks: Vec<Hook> = self
            .groups
            .get(&inst.group)
            .map(|g| {
                g.hooks
                    .iter()
                    .filter(|h| h.transition == transition)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if hooks.is_empty() {
            self.set_state(id, proceed, effects);
            self.advance(id, now, effects);
            return;
        }
        let mut actions = Vec::new();
        for hook in &hooks {
            actions.push(Action {
                hook: hook.name.clone(),
                token: self.token(),
                started: now,
                heartbeat_deadline: now + hook.heartbeat_timeout,
                global_deadline: now + hook.global_timeout(),
                result: None,
            });
        }
        let inst = self.instances.get_mut(id).expect("instance checked above");
        inst.actions = actions.clone();
        let (group, origin, destination) = (inst.group.clone(), inst.origin, inst.destination);
        self.set_state(id, wait, effects);
        for (hook, action) in hooks.iter().zip(actions) {
            effects.push(Effect::LifecycleAction {
                group: group.clone(),
                hook: hook.name.clone(),
                token: action.token,
                instance: id.to_owned(),
                transition,
                origin,
                destination,
                metadata: hook.metadata.clone(),
            });
        }
    }

    /// Applies default results to timed-out actions; returns the overall result once every
    /// action has one (ABANDON if any was abandoned).
    fn settle(&mut self, id: &str, now: Duration) -> Option<HookResult> {
        let inst = self.instances.get_mut(id)?;
        let group = self.groups.get(&inst.group)?;
        for a in inst.actions.iter_mut().filter(|a| a.result.is_none()) {
            if now >= a.heartbeat_deadline || now >= a.global_deadline {
                let default = group
                    .hooks
                    .iter()
                    .find(|h| h.name == a.hook)
                    .map(|h| h.default_result);
                a.result = Some(default.unwrap_or(HookResult::Abandon));
            }
        }
        if inst.actions.iter().any(|a| a.result.is_none()) {
            return None;
        }
        let abandoned = inst
            .actions
            .iter()
            .any(|a| a.result == Some(HookResult::Abandon));
        Some(if abandoned {
            HookResult::Abandon
        } else {
            HookResult::Continue
        })
    }

    /// Moves every instance along and keeps each group at its desired capacity and warm-pool
    /// size. Call it whenever time passes or an API call changed something.
    pub fn tick(&mut self, now: Duration) -> Vec<Effect> {
        self.now = now;
        let mut effects = std::mem::take(&mut self.carried);
        let ids: Vec<String> = self.instances.keys().cloned().collect();
        for id in &ids {
            self.advance(id, now, &mut effects);
        }
        self.refresh_step(now, &mut effects);
        let groups: Vec<String> = self.groups.keys().cloned().collect();
        for g in &groups {
            self.reconcile(g, now, &mut effects);
        }
        // New instances take their first steps in the same tick.
        let fresh: Vec<String> = self
            .instances
            .values()
            .filter(|i| {
                matches!(
                    i.state,
                    State::Pending
                        | State::WarmedPending
                        | State::Terminating
                        | State::WarmedTerminating
                )
            })
            .map(|i| i.id.clone())
            .collect();
        for id in &fresh {
            self.advance(id, now, &mut effects);
        }
        effects
    }

    fn advance(&mut self, id: &str, now: Duration, effects: &mut Vec<Effect>) {
        let Some(state) = self.instances.get(id).map(|i| i.state) else {
            return;
        };
        let booting = self.instances.get(id).is_some_and(|i| {
            let delay = match i.origin {
                Place::WarmPool => self.resume_delay,
                Place::EC2 => self.boot_delay,
                // Returning to the pool from service: already running.
                Place::AutoScalingGroup => Duration::ZERO,
            };
            now < i.since + delay
        });
        // An instance returned to the pool on scale-in waits for the terminate hooks there.
        let returning = self
            .instances
            .get(id)
            .is_some_and(|i| i.origin == Place::AutoScalingGroup);
        match state {
            State::Pending | State::WarmedPending if booting => {}
            State::Pending => self.wait_for_hooks(
                id,
                Transition::Launching,
                State::PendingWait,
                State::PendingProceed,
                now,
                effects,
            ),
            State::WarmedPending => self.wait_for_hooks(
                id,
                if returning {
                    Transition::Terminating
                } else {
                    Transition::Launching
                },
                State::WarmedPendingWait,
                State::WarmedPendingProceed,
                now,
                effects,
            ),
            State::Terminating => self.wait_for_hooks(
                id,
                Transition::Terminating,
                State::TerminatingWait,
                State::TerminatingProceed,
                now,
                effects,
            ),
            State::WarmedTerminating => self.wait_for_hooks(
                id,
                Transition::Terminating,
                State::WarmedTerminatingWait,
                State::WarmedTerminatingProceed,
                now,
                effects,
            ),
            State::PendingWait | State::WarmedPendingWait => match self.settle(id, now) {
                Some(HookResult::Continue) => {
                    let next = if state == State::PendingWait {
                        State::PendingProceed
                    } else {
                        State::WarmedPendingProceed
                    };
                    self.set_state(id, next, effects);
                    self.advance(id, now, effects);
                }
                Some(HookResult::Abandon) => {
                    self.begin_termination(
                        id,
                        "a lifecycle action was abandoned during launch",
                        now,
                        effects,
                    );
                    self.advance(id, now, effects);
                }
                None => {}
            },
            State::TerminatingWait | State::WarmedTerminatingWait => {
                // Either result terminates the instance.
                if self.settle(id, now).is_some() {
                    let next = if state == State::TerminatingWait {
                        State::TerminatingProceed
                    } else {
                        State::WarmedTerminatingProceed
                    };
                    self.set_state(id, next, effects);
                    self.advance(id, now, effects);
                }
            }
            State::PendingProceed => {
                if let Some(i) = self.instances.get_mut(id) {
                    i.actions.clear();
                }
                self.set_state(id, State::InService, effects);
            }
            State::WarmedPendingProceed => {
                // The process was told to hibernate on entering this state (`set_state`);
                // the instance counts as warm once that has had time to finish.
                let done = self
                    .instances
                    .get(id)
                    .is_some_and(|i| now >= i.since + self.hibernate_delay);
                if done {
                    if let Some(i) = self.instances.get_mut(id) {
                        i.actions.clear();
                    }
                    let to = match self.pool_state(id) {
                        PoolState::Hibernated => State::WarmedHibernated,
                        PoolState::Stopped => State::WarmedStopped,
                        PoolState::Running => State::WarmedRunning,
                    };
                    self.set_state(id, to, effects);
                }
            }
            State::TerminatingProceed | State::WarmedTerminatingProceed => {
                let to = if state == State::TerminatingProceed {
                    State::Terminated
                } else {
                    State::WarmedTerminated
                };
                self.set_state(id, to, effects);
                effects.push(Effect::Stop {
                    instance: id.to_owned(),
                });
            }
            State::InService => {
                let replace = self.instances.get(id).and_then(|i| {
                    let g = self.groups.get(&i.group)?;
                    if !i.healthy {
                        return Some("an instance was taken out of service in response to an EC2 health check indicating it has been terminated or stopped");
                    }
                    let lifetime = g.max_instance_lifetime?;
                    (now.saturating_sub(i.launched_at) >= lifetime).then_some("an instance was taken out of service because it reached its maximum instance lifetime")
                });
                if let Some(cause) = replace {
                    self.begin_termination(id, cause, now, effects);
                }
            }
            State::WarmedHibernated
            | State::WarmedStopped
            | State::WarmedRunning
            | State::Terminated
            | State::WarmedTerminated => {}
        }
    }

    fn reconcile(&mut self, name: &str, now: Duration, effects: &mut Vec<Effect>) {
        let Some(group) = self.groups.get(name).cloned() else {
            return;
        };
        let members: Vec<Instance> = self
            .instances
            .values()
            .filter(|i| i.group == name)
            .cloned()
            .collect();
        let in_group = members
            .iter()
            .filter(|i| i.state.in_group_capacity())
            .count() as u32;
        // An instance refresh's replacements are capacity above the desired one until the
        // instances they replace go (`refresh.rs`).
        let (live_surge, warm_surge) = self.surge(name);
        let desired = group.desired + live_surge;
        if in_group < desired {
            let mut warm: Vec<&Instance> =
                members.iter().filter(|i| i.state.warmed_ready()).collect();
            warm.sort_by_key(|i| i.launched_at);
            let mut warm = warm.into_iter();
            for _ in in_group..desired {
                match warm.next() {
                    Some(w) => {
                        let id = w.id.clone();
                        let resume = w.state != State::WarmedRunning;
                        if let Some(i) = self.instances.get_mut(&id) {
                            i.origin = Place::WarmPool;
                            i.destination = Place::AutoScalingGroup;
                            i.protected = group.new_instances_protected;
                        }
                        if resume {
                            effects.push(Effect::Resume {
                                instance: id.clone(),
                            });
                        }
                        self.set_state(&id, State::Pending, effects);
                        self.activity(
                            name,
                            format!("Launching a new EC2 instance from warm pool: {id}"),
                            format!(
                                "At {}s an instance was moved from the warm pool into the group.",
                                now.as_secs()
                            ),
                            now,
                        );
                    }
                    None => {
                        self.launch(name, false, now, effects);
                    }
                }
            }
        } else if in_group > desired {
            // Default termination policy, simplified: unprotected instances only, in service
            // before pending, an outdated launch template before the group's, oldest first.
            let mut candidates: Vec<&Instance> = members
                .iter()
                .filter(|i| i.state.in_group_capacity() && !i.protected)
                .collect();
            candidates.sort_by_key(|i| {
                (
                    i.state != State::InService,
                    i.launch_template == group.launch_template,
                    i.launched_at,
                )
            });
            // A custom termination policy chooses among them; the default takes the first.
            let victims: Vec<String> = match super::termination::custom(&group.termination_policies)
            {
                Some(function) => {
                    let function = function.to_owned();
                    self.ask_termination(
                        &group,
                        &function,
                        in_group - desired,
                        &candidates,
                        effects,
                    );
                    vec![]
                }
                None => candidates
                    .iter()
                    .take((in_group - desired) as usize)
                    .map(|i| i.id.clone())
                    .collect(),
            };
            let reuse = group
                .warm_pool
                .as_ref()
                .is_some_and(|p| p.reuse_on_scale_in);
            for id in victims {
                if reuse {
                    self.return_to_pool(&id, now, effects);
                } else {
                    self.begin_termination(&id, "an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity", now, effects);
                }
            }
        }
        if let Some(target) = group.warm_pool_size() {
            let target = target + warm_surge;
            // Trimming takes ready warm instances first, those still on their way in last.
            let mut warm: Vec<&Instance> = self
                .instances
                .values()
                .filter(|i| i.group == name && i.state.is_warmed())
                .collect();
            warm.sort_by_key(|i| !i.state.warmed_ready());
            let warm: Vec<String> = warm.into_iter().map(|i| i.id.clone()).collect();
            let count = warm.len() as u32;
            // The group's instances and its pool together stay within the prepared capacity
            // (AWS: "the maximum number of instances that are allowed to be in the warm pool
            // or in any state except Terminated"): while a scale-in has yet to take the
            // instances above the desired capacity (its termination policy not answered
            // yet, or every candidate protected), the pool does not grow past it. The
            // testbed counts the instances in the group's capacity, not those terminating;
            // AWS does not say how soon it refills the pool while the group is over.
            let in_group_now = self
                .instances
                .values()
                .filter(|i| i.group == name && i.state.in_group_capacity())
                .count() as u32;
            let room = (desired + target).saturating_sub(in_group_now + count);
            if count < target {
                for _ in count..target.min(count + room) {
                    self.launch(name, true, now, effects);
                }
            } else if count > target {
                for id in warm.into_iter().take((count - target) as usize) {
                    self.begin_termination(
                        &id,
                        "an instance was removed from the warm pool to match its size",
                        now,
                        effects,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn group(name: &str, min: u32, max: u32, desired: u32) -> Group {
        Group::plain(name, min, max, desired)
    }

    fn hook(name: &str, transition: Transition, timeout: u64, default: HookResult) -> Hook {
        Hook {
            name: name.into(),
            transition,
            heartbeat_timeout: Duration::from_secs(timeout),
            default_result: default,
            metadata: None,
        }
    }

    fn states(asg: &Asg) -> Vec<State> {
        asg.instances
            .values()
            .filter(|i| !i.state.is_gone())
            .map(|i| i.state)
            .collect()
    }

    fn only(asg: &Asg) -> String {
        let live: Vec<&Instance> = asg
            .instances
            .values()
            .filter(|i| !i.state.is_gone())
            .collect();
        assert_eq!(live.len(), 1, "{live:?}");
        live[0].id.clone()
    }

    #[test]
    fn a_launch_waits_for_every_hook_then_enters_service() {
        let mut asg = Asg::default();
        asg.create_group(group("g", 0, 2, 1), Duration::ZERO)
            .unwrap();
        asg.put_hook(
            "g",
            hook(
                "registration",
                Transition::Launching,
                300,
                HookResult::Abandon,
            ),
        )
        .unwrap();
        asg.put_hook(
            "g",
            hook(
                "bootstrap",
                Transition::Launching,
                1200,
                HookResult::Abandon,
            ),
        )
        .unwrap();
        let effects = asg.tick(Duration::ZERO);
        let id = only(&asg);
        assert!(effects.contains(&Effect::Start {
            instance: id.clone()
        }));
        let events: Vec<&Effect> = effects
            .iter()
            .filter(|e| matches!(e, Effect::LifecycleAction { .. }))
            .collect();
        assert_eq!(events.len(), 2);
        assert!(matches!(
            events[0],
            Effect::LifecycleAction {
                origin: Place::EC2,
                destination: Place::AutoScalingGroup,
                ..
            }
        ));
        assert_eq!(states(&asg), [State::PendingWait]);

        asg.complete(
            "g",
            "registration",
            ActionRef::Instance(&id),
            HookResult::Continue,
        )
        .unwrap();
        asg.tick(10 * S);
        assert_eq!(states(&asg), [State::PendingWait], "one hook still open");
        let token = asg.instances[&id].actions[1].token.clone();
        asg.complete(
            "g",
            "bootstrap",
            ActionRef::Token(&token),
            HookResult::Continue,
        )
        .unwrap();
        asg.tick(11 * S);
        assert_eq!(states(&asg), [State::InService]);
        let err = asg
            .complete(
                "g",
                "bootstrap",
                ActionRef::Token(&token),
                HookResult::Continue,
            )
            .unwrap_err();
        assert!(matches!(err, AsgError::Validation(m) if m.contains("No active Lifecycle Action")));
    }

    #[test]
    fn a_hook_left_alone_abandons_and_the_instance_is_replaced_unless_heartbeated() {
        let mut asg = Asg::default();
        asg.create_group(group("g", 0, 2, 1), Duration::ZERO)
            .unwrap();
        asg.put_hook(
            "g",
            hook("bootstrap", Transition::Launching, 60, HookResult::Abandon),
        )
        .unwrap();
        asg.tick(Duration::ZERO);
        let first = only(&asg);
        asg.heartbeat("g", "bootstrap", ActionRef::Instance(&first), 50 * S)
            .unwrap();
        asg.tick(100 * S);
        assert_eq!(
            asg.instances[&first].state,
            State::PendingWait,
            "heartbeat kept it waiting"
        );
        let effects = asg.tick(111 * S);
        assert_eq!(asg.instances[&first].state, State::Terminated);
        assert!(effects.contains(&Effect::Stop {
            instance: first.clone()
        }));
        let replacement = only(&asg);
        assert_ne!(replacement, first);
        assert_eq!(asg.instances[&replacement].state, State::PendingWait);
    }

    #[test]
    fn launch_hooks_fire_once_the_instance_has_booted_or_resumed() {
        let mut asg = Asg::new(40 * S, 5 * S, 3 * S);
        asg.create_group(group("g", 0, 1, 0), Duration::ZERO)
            .unwrap();
        asg.put_warm_pool(
            "g",
            WarmPool {
                min_size: 1,
                max_prepared: None,
                state: PoolState::Hibernated,
                reuse_on_scale_in: false,
            },
        )
        .unwrap();
        asg.tick(Duration::ZERO);
        let id = only(&asg);
        asg.tick(39 * S);
        assert_eq!(
            asg.instances[&id].state,
            State::WarmedPending,
            "still booting"
        );
        let effects = asg.tick(40 * S);
        assert_eq!(
            asg.instances[&id].state,
            State::WarmedPendingProceed,
            "hibernating"
        );
        assert!(effects.contains(&Effect::Hibernate {
            instance: id.clone()
        }));
        asg.set_desired("g", 1, 41 * S).unwrap();
        let effects = asg.tick(41 * S);
        assert!(
            !effects.iter().any(|e| matches!(e, Effect::Resume { .. })),
            "not warm yet"
        );
        assert_eq!(asg.instances[&id].state, State::WarmedPendingProceed);
        asg.set_desired("g", 0, 42 * S).unwrap();
        let effects = asg.tick(43 * S);
        assert_eq!(asg.instances[&id].state, State::WarmedHibernated);
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::Hibernate { .. })),
            "told once"
        );
        asg.set_desired("g", 1, 50 * S).unwrap();
        asg.tick(50 * S);
        assert_eq!(asg.instances[&id].state, State::Pending);
        asg.tick(54 * S);
        assert_eq!(asg.instances[&id].state, State::Pending, "still resuming");
        asg.tick(55 * S);
        assert_eq!(asg.instances[&id].state, State::InService);
    }

    #[test]
    fn reuse_on_scale_in_returns_the_instance_to_the_pool_through_the_terminate_hooks() {
        let mut asg = Asg::default();
        asg.create_group(group("g", 0, 1, 1), Duration::ZERO)
            .unwrap();
        asg.put_hook(
            "g",
            hook(
                "deregistration",
                Transition::Terminating,
                600,
                HookResult::Continue,
            ),
        )
        .unwrap();
        let pool = WarmPool {
            min_size: 0,
            max_prepared: Some(1),
            state: PoolState::Hibernated,
            reuse_on_scale_in: true,
        };
        asg.put_warm_pool("g", pool).unwrap();
        asg.tick(Duration::ZERO);
        let id = only(&asg);
        assert_eq!(asg.instances[&id].state, State::InService);
        asg.set_desired("g", 0, S).unwrap();
        let effects = asg.tick(S);
        assert_eq!(asg.instances[&id].state, State::WarmedPendingWait);
        assert!(effects.iter().any(|e| matches!(
            e,
            Effect::LifecycleAction {
                transition: Transition::Terminating,
                origin: Place::AutoScalingGroup,
                destination: Place::WarmPool,
                ..
            }
        )));
        asg.complete(
            "g",
            "deregistration",
            ActionRef::Instance(&id),
            HookResult::Continue,
        )
        .unwrap();
        let effects = asg.tick(2 * S);
        assert_eq!(asg.instances[&id].state, State::WarmedHibernated);
        assert!(effects.contains(&Effect::Hibernate {
            instance: id.clone()
        }));
        assert!(
            !effects.iter().any(|e| matches!(e, Effect::Stop { .. })),
            "not terminated"
        );
    }

    #[test]
    fn the_global_timeout_caps_heartbeats() {
        let h = hook("h", Transition::Launching, 7200, HookResult::Continue);
        assert_eq!(h.global_timeout(), Duration::from_secs(48 * 3600));
        assert_eq!(
            hook("h", Transition::Launching, 60, HookResult::Continue).global_timeout(),
            Duration::from_secs(6000)
        );
    }

    #[test]
    fn the_warm_pool_fills_hibernates_and_is_used_before_a_cold_launch() {
        let mut asg = Asg::default();
        asg.create_group(group("g", 0, 3, 0), Duration::ZERO)
            .unwrap();
        asg.put_hook(
            "g",
            hook("bootstrap", Transition::Launching, 300, HookResult::Abandon),
        )
        .unwrap();
        asg.put_warm_pool(
            "g",
            WarmPool {
                min_size: 1,
                max_prepared: Some(2),
                state: PoolState::Hibernated,
                reuse_on_scale_in: false,
            },
        )
        .unwrap();
        let effects = asg.tick(Duration::ZERO);
        let warm: Vec<String> = asg.instances.keys().cloned().collect();
        assert_eq!(warm.len(), 2);
        assert!(effects.iter().any(|e| matches!(
            e,
            Effect::LifecycleAction {
                destination: Place::WarmPool,
                ..
            }
        )));
        for id in &warm {
            asg.complete(
                "g",
                "bootstrap",
                ActionRef::Instance(id),
                HookResult::Continue,
            )
            .unwrap();
        }
        let effects = asg.tick(S);
        assert_eq!(
            states(&asg),
            [State::WarmedHibernated, State::WarmedHibernated]
        );
        assert_eq!(
            effects
                .iter()
                .filter(|e| matches!(e, Effect::Hibernate { .. }))
                .count(),
            2
        );

        asg.set_desired("g", 3, 2 * S).unwrap();
        let effects = asg.tick(2 * S);
        let resumed: Vec<&Effect> = effects
            .iter()
            .filter(|e| matches!(e, Effect::Resume { .. }))
            .collect();
        assert_eq!(resumed.len(), 2, "warm instances first");
        let cold = effects
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Effect::LifecycleAction {
                        origin: Place::EC2,
                        destination: Place::AutoScalingGroup,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(cold, 1, "then one cold launch");
        assert!(effects.iter().any(|e| matches!(
            e,
            Effect::LifecycleAction {
                origin: Place::WarmPool,
                destination: Place::AutoScalingGroup,
                ..
            }
        )));
        // The pool refills to its minimum.
        assert_eq!(
            asg.instances
                .values()
                .filter(|i| i.state == State::WarmedPendingWait)
                .count(),
            1
        );
    }

    fn hibernated_pool(asg: &mut Asg, hooks: &[Hook]) -> Vec<String> {
        asg.create_group(group("g", 0, 2, 0), Duration::ZERO)
            .unwrap();
        for h in hooks {
            asg.put_hook("g", h.clone()).unwrap();
        }
        asg.put_warm_pool(
            "g",
            WarmPool {
                min_size: 2,
                max_prepared: None,
                state: PoolState::Hibernated,
                reuse_on_scale_in: false,
            },
        )
        .unwrap();
        asg.tick(Duration::ZERO);
        asg.tick(S);
        assert_eq!(
            states(asg),
            [State::WarmedHibernated, State::WarmedHibernated]
        );
        asg.instances.keys().cloned().collect()
    }

    #[test]
    fn deleting_the_warm_pool_terminates_its_instances_through_the_terminate_hooks() {
        let mut asg = Asg::default();
        let dereg = hook(
            "deregistration",
            Transition::Terminating,
            300,
            HookResult::Continue,
        );
        let warm = hibernated_pool(&mut asg, &[dereg]);
        asg.delete_warm_pool("g", false, 2 * S).unwrap();
        let effects = asg.tick(2 * S);
        assert_eq!(
            states(&asg),
            [State::WarmedTerminatingWait, State::WarmedTerminatingWait]
        );
        assert!(
            effects.iter().any(|e| matches!(
                e,
                Effect::StateChanged {
                    from: State::WarmedHibernated,
                    to: State::WarmedTerminating,
                    ..
                }
            )),
            "the call's own changes reach the effects log: {effects:?}"
        );
        for id in &warm {
            asg.complete(
                "g",
                "deregistration",
                ActionRef::Instance(id),
                HookResult::Continue,
            )
            .unwrap();
        }
        asg.tick(3 * S);
        assert!(states(&asg).is_empty());
        assert!(
            asg.delete_warm_pool("g", false, 4 * S).is_err(),
            "no pool left"
        );

        // Forced: no hooks wait.
        let mut asg = Asg::default();
        let dereg = hook(
            "deregistration",
            Transition::Terminating,
            300,
            HookResult::Continue,
        );
        hibernated_pool(&mut asg, &[dereg]);
        asg.delete_warm_pool("g", true, 2 * S).unwrap();
        asg.tick(2 * S);
        assert!(states(&asg).is_empty());
    }

    #[test]
    fn spot_groups_refuse_a_warm_pool_and_desired_above_max_is_invalid() {
        let mut asg = Asg::default();
        let mut g = group("spot", 0, 2, 0);
        g.spot = true;
        asg.create_group(g, Duration::ZERO).unwrap();
        let pool = WarmPool {
            min_size: 0,
            max_prepared: None,
            state: PoolState::Hibernated,
            reuse_on_scale_in: false,
        };
        assert!(matches!(
            asg.put_warm_pool("spot", pool),
            Err(AsgError::Validation(_))
        ));
        assert!(
            matches!(asg.set_desired("spot", 3, S), Err(AsgError::Validation(m)) if m.contains("above max"))
        );
        assert!(matches!(
            asg.create_group(group("bad", 0, 2, 5), S),
            Err(AsgError::Validation(_))
        ));
        assert!(matches!(
            asg.create_group(group("spot", 0, 2, 0), S),
            Err(AsgError::AlreadyExists(_))
        ));
    }

    #[test]
    fn scale_in_skips_protected_instances_and_terminate_hooks_hold() {
        let mut asg = Asg::default();
        asg.create_group(group("g", 0, 3, 2), Duration::ZERO)
            .unwrap();
        asg.tick(Duration::ZERO);
        let ids: Vec<String> = asg.instances.keys().cloned().collect();
        asg.tick(S);
        assert_eq!(states(&asg), [State::InService, State::InService]);
        asg.put_hook(
            "g",
            hook(
                "deregistration",
                Transition::Terminating,
                1800,
                HookResult::Continue,
            ),
        )
        .unwrap();
        asg.set_protection("g", &ids[..1], true).unwrap();
        asg.set_desired("g", 1, 2 * S).unwrap();
        asg.tick(2 * S);
        assert_eq!(asg.instances[&ids[0]].state, State::InService, "protected");
        assert_eq!(asg.instances[&ids[1]].state, State::TerminatingWait);
        asg.tick(1000 * S);
        assert_eq!(
            asg.instances[&ids[1]].state,
            State::TerminatingWait,
            "held by the hook"
        );
        asg.complete(
            "g",
            "deregistration",
            ActionRef::Instance(&ids[1]),
            HookResult::Continue,
        )
        .unwrap();
        asg.tick(1001 * S);
        assert_eq!(asg.instances[&ids[1]].state, State::Terminated);

        // Every instance protected: scale-in waits.
        asg.set_desired("g", 0, 1002 * S).unwrap();
        asg.tick(1002 * S);
        assert_eq!(asg.instances[&ids[0]].state, State::InService);
    }

    #[test]
    fn protection_is_refused_for_instances_not_in_service() {
        let mut asg = Asg::default();
        asg.create_group(group("g", 0, 2, 0), Duration::ZERO)
            .unwrap();
        asg.put_warm_pool(
            "g",
            WarmPool {
                min_size: 1,
                max_prepared: Some(1),
                state: PoolState::Hibernated,
                reuse_on_scale_in: false,
            },
        )
        .unwrap();
        asg.tick(Duration::ZERO);
        let warm = only(&asg);
        assert!(asg.instances[&warm].state.is_warmed());
        let e = asg
            .set_protection("g", std::slice::from_ref(&warm), true)
            .unwrap_err();
        assert!(format!("{e}").contains("not in InService"), "{e}");
        assert!(!asg.instances[&warm].protected);
        // Once it is in service, it can be protected.
        asg.set_desired("g", 1, S).unwrap();
        for t in 1..10 {
            asg.tick(t * S);
        }
        assert_eq!(asg.instances[&warm].state, State::InService);
        asg.set_protection("g", std::slice::from_ref(&warm), true)
            .unwrap();
        assert!(asg.instances[&warm].protected);
    }

    #[test]
    fn old_and_unhealthy_instances_are_replaced() {
        let mut asg = Asg::default();
        let mut g = group("g", 1, 2, 1);
        g.max_instance_lifetime = Some(Duration::from_secs(86_400));
        asg.create_group(g, Duration::ZERO).unwrap();
        asg.tick(Duration::ZERO);
        let first = only(&asg);
        asg.tick(86_400 * S);
        assert_eq!(asg.instances[&first].state, State::Terminated);
        let second = only(&asg);
        asg.tick(86_401 * S);
        asg.set_health(&second, false).unwrap();
        asg.tick(86_402 * S);
        assert_eq!(asg.instances[&second].state, State::Terminated);
        assert_ne!(only(&asg), second);
        let mut short = group("h", 0, 1, 0);
        short.max_instance_lifetime = Some(Duration::from_secs(60));
        assert!(asg.create_group(short, S).is_err());
    }
}
