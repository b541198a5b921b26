//! The deregistration Lambda: terminate lifecycle events on the `deregistration` hook, and
//! a scheduled sweep.
//!
//! Terminate events:
//! - a warm-pool instance being trimmed, or one that never got a credential: its secret is
//!   deleted and the hook completed with CONTINUE (a runner still registered for a trimmed
//!   instance is deleted when offline; when online, the instance was on its way back into
//!   the pool with a job running, and is drained like one leaving service);
//! - an instance leaving service: a remove token is added to its secret and SSM runs the
//!   drain (`warmfleet-agent drain`) on it; the agent lets the running job finish, removes
//!   the runner and completes the hook. When SSM cannot reach the instance, the runner is
//!   deleted here (never while busy: then the hook waits for the sweep) and the hook
//!   completed.
//! - the same event again (delivered twice, or late): ignored once the hook no longer waits;
//!   while it waits and the drain the first one started runs, left to the agent.
//!
//! The sweep reconciles each group in both directions, every item on its own (one failure
//! never stops the rest): runners whose instance is gone are deleted (busy ones wait for the
//! next sweep); secrets of gone instances are deleted; instances the terminate hook holds
//! (leaving the group or the pool, or scaled in back into the pool) have their drain
//! heartbeated while it runs, completed when it has finished, and re-sent when it was lost; instances in service past the registration grace whose runner never came
//! online are marked unhealthy, so the group replaces them.

use crate::config::DeregistrationSettings;
use crate::event::{Event, Place, Transition};
use crate::{patience, Error};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use tokio::time::Instant;
use tracing::{info, warn};
use warmfleet_core::github::{GithubError, Runner, RunnerStatus};
use warmfleet_core::instance_secret::{InstanceSecret, RemoveToken};
use warmfleet_core::naming::{
    group_secret_prefix, instance_of_secret, instance_secret_id, DRAIN_COMMENT, FLEET_LABEL,
    HOOK_DEREGISTRATION,
};
use warmfleet_core::ports::{
    CommandState, Commands, HookResult, Lifecycle, RunnerRegistry, SecretStore,
};

/// What a terminate event led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Trimmed from the warm pool, or never registered: cleaned up and completed.
    Completed,
    /// The drain runs on the instance; the agent completes the hook.
    Draining {
        command_id: String,
    },
    /// SSM could not reach the instance: its runner removed here, the hook completed.
    RemovedWithoutDrain,
    /// SSM could not reach the instance and its runner is busy: the sweep tries again.
    Waiting {
        reason: String,
    },
    Ignored {
        reason: String,
    },
}

/// What a sweep did, per action, and its errors per kind.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub runners_deleted: u32,
    pub busy_runners_kept: u32,
    pub secrets_deleted: u32,
    pub drains_heartbeated: u32,
    pub drains_completed: u32,
    pub drains_sent: u32,
    pub removed_without_drain: u32,
    pub marked_unhealthy: u32,
    /// Error kind (service and operation) → how many.
    pub errors: BTreeMap<String, u32>,
}

impl Summary {
    fn failed(&mut self, what: &str, e: &Error) {
        warn!(what, error = %e, "sweep item failed; going on");
        let kind = match e {
            Error::Port(p) => format!("{} {}", p.service, p.operation),
            Error::Github(_) => "GitHub".to_owned(),
            other => other.to_string(),
        };
        *self.errors.entry(kind).or_default() += 1;
    }
}

pub struct Deregistration<S, L, C, G> {
    pub secrets: S,
    pub lifecycle: L,
    pub commands: C,
    pub github: G,
    pub settings: DeregistrationSettings,
}

impl<S: SecretStore, L: Lifecycle, C: Commands, G: RunnerRegistry> Deregistration<S, L, C, G> {
    fn until(&self, deadline: Instant) -> Instant {
        deadline
            .checked_sub(self.settings.common.deadline_margin)
            .unwrap_or_else(Instant::now)
    }

    pub async fn handle(&self, event: Event, deadline: Instant) -> Result<Outcome, Error> {
        let e = match event {
            Event::Lifecycle(e)
                if e.hook == HOOK_DEREGISTRATION && e.transition == Transition::Terminating =>
            {
                e
            }
            other => {
                let reason =
                    format!("not a termination on the {HOOK_DEREGISTRATION} hook: {other:?}");
                warn!(%reason, "event ignored");
                return Ok(Outcome::Ignored { reason });
            }
        };
        let until = self.until(deadline);
        if !self.hook_waits(&e.group, &e.instance_id, until).await? {
            // Delivered twice or late: acting now would drain an instance already back
            // in the pool (hibernated, the command would wait for its next time in
            // service) or one gone. The sweep follows whatever the first delivery began.
            let reason = format!(
                "{}: its {HOOK_DEREGISTRATION} hook no longer waits",
                e.instance_id
            );
            info!(%reason, "event ignored");
            return Ok(Outcome::Ignored { reason });
        }
        let from_pool = e.origin == Place::WarmPool;
        self.settle(&e.group, &e.instance_id, from_pool, until, deadline)
            .await
    }

