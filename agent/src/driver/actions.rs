//! The driver's actions: `perform` dispatches each of the state machine's actions to a
//! method of its own; the slow ones report back through the driver's channel.

use super::calls::{await_credential, bounded, insist};
use super::listener::remove;
use super::{Driver, Follow, Msg, RELAUNCH_DELAY};
use crate::error::AgentError;
use crate::imds_guard;
use crate::machine::{Action, Event, State};
use chrono::Utc;
use secrecy::SecretString;
use std::time::Duration;
use tracing::{info, warn};
use warmfleet_core::imds::{Imds, Target};
use warmfleet_core::instance_secret::{InstanceSecret, RunnerCredential};
use warmfleet_core::naming;
use warmfleet_core::ports::{Completion, HookResult, Lifecycle, Metrics, Occupancy, SecretStore};

impl Driver {
    pub(super) async fn perform(&mut self, action: Action) -> Result<(), AgentError> {
        match action {
            Action::Identify => self.identify(),
            Action::AwaitCredential => self.await_credential()?,
            Action::Register => {
                self.timing.register_started = Some(tokio::time::Instant::now());
                self.register().await?
            }
            Action::Watch => self.watch_again(),
            Action::RestartListener => self.send_later(async {
                tokio::time::sleep(RELAUNCH_DELAY).await;
                Msg::Relaunch
            }),
            Action::Protect(on) => self.protect(on).await?,
            Action::StopListener => self.stop_listener(),
            Action::RemoveRunner => self.remove_runner().await,
            Action::CompleteBootstrap(result) => self.complete_bootstrap(result).await?,
            Action::CompleteDeregistration => self.complete_deregistration().await?,
            Action::Replace => self.replace().await?,
            Action::Ready => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
            Action::AwaitSettle => {
                let settle = self.settings.timeouts.settle;
                self.send_later(async move {
                    tokio::time::sleep(settle).await;
                    Msg::Event(Event::Settled)
                });
            }
            Action::AwaitLinger => {
                let linger = self.settings.timeouts.linger;
                self.linger_generation += 1;
                let generation = self.linger_generation;
                self.send_later(async move {
                    tokio::time::sleep(linger).await;
                    Msg::Lingered(generation)
                });
            }
            Action::ForgetCredential => self.forget_credential().await?,
            Action::MarkUnhealthy => self.mark_unhealthy().await?,
        }
        Ok(())
    }

