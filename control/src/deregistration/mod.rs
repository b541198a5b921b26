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
//!   the runner and completes the hook. When SSM cannot reach the instance (it does not
//!   know it, or the drain was not delivered within its delivery timeout), the runner is
//!   deleted here (never while busy: then the sweep heartbeats the hook and waits) and the
//!   hook completed.
//! - the same event again (delivered twice, or late): ignored once the hook no longer waits;
//!   while it waits and the drain the first one started runs, left to the agent.
//!
//! The sweep reconciles each group in both directions, every item on its own (one failure
//! never stops the rest): runners whose instance is gone are deleted (busy ones wait for the
//! next sweep); secrets of gone instances are deleted; instances the terminate hook holds
//! (leaving the group or the pool, or scaled in back into the pool) have their drain
//! heartbeated while it runs, completed when it has finished, and re-sent when it was lost;
//! runners left registered for instances asleep in the pool are deleted; instances in
//! service past the registration grace whose runner never came online are marked
//! unhealthy, so the group replaces them.

mod sweep;

use crate::budget::Listing;
use crate::config::DeregistrationSettings;
use crate::event::{Event, Place, Transition};
use crate::spending;
use crate::tokens::{shared_token, TokenKind};
use crate::Error;
use serde::Serialize;
use std::collections::BTreeMap;
use tokio::time::Instant;
use tracing::{info, warn};
use warmfleet_core::github::{GithubError, Runner, RunnerStatus};
use warmfleet_core::instance_secret::{InstanceSecret, RemoveToken};
use warmfleet_core::naming::{instance_secret_id, DRAIN_COMMENT, HOOK_DEREGISTRATION};
use warmfleet_core::patience;
use warmfleet_core::ports::{
    CommandState, Commands, GithubSpending, HookResult, InstanceStatus, JobLedger, Lifecycle,
    Metrics, Occupancy, RunnerRegistry, SecretStore,
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
    /// SSM could not reach the instance and its runner is busy: the sweep heartbeats the
    /// hook and tries again.
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
    /// Runner-table records of instances no longer in the group or its pool.
    pub records_deleted: u32,
    pub drains_heartbeated: u32,
    pub drains_completed: u32,
    pub drains_sent: u32,
    pub removed_without_drain: u32,
    pub marked_unhealthy: u32,
    /// Whether every runner was listed this time (GitHub's side of the reconciliation).
    pub listing: Listing,
    /// Runners offline while their instance is in service (when listed).
    pub offline_runners: u32,
    /// Runners of the group without an instance in it (when listed; deleted unless busy).
    pub orphan_runners: u32,
    /// What the deployment had spent of GitHub's rate limit in its current window before
    /// this sweep, by the account every function adds to (none: not accounted).
    pub github_spent: Option<u64>,
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

pub struct Deregistration<S, L, C, G, M> {
    pub secrets: S,
    pub lifecycle: L,
    pub commands: C,
    pub github: G,
    /// Where the sweep publishes what only GitHub knows (offline and orphan runners) and
    /// what is left of GitHub's rate limit.
    pub metrics: M,
    /// Where every function accounts its GitHub requests (`spending`; none: not
    /// accounted).
    pub spending: Option<Box<dyn GithubSpending>>,
    /// Where queued jobs claim idle runners (the webhook receiver's job table; none: not
    /// kept up).
    pub claims: Option<Box<dyn JobLedger>>,
    /// Where agents record their jobs (the runner table): a runner leaving service that it
    /// holds busy was never one to claim, and the sweep deletes the records of instances
    /// gone (none: no table).
    pub occupancy: Option<Box<dyn Occupancy>>,
    pub settings: DeregistrationSettings,
}

impl<S: SecretStore, L: Lifecycle, C: Commands, G: RunnerRegistry, M: Metrics>
    Deregistration<S, L, C, G, M>
{
    fn until(&self, deadline: Instant) -> Instant {
        self.settings.common.until(deadline)
    }

    /// Handles one terminate event; the GitHub requests it made go to the deployment's
    /// account.
    pub async fn handle(&self, event: Event, deadline: Instant) -> Result<Outcome, Error> {
        let before = self.github.api_calls();
        let outcome = self.terminating(event, deadline).await;
        let until = self.until(deadline);
        spending::account(self.spending.as_deref(), &self.github, before, until).await;
        outcome
    }

    async fn terminating(&self, event: Event, deadline: Instant) -> Result<Outcome, Error> {
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
        let Some(waiting) = self.waiting(&e.group, &e.instance_id, until).await? else {
            // Delivered twice or late: acting now would drain an instance already back
            // in the pool (hibernated, the command would wait for its next time in
            // service) or one gone. The sweep follows whatever the first delivery began.
            let reason = format!(
                "{}: its {HOOK_DEREGISTRATION} hook no longer waits",
                e.instance_id
            );
            info!(%reason, "event ignored");
            return Ok(Outcome::Ignored { reason });
        };
        let from_pool = e.origin == Place::WarmPool;
        if !from_pool
            && !waiting.protected_from_scale_in
            && !self.recorded_busy(&e.instance_id, until).await
        {
            self.no_longer_claimable(&e.group, &e.instance_id, until)
                .await;
        }
        self.settle(&e.group, &e.instance_id, from_pool, until, deadline)
            .await
    }

    /// Whether the runner table holds the instance busy (without the table, or when it
    /// cannot be read: not).
    async fn recorded_busy(&self, instance: &str, until: Instant) -> bool {
        let Some(occupancy) = self.occupancy.as_deref() else {
            return false;
        };
        let ids = [instance.to_owned()];
        match patience::until(until, || occupancy.of(&ids)).await {
            Ok(records) => records.get(instance).copied().unwrap_or(false),
            Err(e) => {
                warn!(instance, error = %e, "the runner table could not be read");
                false
            }
        }
    }

    /// An idle runner leaving service is no longer one a queued job may claim: record_metric
    /// counted it (unprotected in service) and counts again only within the minute, and a
    /// job claiming it meanwhile would wait for a runner that is gone. Best effort: an event
    /// delivered twice while the hook waits lowers the count twice, and a job then adds an
    /// instance it might have claimed, until the next count. With claims off there is no
    /// count, and the conditional decrement changes nothing.
    async fn no_longer_claimable(&self, group: &str, instance: &str, until: Instant) {
        let Some(claims) = self.claims.as_deref() else {
            return;
        };
        match patience::until(until, || claims.claim_idle(group)).await {
            Ok(true) => info!(instance, group, "its runner is no longer one to claim"),
            Ok(false) => {}
            Err(e) => {
                warn!(instance, group, error = %e, "the idle runners to claim were not lowered")
            }
        }
    }

    /// The instance, when a terminate hook holds it now: leaving the group, leaving the
    /// pool, or (scale-in with reuse) on its way back into it.
    async fn waiting(
        &self,
        group: &str,
        instance: &str,
        until: Instant,
    ) -> Result<Option<InstanceStatus>, Error> {
        const WAITING: [&str; 3] = [
            "Terminating:Wait",
            "Warmed:Terminating:Wait",
            "Warmed:Pending:Wait",
        ];
        let groups = [group.to_owned()];
        let in_group = patience::until(until, || self.lifecycle.instances(&groups)).await?;
        let warm = patience::until(until, || self.lifecycle.warm_pool(group)).await?;
        Ok(in_group
            .into_iter()
            .chain(warm)
            .find(|i| i.instance_id == instance && WAITING.contains(&i.lifecycle_state.as_str())))
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
        let drain = InstanceSecret::parse(&text)
            .ok()
            .and_then(|s| s.drain_command);
        if let Some(command_id) = drain {
            let state =
                patience::until(until, || self.commands.state(&command_id, instance)).await?;
            match state {
                CommandState::Pending | CommandState::Running if !runners.is_empty() => {
                    info!(instance, command_id, "a drain is under way: left to it");
                    return Ok(Outcome::Draining { command_id });
                }
                // SSM could not deliver it within its delivery timeout: the agent cannot be
                // told, as when SSM does not know the instance at all.
                CommandState::Undelivered { detail } => {
                    warn!(instance, command_id, %detail, "the drain was never delivered");
                    return self
                        .without_agent(group, instance, &runners, until, deadline)
                        .await;
                }
                _ => {}
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
                let t = shared_token(&self.secrets, &self.github, group, TokenKind::Remove, until)
                    .await?;
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
                self.settings.drain_delivery_timeout,
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
        self.without_agent(group, instance, runners, until, deadline)
            .await
    }

    /// When the agent cannot be told: the runner is removed here and the hook completed,
    /// unless the runner is running a job (the sweep heartbeats the hook meanwhile).
    async fn without_agent(
        &self,
        group: &str,
        instance: &str,
        runners: &[Runner],
        until: Instant,
        deadline: Instant,
    ) -> Result<Outcome, Error> {
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
}

#[cfg(test)]
mod tests;