    /// Whether the instance is held by a terminate hook now: leaving the group, leaving the
    /// pool, or (scale-in with reuse) on its way back into it.
    async fn hook_waits(&self, group: &str, instance: &str, until: Instant) -> Result<bool, Error> {
        const WAITING: [&str; 3] = [
            "Terminating:Wait",
            "Warmed:Terminating:Wait",
            "Warmed:Pending:Wait",
        ];
        let groups = [group.to_owned()];
        let in_group = patience::until(until, || self.lifecycle.instances(&groups)).await?;
        let warm = patience::until(until, || self.lifecycle.warm_pool(group)).await?;
        Ok(in_group
            .iter()
            .chain(&warm)
            .any(|i| i.instance_id == instance && WAITING.contains(&i.lifecycle_state.as_str())))
    }

    /// Ends an instance's registration: cleans up directly when there is nothing to drain,
    /// else drains it.
    async fn settle(
        &self,
        group: &str,
        instance: &str,
        from_pool: bool,
        until: Instant,
        deadline: Instant,
    ) -> Result<Outcome, Error> {
        let id = instance_secret_id(group, instance);
        let Some(text) = patience::until(until, || self.secrets.get(&id)).await? else {
            // Never given a credential: nothing can be registered.
            self.complete(group, instance, deadline).await?;
            info!(instance, "no credential was ever issued: completed");
            return Ok(Outcome::Completed);
        };
        let runners = self.runners_named(instance, until).await?;
        // A repeated or late event while the drain sent for this time in service still runs
        // and its runner is still registered: the agent completes the hook when its job is
        // done. Acting again would complete it under the agent (the drained runner is
        // offline, so it looks like nothing to drain) and terminate the instance mid-drain.
        // With no runner left the drain has done its part: a command still "in progress"
        // then is one whose instance went back into the pool, hibernated, before its
        // result was reported.
        let drain = if runners.is_empty() {
            None
        } else {
            InstanceSecret::parse(&text)
                .ok()
                .and_then(|s| s.drain_command)
        };
        if let Some(command_id) = drain {
            let state =
                patience::until(until, || self.commands.state(&command_id, instance)).await?;
            if matches!(state, CommandState::Pending | CommandState::Running) {
                info!(instance, command_id, "a drain is under way: left to it");
                return Ok(Outcome::Draining { command_id });
            }
        }
        if from_pool {
            // A warm instance holds no registration, but one taken from the pool while it was
            // still returning to it may: its job must finish.
            if !runners.iter().any(|r| r.status == RunnerStatus::Online) {
                self.delete_runners(&runners, until).await?;
                self.forget(group, instance, until).await?;
                self.complete(group, instance, deadline).await?;
                info!(
                    instance,
                    "leaving the warm pool, nothing to drain: cleaned up"
                );
                return Ok(Outcome::Completed);
            }
            info!(
                instance,
                "trimmed from the pool with its runner online: draining"
            );
        }
        self.drain(group, instance, &runners, until, deadline).await
    }

    /// The runner registered under an instance's name (with its labels or, drained already,
    /// without), asked for by name: one request, not every page of the scope's runners.
    async fn runners_named(&self, instance: &str, until: Instant) -> Result<Vec<Runner>, Error> {
        Ok(self
            .github
            .runner_named(instance, until)
            .await?
            .into_iter()
            .collect())
    }