    /// Asks IMDS where the instance is going, in a fresh session (the old token may have
    /// expired while asleep; who the instance is was learnt at start). Right after a resume
    /// IMDS may not answer yet: asked again with backoff (about 30 s in all) before the
    /// agent gives up.
    fn identify(&mut self) {
        self.imds = Imds::new(self.settings.timeouts.call);
        let imds = self.imds.clone();
        self.send_later(async move {
            let backoff = backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(8))
                .with_max_times(6);
            let asked = backon::Retryable::retry(|| imds.target(), backoff)
                .notify(|e, pause| warn!(error = %e, ?pause, "IMDS: asking again"))
                .await;
            match asked {
                Ok(t) => Msg::Event(Event::Target(t)),
                Err(e) => Msg::Event(Event::Failed(AgentError::Target(e).to_string())),
            }
        });
    }

    /// Waits (in a task) for a credential newer than any used before.
    fn await_credential(&mut self) -> Result<(), AgentError> {
        self.timing.credential_asked = Some(tokio::time::Instant::now());
        let (identity, _, secrets) = self.aws()?;
        let id = self.secret_id(identity);
        let secrets = secrets.clone();
        let newer_than = self.record.credential_used;
        let limit = self.settings.timeouts.credential;
        let call = self.settings.timeouts.call;
        self.send_later(await_credential(secrets, id, newer_than, limit, call));
        Ok(())
    }

    /// Follows a listener that outlived the agent, if the record names one that runs.
    fn watch_again(&mut self) {
        match (self.record.listener_pid, self.record.listener_started) {
            (Some(pid), Some(started)) => {
                info!(pid, "the listener outlived the agent: following it again");
                self.watch(Follow::Adopted { pid, started });
            }
            _ => {
                let _ = self.tx.send(Msg::Event(Event::ListenerExited(None)));
            }
        }
    }

    /// Marks the runner busy or idle: scale-in protection on or off, or, with a runner
    /// table, a record there (no Auto Scaling call per job; scale-in then chooses among the
    /// instances the table holds idle). Clearing asks only when the record says busy, and
    /// busy is recorded before it is asked for: should the agent die before the answer,
    /// its successor still knows to clear it. Setting asks only when this process has not
    /// seen it accepted since (a job starting while the runner lingers busy after the last
    /// costs no call: at scale every call counts).
    async fn protect(&mut self, on: bool) -> Result<(), AgentError> {
        if !on && !self.record.protected {
            return Ok(());
        }
        if on && self.record.protected && self.protection_confirmed {
            return Ok(());
        }
        self.protection_confirmed = false;
        if on {
            self.record.protected = true;
            self.save();
        }
        let (identity, asg, _) = self.aws()?;
        let call = self.settings.timeouts.call;
        // Throttled at scale, tried again with backoff and jitter: a running job's
        // instance must not look idle, nor be scaled in.
        match &self.occupancy {
            Some(occupancy) => {
                insist(call, "UpdateItem", || {
                    occupancy.record(&identity.instance_id, &identity.group, on)
                })
                .await?;
                info!(instance_id = %identity.instance_id, busy = on, "recorded in the runner table");
            }
            None => {
                insist(call, "SetInstanceProtection", || {
                    asg.set_protection(&identity.group, &identity.instance_id, on)
                })
                .await?;
                info!(instance_id = %identity.instance_id, protected = on, "scale-in protection");
            }
        }
        self.record.protected = on;
        self.protection_confirmed = on;
        self.save();
        Ok(())
    }

    /// SIGINT to the listener (it ends its session and exits 0); none running: as if it
    /// had exited.
    fn stop_listener(&mut self) {
        match self.record.listener_pid {
            Some(pid) if self.listener_running() => {
                info!(pid, "stopping the listener");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            _ => {
                let _ = self.tx.send(Msg::Event(Event::ListenerExited(None)));
            }
        }
    }

    /// `config.sh remove` (in a task), with the remove token the deregistration Lambda left
    /// in the secret when there is one.
    async fn remove_runner(&mut self) {
        let token = self.remove_token().await;
        let configured = self.runner.configured();
        let runner = self.runner.clone();
        self.send_later(async move {
            if configured {
                remove(&runner, token).await;
            }
            Msg::Event(Event::Removed)
        });
        self.record.runner_name = None;
    }

    /// Completes `bootstrap`. The agent may be up before its launch hooks fire (the
    /// instance still Pending, not Pending:Wait): then it waits for them.
    async fn complete_bootstrap(&mut self, result: HookResult) -> Result<(), AgentError> {
        let hook = self.settings.bootstrap_hook.clone();
        let until = tokio::time::Instant::now() + self.settings.timeouts.credential;
        while self.complete(&hook, result).await? == Completion::NotPending
            && tokio::time::Instant::now() < until
        {
            if !self.hooks_not_yet_fired().await {
                // They fired, perhaps just after the attempt above found nothing to
                // complete: once more, or the hook would wait out its timeout and the
                // launch be abandoned.
                self.complete(&hook, result).await?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if result == HookResult::Continue && self.record.state == State::Idle {
            let instance = self.instance().to_owned();
            self.timing.report(&instance);
        }
        if result == HookResult::Abandon {
            self.count_failure().await;
        }
        Ok(())
    }

    /// Completes `deregistration` if the instance is on its way out of service (to the
    /// pool or to its end).
    async fn complete_deregistration(&mut self) -> Result<(), AgentError> {
        let target = self.imds.target().await.map_err(AgentError::Target)?;
        self.record.back_to_pool = target == Target::WarmPool;
        if target != Target::InService {
            let hook = self.settings.deregistration_hook.clone();
            self.complete(&hook, HookResult::Continue).await?;
        }
        Ok(())
    }

    /// An ephemeral runner's job is done: the group replaces the instance.
    async fn replace(&mut self) -> Result<(), AgentError> {
        let (identity, asg, _) = self.aws()?;
        let id = &identity.instance_id;
        let call = self.settings.timeouts.call;
        insist(call, "TerminateInstanceInAutoScalingGroup", || {
            asg.replace(id)
        })
        .await?;
        info!(instance_id = %identity.instance_id, "ephemeral runner done: instance replaced");
        Ok(())
    }

    /// The group replaces an instance whose runner cannot run.
    async fn mark_unhealthy(&mut self) -> Result<(), AgentError> {
        let (identity, asg, _) = self.aws()?;
        let id = &identity.instance_id;
        let call = self.settings.timeouts.call;
        insist(call, "SetInstanceHealth", || asg.set_unhealthy(id)).await?;
        warn!(instance_id = %identity.instance_id, "instance marked unhealthy");
        self.count_failure().await;
        Ok(())
    }

    /// Counts this instance in `FailedInstances`, on which an alarm tells the operator when
    /// instances keep failing (a runner version GitHub refuses fails every one). Best
    /// effort: the failure is in the journal either way.
    async fn count_failure(&self) {
        let (Some(identity), Some(metrics)) = (&self.identity, &self.metrics) else {
            return;
        };
        let count = metrics.publish(&identity.group, &[(naming::METRIC_FAILED_INSTANCES, 1.0)]);
        if let Err(e) = bounded(self.settings.timeouts.call, "PutMetricData", count).await {
            warn!(
                metric = naming::METRIC_FAILED_INSTANCES,
                "the failure could not be counted: {e}"
            );
        }
    }

    /// Whether the instance is still Pending (or Warmed:Pending), before its hooks' wait.
    async fn hooks_not_yet_fired(&self) -> bool {
        let Ok((identity, asg, _)) = self.aws() else {
            return false;
        };
        let call = self.settings.timeouts.call;
        let instance = bounded(
            call,
            "DescribeAutoScalingInstances",
            asg.instance(&identity.instance_id),
        );
        let state = match instance.await {
            Ok(Some(i)) => Some(i.lifecycle_state),
            // Warm-pool instances are listed with the pool.
            Ok(None) => bounded(call, "DescribeWarmPool", asg.warm_pool(&identity.group))
                .await
                .ok()
                .and_then(|w| {
                    w.into_iter()
                        .find(|i| i.instance_id == identity.instance_id)
                        .map(|i| i.lifecycle_state)
                }),
            Err(_) => None,
        };
        matches!(state.as_deref(), Some("Pending" | "Warmed:Pending"))
    }

    async fn complete(&mut self, hook: &str, result: HookResult) -> Result<Completion, AgentError> {
        let (identity, asg, _) = self.aws()?;
        let complete = asg.complete(&identity.group, hook, &identity.instance_id, result);
        let done = bounded(
            self.settings.timeouts.call,
            "CompleteLifecycleAction",
            complete,
        )
        .await?;
        let reason = self.record.last_error.clone().unwrap_or_default();
        match result {
            HookResult::Continue => {
                info!(instance_id = %identity.instance_id, hook, result = result.as_str(), ?done, "hook completed")
            }
            HookResult::Abandon => {
                warn!(instance_id = %identity.instance_id, hook, result = result.as_str(), ?done, %reason, "hook completed")
            }
        }
        if done == Completion::Done {
            self.record.last_hook = Some(format!("{hook} {} at {}", result.as_str(), Utc::now()));
            self.save();
        }
        Ok(done)
    }

    /// Closes IMDS to the runner user (`runner.block_imds`); an error when it cannot.
    pub(super) fn guard_imds(&self) -> Result<(), AgentError> {
        if !self.settings.block_imds {
            warn!("runner.block_imds = false: jobs can reach the instance metadata service");
            return Ok(());
        }
        let Some(run_as) = &self.runner.run_as else {
            warn!("the runner runs as the agent's own user: IMDS cannot be closed to it alone");
            return Ok(());
        };
        let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").ok();
        let targets = imds_guard::targets(endpoint.as_deref())?;
        imds_guard::apply(&imds_guard::ruleset(run_as.uid, &targets))?;
        info!(
            uid = run_as.uid,
            table = imds_guard::TABLE,
            "IMDS closed to the runner user"
        );
        Ok(())
    }

    /// Replaces the credential just used in the instance's secret with `Used`, unless the
    /// secret holds another (a newer launch's) by now.
    async fn forget_credential(&self) -> Result<(), AgentError> {
        let (identity, _, secrets) = self.aws()?;
        let Some(used) = self.record.credential_used else {
            return Ok(());
        };
        let id = self.secret_id(identity);
        let call = self.settings.timeouts.call;
        let Some(text) = bounded(call, "GetSecretValue", secrets.get(&id)).await? else {
            return Ok(());
        };
        let mut value = InstanceSecret::parse(&text).map_err(|reason| AgentError::Secret {
            id: id.clone(),
            reason,
        })?;
        if value.issued_at != used || matches!(value.credential, RunnerCredential::Used { .. }) {
            return Ok(());
        }
        value.credential = value.credential.used();
        bounded(
            call,
            "PutSecretValue",
            secrets.update(&id, &value.to_secret()),
        )
        .await?;
        info!(secret = %id, "the used credential is cleared from the instance's secret");
        Ok(())
    }

    /// The remove token the deregistration Lambda put in the secret, if it is still valid.
    async fn remove_token(&self) -> Option<SecretString> {
        let (identity, _, secrets) = self.aws().ok()?;
        let id = self.secret_id(identity);
        let text = bounded(
            self.settings.timeouts.call,
            "GetSecretValue",
            secrets.get(&id),
        )
        .await
        .ok()??;
        let secret = InstanceSecret::parse(&text).ok()?;
        secret
            .remove_token
            .filter(|t| t.expires_at > Utc::now())
            .map(|t| t.token)
    }
}