    /// Deletes runners (one already gone is fine).
    async fn delete_runners(&self, runners: &[Runner], until: Instant) -> Result<(), Error> {
        for r in runners {
            match self.github.delete_runner(r.id, until).await {
                Ok(()) | Err(GithubError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes an instance's secret.
    async fn forget(&self, group: &str, instance: &str, until: Instant) -> Result<(), Error> {
        let id = instance_secret_id(group, instance);
        Ok(patience::until(until, || self.secrets.delete(&id)).await?)
    }

    async fn complete(&self, group: &str, instance: &str, deadline: Instant) -> Result<(), Error> {
        let done = patience::until(deadline, || {
            self.lifecycle
                .complete(group, HOOK_DEREGISTRATION, instance, HookResult::Continue)
        })
        .await?;
        info!(instance, ?done, "deregistration completed");
        Ok(())
    }

    /// Takes the runners' labels (so they get no new job), hands the agent a remove token
    /// and starts its drain, noting the command in the secret; without SSM, removes the
    /// runners here.
    async fn drain(
        &self,
        group: &str,
        instance: &str,
        runners: &[Runner],
        until: Instant,
        deadline: Instant,
    ) -> Result<Outcome, Error> {
        // No job can be routed to a runner without its labels; the running one finishes.
        for r in runners {
            match self.github.remove_labels(r.id, until).await {
                Ok(()) | Err(GithubError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut secret = self.read_secret(group, instance, until).await?;
        // A JIT runner is removed with the registration's own credentials: no token needed.
        if let Some(value) = secret.as_mut() {
            if value.credential.persistent() {
                let t = self.github.remove_token(until).await?;
                value.remove_token = Some(RemoveToken {
                    token: t.token,
                    expires_at: t.expires_at,
                });
                self.write_secret(group, instance, value, until).await?;
            }
        }
        let line = format!(
            "{} --timeout {}s",
            self.settings.drain_command,
            self.settings.drain_timeout.as_secs()
        );
        let sent = patience::until(until, || {
            self.commands.run(
                instance,
                std::slice::from_ref(&line),
                DRAIN_COMMENT,
                self.settings.drain_timeout,
            )
        })
        .await?;
        if let Some(command_id) = sent {
            // The sweep follows this command, not a drain of an earlier time in service (an
            // instance reused from the warm pool).
            if let Some(value) = secret.as_mut() {
                value.drain_command = Some(command_id.clone());
                self.write_secret(group, instance, value, until).await?;
            }
            info!(instance, command_id, "drain sent");
            return Ok(Outcome::Draining { command_id });
        }
        // The agent cannot be told: remove the runner here, unless it is running a job.
        if let Some(busy) = runners.iter().find(|r| r.busy) {
            let reason = format!("runner {} is busy and SSM cannot reach {instance}", busy.id);
            warn!(%reason, "deregistration waits");
            return Ok(Outcome::Waiting { reason });
        }
        self.delete_runners(runners, until).await?;
        self.forget(group, instance, until).await?;
        self.complete(group, instance, deadline).await?;
        info!(
            instance,
            "SSM unreachable: runner removed and hook completed here"
        );
        Ok(Outcome::RemovedWithoutDrain)
    }

    /// The instance's secret, parsed; `None` when it has none.
    async fn read_secret(
        &self,
        group: &str,
        instance: &str,
        until: Instant,
    ) -> Result<Option<InstanceSecret>, Error> {
        let id = instance_secret_id(group, instance);
        let Some(text) = patience::until(until, || self.secrets.get(&id)).await? else {
            return Ok(None);
        };
        let value = InstanceSecret::parse(&text).map_err(|reason| Error::Secret { id, reason })?;
        Ok(Some(value))
    }

    async fn write_secret(
        &self,
        group: &str,
        instance: &str,
        value: &InstanceSecret,
        until: Instant,
    ) -> Result<(), Error> {
        let id = instance_secret_id(group, instance);
        let text = value.to_secret();
        // Only the registration Lambda creates secrets (tagged for the instance's policy).
        if !patience::until(until, || self.secrets.update(&id, &text)).await? {
            warn!(secret = %id, instance, "the instance's secret is gone: nothing recorded in it");
        }
        Ok(())
    }

    /// The scheduled sweep over every group.
    pub async fn sweep(&self, deadline: Instant) -> Result<Summary, Error> {
        let until = self.until(deadline);
        let mut summary = Summary::default();
        // Every runner (the same pages a label filter would read): a drained runner has
        // lost its labels, and only its name still ties it to its instance.
        let all = self.github.runners(None, until).await?;
        let groups = &self.settings.groups;
        let in_groups = patience::until(until, || self.lifecycle.instances(groups)).await?;
        for group in groups {
            let warm = match patience::until(until, || self.lifecycle.warm_pool(group)).await {
                Ok(w) => w,
                Err(e) => {
                    summary.failed("warm pool", &e.into());
                    continue;
                }
            };
            let instances: BTreeMap<&str, &str> = in_groups
                .iter()
                .filter(|i| &i.group == group)
                .chain(warm.iter())
                .map(|i| (i.instance_id.as_str(), i.lifecycle_state.as_str()))
                .collect();
            let mine: Vec<&Runner> = all
                .iter()
                .filter(|r| r.has_label(FLEET_LABEL) && r.has_label(group))
                .collect();
            self.sweep_runners(&mine, &instances, until, &mut summary)
                .await;
            self.sweep_secrets(group, &instances, &mine, &all, until, &mut summary)
                .await;
            self.sweep_terminating(group, &instances, until, deadline, &mut summary)
                .await;
        }
        info!(?summary, "sweep done");
        Ok(summary)
    }

    /// Runners whose instance has left the group (or never was in it) are deleted.
    async fn sweep_runners(
        &self,
        runners: &[&Runner],
        instances: &BTreeMap<&str, &str>,
        until: Instant,
        summary: &mut Summary,
    ) {
        for r in runners
            .iter()
            .filter(|r| !instances.contains_key(r.name.as_str()))
        {
            if r.busy {
                summary.busy_runners_kept += 1;
                continue;
            }
            match self.github.delete_runner(r.id, until).await {
                Ok(()) | Err(GithubError::NotFound { .. }) => {
                    info!(runner = r.id, name = %r.name, "orphan runner deleted");
                    summary.runners_deleted += 1;
                }
                Err(GithubError::RunnerBusy { .. }) => summary.busy_runners_kept += 1,
                Err(e) => summary.failed("delete runner", &e.into()),
            }
        }
    }

    /// Secrets of gone instances are deleted, after any runner still named for the
    /// instance (a drained one, without labels, that its agent could not remove; a busy one
    /// keeps the secret for the next sweep); instances in service past the grace whose
    /// runner never came online are marked unhealthy.
    async fn sweep_secrets(
        &self,
        group: &str,
        instances: &BTreeMap<&str, &str>,
        runners: &[&Runner],
        all: &[Runner],
        until: Instant,
        summary: &mut Summary,
    ) {
        let prefix = group_secret_prefix(group);
        let ids = match patience::until(until, || self.secrets.list(&prefix)).await {
            Ok(ids) => ids,
            Err(e) => return summary.failed("list secrets", &e.into()),
        };
        let online: BTreeSet<&str> = runners
            .iter()
            .filter(|r| r.status == RunnerStatus::Online || r.busy)
            .map(|r| r.name.as_str())
            .collect();
        let registered: BTreeSet<&str> = runners.iter().map(|r| r.name.as_str()).collect();
        for id in ids {
            let Some(instance) = instance_of_secret(group, &id) else {
                continue;
            };
            match instances.get(instance) {
                None => {
                    // Those still labelled for the group are sweep_runners' to delete.
                    let left: Vec<&Runner> = all
                        .iter()
                        .filter(|r| r.name == instance && !r.has_label(group))
                        .collect();
                    if !self.delete_leftovers(&left, until, summary).await {
                        continue;
                    }
                    match patience::until(until, || self.secrets.delete(&id)).await {
                        Ok(()) => summary.secrets_deleted += 1,
                        Err(e) => summary.failed("delete secret", &e.into()),
                    }
                }
                Some(&"InService") if !online.contains(instance) => {
                    let stale = match self
                        .never_came_online(&id, registered.contains(instance), until)
                        .await
                    {
                        Ok(stale) => stale,
                        Err(e) => {
                            summary.failed("read secret", &e);
                            continue;
                        }
                    };
                    if stale {
                        match patience::until(until, || self.lifecycle.set_unhealthy(instance))
                            .await
                        {
                            Ok(()) => {
                                warn!(
                                    instance,
                                    "runner never came online: instance marked unhealthy"
                                );
                                summary.marked_unhealthy += 1;
                            }
                            Err(e) => summary.failed("set unhealthy", &e.into()),
                        }
                    }
                }
                Some(state) if at_rest_in_pool(state) => {
                    // Nothing is registered for an instance asleep in the pool. A runner
                    // still named for it was left by its drain (a JIT runner, which the
                    // agent cannot remove: GitHub would refuse its next configuration).
                    let left: Vec<&Runner> = all
                        .iter()
                        .filter(|r| {
                            r.name == instance && r.status == RunnerStatus::Offline && !r.busy
                        })
                        .collect();
                    self.delete_leftovers(&left, until, summary).await;
                }
                Some(_) => {}
            }
        }
    }

    /// Deletes runners left by drains; whether none is left.
    async fn delete_leftovers(
        &self,
        runners: &[&Runner],
        until: Instant,
        summary: &mut Summary,
    ) -> bool {
        let mut cleared = true;
        for r in runners {
            match self.github.delete_runner(r.id, until).await {
                Ok(()) | Err(GithubError::NotFound { .. }) => {
                    info!(runner = r.id, name = %r.name, "drained runner deleted");
                    summary.runners_deleted += 1;
                }
                Err(GithubError::RunnerBusy { .. }) => {
                    summary.busy_runners_kept += 1;
                    cleared = false;
                }
                Err(e) => {
                    summary.failed("delete runner", &e.into());
                    cleared = false;
                }
            }
        }
        cleared
    }

    /// Whether an instance's credential is older than the grace and its runner never came
    /// online: a persistent runner that GitHub does not know, or a JIT runner still offline
    /// (a JIT runner exists from the moment it is minted, and is gone after its job).
    async fn never_came_online(
        &self,
        id: &str,
        registered: bool,
        until: Instant,
    ) -> Result<bool, Error> {
        let Some(text) = patience::until(until, || self.secrets.get(id)).await? else {
            return Ok(false);
        };
        let Ok(value) = InstanceSecret::parse(&text) else {
            return Ok(false);
        };
        let age = chrono::Utc::now() - value.issued_at;
        let past_grace = age
            .to_std()
            .is_ok_and(|a| a > self.settings.registration_grace);
        let absent = !value.credential.persistent() || !registered;
        Ok(past_grace && absent)
    }

    /// Instances the deregistration hook holds (Terminating:Wait, Warmed:Terminating:Wait,
    /// and Warmed:Pending:Wait on the way back into the pool): the drain heartbeated while
    /// it runs, completed once finished, re-sent when lost; with no drain, settled as an
    /// event would (a warm instance with no runner online is completed).
    async fn sweep_terminating(
        &self,
        group: &str,
        instances: &BTreeMap<&str, &str>,
        until: Instant,
        deadline: Instant,
        summary: &mut Summary,
    ) {
        for (instance, state) in instances {
            let result: Result<(), Error> = async {
                if !matches!(
                    *state,
                    "Terminating:Wait" | "Warmed:Terminating:Wait" | "Warmed:Pending:Wait"
                ) {
                    return Ok(());
                }
                let secret = self.read_secret(group, instance, until).await?;
                let from_pool = match *state {
                    "Terminating:Wait" => false,
                    // Leaving the warm pool: usually nothing to drain, but one trimmed on
                    // its way back into the pool may still be running a job.
                    "Warmed:Terminating:Wait" => true,
                    // On its way into the pool: held by this hook when scaled in with
                    // reuse (it has served: its secret is that of its time in service); a
                    // new instance (no secret) is held by the launch hooks, not ours.
                    _ if secret.is_some() => false,
                    _ => return Ok(()),
                };
                // The drain sent for this time in service, if any.
                let drain = secret.and_then(|s| s.drain_command);
                let state = match &drain {
                    Some(command) => Some(
                        patience::until(until, || self.commands.state(command, instance)).await?,
                    ),
                    None => None,
                };
                // The agent drained but did not complete the hook. Its secret stays for the
                // gone-instance sweep, which first deletes any runner the agent could not
                // remove.
                if state == Some(CommandState::Succeeded) {
                    self.complete(group, instance, deadline).await?;
                    summary.drains_completed += 1;
                    return Ok(());
                }
                // Otherwise as an event would: the drain still at work is left to the agent
                // (and its hook heartbeated here), one never sent (the event was lost) or
                // failed is sent again.
                match self
                    .settle(group, instance, from_pool, until, deadline)
                    .await?
                {
                    Outcome::Draining { command_id } if drain.as_ref() == Some(&command_id) => {
                        patience::until(until, || {
                            self.lifecycle
                                .heartbeat(group, HOOK_DEREGISTRATION, instance)
                        })
                        .await?;
                        summary.drains_heartbeated += 1;
                    }
                    Outcome::Draining { .. } => summary.drains_sent += 1,
                    Outcome::RemovedWithoutDrain => summary.removed_without_drain += 1,
                    Outcome::Completed => summary.drains_completed += 1,
                    _ => {}
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                summary.failed("terminating instance", &e);
            }
        }
    }
}

/// Whether a warm pool instance has finished its way in (hibernated, stopped or running in
/// the pool, no hook holding it).
fn at_rest_in_pool(state: &str) -> bool {
    matches!(
        state,
        "Warmed:Hibernated" | "Warmed:Stopped" | "Warmed:Running"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Common;
    use crate::fakes;
    use chrono::Utc;
    use std::time::Duration;
    use warmfleet_core::instance_secret::RunnerCredential;
    use warmfleet_core::ports::InstanceStatus;

    type Handler = Deregistration<fakes::Secrets, fakes::Asg, fakes::Ssm, fakes::Github>;

    const I: &str = "i-1234567890abcdef0";

    fn handler() -> Handler {
        Deregistration {
            secrets: fakes::Secrets::default(),
            lifecycle: fakes::Asg::default(),
            commands: fakes::Ssm::default(),
            github: fakes::Github::default(),
            settings: DeregistrationSettings {
                common: Common {
                    github_url: "https://github.com/acme".into(),
                    github_api_url: None,
                    github_secret: "gh".into(),
                    deadline_margin: Duration::from_millis(100),
                },
                groups: vec!["runners".into()],
                drain_command: "warmfleet-agent drain".into(),
                drain_timeout: Duration::from_secs(3600),
                registration_grace: Duration::from_secs(900),
            },
        }
    }

    fn event(fixture: &str) -> Event {
        let text = match fixture {
            "scale-in" => include_str!("../tests/fixtures/terminate-scale-in.json"),
            "trim" => include_str!("../tests/fixtures/terminate-warm-pool-trim.json"),
            _ => include_str!("../tests/fixtures/launch-cold.json"),
        };
        Event::parse(serde_json::from_str(text).unwrap()).unwrap()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn registered(h: &Handler, instance: &str, issued_ago: Duration) {
        let v = InstanceSecret {
            issued_at: Utc::now() - chrono::Duration::from_std(issued_ago).unwrap(),
            lifecycle_action: "t".into(),
            credential: RunnerCredential::RegistrationToken {
                token: "REG".to_owned().into(),
                expires_at: Utc::now(),
            },
            remove_token: None,
            drain_command: None,
        };
        h.secrets.values.lock().unwrap().insert(
            instance_secret_id("runners", instance),
            (v.to_secret(), vec![]),
        );
    }

    /// A drain sent to `instance` for this time in service, as the Lambda records it.
    async fn draining(h: &Handler, instance: &str) -> String {
        h.commands.reachable.lock().unwrap().push(instance.into());
        let command = h
            .commands
            .run(
                instance,
                &["drain".into()],
                DRAIN_COMMENT,
                Duration::from_secs(1),
            )
            .await
            .unwrap()
            .unwrap();
        let mut value = h
            .read_secret("runners", instance, soon())
            .await
            .unwrap()
            .unwrap();
        value.drain_command = Some(command.clone());
        h.write_secret("runners", instance, &value, soon())
            .await
            .unwrap();
        command
    }

    /// SSM reports the drain command succeeded.
    fn drain_ended(h: &Handler, command: String) {
        h.commands
            .states
            .lock()
            .unwrap()
            .insert(command, CommandState::Succeeded);
    }

    fn runner(id: u64, name: &str, busy: bool) -> Runner {
        serde_json::from_value(
            serde_json::json!({"id": id, "name": name, "status": "online", "busy": busy,
            "labels": [{"name": "warmfleet"}, {"name": "runners"}, {"name": name}]}),
        )
        .unwrap()
    }

    fn at(h: &Handler, instance: &str, state: &str) {
        h.lifecycle.instances.lock().unwrap().push(InstanceStatus {
            instance_id: instance.into(),
            group: "runners".into(),
            lifecycle_state: state.into(),
            protected_from_scale_in: false,
        });
    }

    /// Delivers an event while its hook waits (as AWS sends it).
    async fn deliver(h: &Handler, fixture: &str) -> Outcome {
        let state = match fixture {
            "scale-in" => "Terminating:Wait",
            "trim" => "Warmed:Terminating:Wait",
            _ => "Pending:Wait",
        };
        let waiting = h
            .lifecycle
            .instances
            .lock()
            .unwrap()
            .iter()
            .any(|i| i.instance_id == I && i.lifecycle_state == state);
        if !waiting {
            at(h, I, state);
        }
        h.handle(event(fixture), soon()).await.unwrap()
    }

    fn completed(h: &Handler) -> Vec<String> {
        h.lifecycle
            .completions
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.1.clone())
            .collect()
    }

    #[tokio::test]
    async fn scale_in_takes_the_labels_hands_over_a_remove_token_and_starts_the_drain() {
        let h = handler();
        registered(&h, I, Duration::ZERO);
        h.github.runners.lock().unwrap().push(runner(7, I, true));
        h.commands.reachable.lock().unwrap().push(I.into());
        let out = deliver(&h, "scale-in").await;
        assert_eq!(
            out,
            Outcome::Draining {
                command_id: "cmd-1".into()
            }
        );
        assert_eq!(
            h.commands.sent.lock().unwrap()[0].1,
            ["warmfleet-agent drain --timeout 3600s"]
        );
        let values = h.secrets.values.lock().unwrap();
        let s = InstanceSecret::parse(&values[&instance_secret_id("runners", I)].0).unwrap();
        assert!(s.remove_token.is_some());
        assert_eq!(*h.github.unlabelled.lock().unwrap(), [7]);
        assert!(
            completed(&h).is_empty(),
            "the agent completes the hook after its drain"
        );
    }

    #[tokio::test]
    async fn a_trimmed_or_never_registered_instance_is_cleaned_up_and_completed() {
        let h = handler();
        registered(&h, I, Duration::ZERO);
        assert_eq!(deliver(&h, "trim").await, Outcome::Completed);
        assert!(h.secrets.values.lock().unwrap().is_empty());
        assert_eq!(deliver(&h, "scale-in").await, Outcome::Completed);
        assert_eq!(completed(&h), [I, I]);
        assert!(h.commands.sent.lock().unwrap().is_empty());
        assert!(matches!(
            deliver(&h, "launch").await,
            Outcome::Ignored { .. }
        ));
    }

    #[tokio::test]
    async fn a_trimmed_instance_with_its_runner_still_online_is_drained_not_cut_off() {
        // Scale-in with reuse sent it back towards the pool mid-job, then the pool was
        // trimmed: the terminate event says Origin WarmPool, but a job is running there.
        let h = handler();
        registered(&h, I, Duration::ZERO);
        h.commands.reachable.lock().unwrap().push(I.into());
        h.github.runners.lock().unwrap().push(runner(7, I, true));
        let out = deliver(&h, "trim").await;
        assert!(matches!(out, Outcome::Draining { .. }), "{out:?}");
        assert!(
            completed(&h).is_empty(),
            "the agent completes the hook after the job"
        );
        assert_eq!(h.commands.sent.lock().unwrap().len(), 1);
        // An offline leftover of a trimmed instance is just deleted.
        let h = handler();
        registered(&h, I, Duration::ZERO);
        let mut stale = runner(8, I, false);
        stale.status = RunnerStatus::Offline;
        h.github.runners.lock().unwrap().push(stale);
        let out = deliver(&h, "trim").await;
        assert_eq!(out, Outcome::Completed);
        assert!(h.github.runners.lock().unwrap().is_empty());
        assert_eq!(completed(&h), [I]);
    }

    #[tokio::test]
    async fn a_repeated_event_leaves_a_running_drain_alone() {
        // Events come twice and late. The first started the drain; by the second the agent
        // has stopped its listener (the runner is offline) and is removing the registration:
        // completing the hook now would terminate the instance under it.
        for fixture in ["trim", "scale-in"] {
            let h = handler();
            registered(&h, I, Duration::ZERO);
            h.github.runners.lock().unwrap().push(runner(7, I, false));
            let command = draining(&h, I).await;
            h.github.runners.lock().unwrap()[0].status = RunnerStatus::Offline;
            let under_way = Outcome::Draining {
                command_id: command.clone(),
            };
            assert_eq!(deliver(&h, fixture).await, under_way, "{fixture}");
            assert!(completed(&h).is_empty(), "{fixture}");
            assert!(h.github.deleted.lock().unwrap().is_empty(), "{fixture}");
            assert_eq!(
                h.commands.sent.lock().unwrap().len(),
                1,
                "{fixture}: no second drain"
            );
            // Once that drain has ended, an event is handled as before.
            drain_ended(&h, command);
            assert_ne!(deliver(&h, fixture).await, under_way, "{fixture}");
        }
    }

    #[tokio::test]
    async fn an_event_whose_hook_no_longer_waits_is_ignored() {
        // A scale-in with reuse delivered again after the instance went back to the pool
        // (hibernated: a drain would wait there for its next time in service), and a late
        // one for an instance already gone.
        for state in [Some("Warmed:Hibernated"), None] {
            let h = handler();
            registered(&h, I, Duration::ZERO);
            let mut left = runner(7, I, false);
            left.status = RunnerStatus::Offline;
            h.github.runners.lock().unwrap().push(left);
            h.commands.reachable.lock().unwrap().push(I.into());
            if let Some(state) = state {
                at(&h, I, state);
            }
            let out = h.handle(event("scale-in"), soon()).await.unwrap();
            assert!(
                matches!(&out, Outcome::Ignored { reason } if reason.contains("no longer waits")),
                "{state:?}: {out:?}"
            );
            assert!(h.commands.sent.lock().unwrap().is_empty(), "{state:?}");
            assert!(h.github.unlabelled.lock().unwrap().is_empty(), "{state:?}");
            assert!(h.github.deleted.lock().unwrap().is_empty(), "{state:?}");
            assert!(completed(&h).is_empty(), "{state:?}");
        }
    }

    #[tokio::test]
    async fn without_ssm_an_idle_runner_is_removed_here_and_a_busy_one_waits() {
        let h = handler();
        registered(&h, I, Duration::ZERO);
        h.github.runners.lock().unwrap().push(runner(7, I, true));
        let out = deliver(&h, "scale-in").await;
        assert!(matches!(out, Outcome::Waiting { .. }), "{out:?}");
        assert!(completed(&h).is_empty());
        assert!(
            h.github.deleted.lock().unwrap().is_empty(),
            "never a busy runner"
        );
        h.github.runners.lock().unwrap()[0].busy = false;
        assert_eq!(deliver(&h, "scale-in").await, Outcome::RemovedWithoutDrain);
        assert_eq!(*h.github.deleted.lock().unwrap(), [7]);
        assert_eq!(completed(&h), [I]);
    }

    #[tokio::test]
    async fn the_sweep_reconciles_both_ways_and_survives_a_failing_item() {
        let h = handler();
        at(&h, "i-live", "InService");
        at(&h, "i-draining", "Terminating:Wait");
        at(&h, "i-lost-drain", "Terminating:Wait");
        at(&h, "i-stuck", "InService");
        registered(&h, "i-live", Duration::ZERO);
        registered(&h, "i-draining", Duration::ZERO);
        registered(&h, "i-lost-drain", Duration::ZERO);
        registered(&h, "i-stuck", Duration::from_secs(3600));
        registered(&h, "i-gone", Duration::ZERO);
        *h.github.runners.lock().unwrap() = vec![
            runner(1, "i-live", false),
            runner(2, "i-draining", true),
            runner(3, "i-orphan", false),
            runner(4, "i-orphan-busy", true),
            runner(5, "i-orphan-broken", false),
            runner(6, "i-orphan-2", false),
        ];
        h.github.undeletable.lock().unwrap().push(5);
        h.commands
            .reachable
            .lock()
            .unwrap()
            .push("i-lost-drain".to_owned());
        draining(&h, "i-draining").await;

        let s = h.sweep(soon()).await.unwrap();
        assert_eq!(s.runners_deleted, 2, "{s:?}");
        assert_eq!(
            *h.github.deleted.lock().unwrap(),
            [3, 6],
            "past the failing one"
        );
        assert_eq!(s.busy_runners_kept, 1);
        assert_eq!(s.errors["GitHub"], 1);
        assert_eq!(s.secrets_deleted, 1);
        assert!(!h
            .secrets
            .values
            .lock()
            .unwrap()
            .contains_key(&instance_secret_id("runners", "i-gone")));
        assert_eq!(s.drains_heartbeated, 1);
        assert_eq!(*h.lifecycle.heartbeats.lock().unwrap(), ["i-draining"]);
        assert_eq!(s.drains_sent, 1, "the lost drain is sent again");
        assert_eq!(s.marked_unhealthy, 1);
        assert_eq!(*h.lifecycle.unhealthy.lock().unwrap(), ["i-stuck"]);
    }

    #[tokio::test]
    async fn the_sweep_deletes_a_drained_runner_of_a_gone_instance_by_its_name() {
        // A drain took the runner's labels; its instance went before the agent could
        // remove it. Only the name and the instance's secret tie it to this group.
        let h = handler();
        registered(&h, "i-gone", Duration::ZERO);
        registered(&h, "i-gone-busy", Duration::ZERO);
        let unlabelled = |id, name: &str, busy| {
            let mut r = runner(id, name, busy);
            r.labels.clear();
            r
        };
        *h.github.runners.lock().unwrap() = vec![
            unlabelled(1, "i-gone", false),
            unlabelled(2, "i-gone-busy", true),
            unlabelled(3, "i-someone-elses", false),
        ];
        let s = h.sweep(soon()).await.unwrap();
        assert_eq!(*h.github.deleted.lock().unwrap(), [1]);
        assert_eq!((s.runners_deleted, s.busy_runners_kept), (1, 1));
        let secrets = h.secrets.values.lock().unwrap();
        assert!(!secrets.contains_key(&instance_secret_id("runners", "i-gone")));
        assert!(
            secrets.contains_key(&instance_secret_id("runners", "i-gone-busy")),
            "kept until its runner can go"
        );
        assert_eq!(s.secrets_deleted, 1);
    }

    #[tokio::test]
    async fn after_a_drain_that_did_not_complete_the_sweep_completes_and_later_clears_up() {
        // The drain succeeded but the agent's remove failed (the runner is left, unlabelled)
        // and so did its completion: the sweep completes the hook, and once the instance is
        // gone deletes the runner, then the secret. Deleting the secret first would lose
        // the only tie between that runner and this group.
        let h = handler();
        at(&h, I, "Terminating:Wait");
        registered(&h, I, Duration::ZERO);
        let command = draining(&h, I).await;
        drain_ended(&h, command);
        let mut left = runner(7, I, false);
        left.labels.clear();
        left.status = RunnerStatus::Offline;
        h.github.runners.lock().unwrap().push(left);
        let s = h.sweep(soon()).await.unwrap();
        assert_eq!(s.drains_completed, 1, "{s:?}");
        assert_eq!(completed(&h), [I]);
        assert!(h
            .secrets
            .values
            .lock()
            .unwrap()
            .contains_key(&instance_secret_id("runners", I)));
        h.lifecycle.instances.lock().unwrap().clear();
        let s = h.sweep(soon()).await.unwrap();
        assert_eq!((s.runners_deleted, s.secrets_deleted), (1, 1), "{s:?}");
        assert!(h.github.runners.lock().unwrap().is_empty());
        assert!(h.secrets.values.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_sweep_heartbeats_a_drain_running_in_a_trimmed_instance_instead_of_completing_it() {
        let h = handler();
        at(&h, I, "Warmed:Terminating:Wait");
        at(&h, "i-warm", "Warmed:Terminating:Wait");
        registered(&h, I, Duration::ZERO);
        h.github.runners.lock().unwrap().push(runner(7, I, true));
        draining(&h, I).await;
        let s = h.sweep(soon()).await.unwrap();
        assert_eq!(*h.lifecycle.heartbeats.lock().unwrap(), [I]);
        assert_eq!(
            completed(&h),
            ["i-warm"],
            "only the one with nothing to drain"
        );
        assert_eq!((s.drains_heartbeated, s.drains_completed), (1, 1));
    }

    #[tokio::test]
    async fn a_drain_whose_instance_hibernated_before_reporting_does_not_hold_the_pool_back() {
        // Scale-in with reuse: the agent drained, removed its runner, completed the hook, and
        // the instance hibernated in the pool before SSM heard the command end (it stays "in
        // progress"). When the pool is deleted, neither the event nor the sweep may wait for
        // that drain.
        let h = handler();
        registered(&h, I, Duration::ZERO);
        draining(&h, I).await;
        assert_eq!(deliver(&h, "trim").await, Outcome::Completed);
        assert_eq!(completed(&h), [I]);

        let h = handler();
        registered(&h, I, Duration::ZERO);
        draining(&h, I).await;
        at(&h, I, "Warmed:Terminating:Wait");
        let s = h.sweep(soon()).await.unwrap();
        assert_eq!((s.drains_completed, s.drains_heartbeated), (1, 0), "{s:?}");
        assert_eq!(completed(&h), [I]);
        assert!(h.lifecycle.heartbeats.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_sweep_drains_an_instance_scaled_in_back_into_the_pool_whose_event_was_lost() {
        // Scale-in with reuse: the hook holds the instance in Warmed:Pending:Wait with its
        // runner listening. Without the sweep it would hibernate under it at the timeout.
        let h = handler();
        at(&h, I, "Warmed:Pending:Wait");
        registered(&h, I, Duration::ZERO);
        h.github.runners.lock().unwrap().push(runner(7, I, false));
        h.commands.reachable.lock().unwrap().push(I.into());
        // A new instance entering the pool, held by the launch hooks: not ours.
        at(&h, "i-new", "Warmed:Pending:Wait");
        let s = h.sweep(soon()).await.unwrap();
        assert_eq!(s.drains_sent, 1, "{s:?}");
        let secret = h.read_secret("runners", I, soon()).await.unwrap().unwrap();
        assert!(secret.drain_command.is_some() && secret.remove_token.is_some());
        assert!(completed(&h).is_empty());
        assert!(h
            .read_secret("runners", "i-new", soon())
            .await
            .unwrap()
            .is_none());
        // The next sweep heartbeats the drain while it runs, then completes it.
        let s = h.sweep(soon()).await.unwrap();
        assert_eq!(s.drains_heartbeated, 1, "{s:?}");
        assert_eq!(*h.lifecycle.heartbeats.lock().unwrap(), [I]);
        drain_ended(&h, secret.drain_command.unwrap());
        let s = h.sweep(soon()).await.unwrap();
        assert_eq!(s.drains_completed, 1, "{s:?}");
        assert_eq!(completed(&h), [I]);
    }

    #[tokio::test]
    async fn the_sweep_deletes_a_runner_left_registered_for_an_instance_asleep_in_the_pool() {
        // An ephemeral (JIT) runner drained back into the pool: the agent stopped it but
        // cannot remove it, and GitHub would refuse the instance's next JIT configuration.
        let h = handler();
        at(&h, I, "Warmed:Hibernated");
        registered(&h, I, Duration::ZERO);
        let mut left = runner(7, I, false);
        left.labels.clear();
        left.status = RunnerStatus::Offline;
        h.github.runners.lock().unwrap().push(left);
        // Another, still reported online (GitHub's status lags): the next sweep's.
        at(&h, "i-other", "Warmed:Hibernated");
        registered(&h, "i-other", Duration::ZERO);
        h.github
            .runners
            .lock()
            .unwrap()
            .push(runner(8, "i-other", false));
        let s = h.sweep(soon()).await.unwrap();
        assert_eq!(s.runners_deleted, 1, "{s:?}");
        assert_eq!(*h.github.deleted.lock().unwrap(), [7]);
        // The secrets stay while the instances are in the pool.
        assert_eq!(s.secrets_deleted, 0);
    }

    #[tokio::test]
    async fn a_drain_of_an_earlier_time_in_service_does_not_count() {
        // Reused from the warm pool: the drain that sent it there succeeded long ago. Now it
        // is terminating with a job running and its drain event was lost: the sweep must
        // drain it, not take the old success as this drain's and cut the job off.
        let h = handler();
        at(&h, I, "Terminating:Wait");
        registered(&h, I, Duration::from_secs(3600)); // the earlier time in service
        let old = draining(&h, I).await;
        drain_ended(&h, old);
        registered(&h, I, Duration::ZERO); // the resume's new credential: no drain yet
        h.github.runners.lock().unwrap().push(runner(7, I, true));
        let s = h.sweep(soon()).await.unwrap();
        assert_eq!((s.drains_sent, s.drains_completed), (1, 0), "{s:?}");
        assert!(completed(&h).is_empty());
        // Its success, once it comes, completes the hook.
        let new = h.read_secret("runners", I, soon()).await.unwrap().unwrap();
        let new = new.drain_command.expect("the new drain is recorded");
        drain_ended(&h, new);
        let s = h.sweep(soon()).await.unwrap();
        assert_eq!(s.drains_completed, 1, "{s:?}");
        assert_eq!(completed(&h), [I]);
    }
}
