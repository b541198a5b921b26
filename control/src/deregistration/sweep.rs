//! The deregistration Lambda's scheduled sweep: each group reconciled in both directions,
//! every item on its own (see the module above).

use super::{Deregistration, Outcome, Summary};
use crate::budget::Listing;
use crate::spending;
use crate::Error;
use std::collections::{BTreeMap, BTreeSet};
use tokio::time::Instant;
use tracing::{info, warn};
use warmfleet_core::github::{GithubError, RateLimit, Runner, RunnerStatus};
use warmfleet_core::instance_secret::InstanceSecret;
use warmfleet_core::naming::{
    group_secret_prefix, instance_of_secret, HOOK_DEREGISTRATION, METRIC_GITHUB_API_CALLS,
    METRIC_GITHUB_RATE_LIMIT_PERCENT, METRIC_GITHUB_RATE_LIMIT_REMAINING,
    METRIC_GITHUB_REQUESTS_THIS_WINDOW, METRIC_OFFLINE_RUNNERS, METRIC_ORPHAN_RUNNERS,
};
use warmfleet_core::patience;
use warmfleet_core::ports::{
    CommandState, Commands, Lifecycle, Metrics, RunnerRegistry, SecretStore,
};

impl<S: SecretStore, L: Lifecycle, C: Commands, G: RunnerRegistry, M: Metrics>
    Deregistration<S, L, C, G, M>
{
    /// The scheduled sweep over every group. The hooks are seen to on every sweep; what
    /// needs every runner listed (GitHub's side of the reconciliation, and the offline and
    /// orphan counts) on those the budget paces (see `budget`). The GitHub requests it made
    /// go to the deployment's account, whether it succeeded or not.
    pub async fn sweep(&self, deadline: Instant) -> Result<Summary, Error> {
        let before = self.github.api_calls();
        let summary = self.reconcile(deadline).await;
        let until = self.until(deadline);
        spending::account(self.spending.as_deref(), &self.github, before, until).await;
        summary
    }

    async fn reconcile(&self, deadline: Instant) -> Result<Summary, Error> {
        let until = self.until(deadline);
        let mut summary = Summary::default();
        let groups = &self.settings.groups;
        // Read before the instances are: a record made after the reading is never taken
        // for one whose instance is gone.
        let records = self.records(until, &mut summary).await;
        let in_groups = patience::until(until, || self.lifecycle.instances(groups)).await?;
        let mut pools = Vec::new();
        for group in groups {
            match patience::until(until, || self.lifecycle.warm_pool(group)).await {
                Ok(w) => pools.push((group, w)),
                Err(e) => summary.failed("warm pool", &e.into()),
            }
        }
        let fleet = in_groups.len() + pools.iter().map(|(_, w)| w.len()).sum::<usize>();
        let calls_before = self.github.api_calls();
        let rate = self.paced(fleet, until, &mut summary).await;
        // Every runner (the same pages a label filter would read): a drained runner has
        // lost its labels, and only its name still ties it to its instance.
        let all = match summary.listing {
            Listing::Listed => Some(self.github.runners(None, until).await?),
            Listing::NotDue | Listing::Deferred => None,
        };
        // Another deployment's runners may carry the same group name: only this one's are
        // looked at (by its own label).
        let label = self.settings.common.deployment.label();
        let mut found = Vec::new();
        for (group, warm) in &pools {
            let instances: BTreeMap<&str, &str> = in_groups
                .iter()
                .filter(|i| &i.group == *group)
                .chain(warm.iter())
                .map(|i| (i.instance_id.as_str(), i.lifecycle_state.as_str()))
                .collect();
            if let Some(all) = &all {
                let mine: Vec<&Runner> = all
                    .iter()
                    .filter(|r| r.has_label(&label) && r.has_label(group))
                    .collect();
                let offline = offline_in_service(&mine, &instances);
                let orphans = self
                    .sweep_runners(&mine, &instances, until, &mut summary)
                    .await;
                summary.offline_runners += offline;
                summary.orphan_runners += orphans;
                found.push((*group, offline, orphans));
                self.sweep_secrets(group, &instances, &mine, all, until, &mut summary)
                    .await;
            }
            self.sweep_terminating(group, &instances, until, deadline, &mut summary)
                .await;
        }
        if pools.len() == groups.len() {
            let members: BTreeSet<&str> = in_groups
                .iter()
                .chain(pools.iter().flat_map(|(_, w)| w.iter()))
                .map(|i| i.instance_id.as_str())
                .collect();
            self.forget_gone(records, &members, until, &mut summary)
                .await;
        }
        let calls = self.github.api_calls() - calls_before;
        for (group, _) in &pools {
            let counts = found.iter().find(|f| f.0 == *group).map(|f| (f.1, f.2));
            self.publish(group, counts, calls, rate, until, &mut summary)
                .await;
        }
        info!(?summary, github_calls = calls, "sweep done");
        Ok(summary)
    }

    /// The runner table's records of this deployment's groups (none without the table, or
    /// when it cannot be read).
    async fn records(&self, until: Instant, summary: &mut Summary) -> Vec<(String, String)> {
        let Some(occupancy) = self.occupancy.as_deref() else {
            return vec![];
        };
        match patience::until(until, || occupancy.recorded()).await {
            Ok(records) => records
                .into_iter()
                .filter(|(_, group)| self.settings.groups.contains(group))
                .collect(),
            Err(e) => {
                summary.failed("read the runner table", &e.into());
                vec![]
            }
        }
    }

    /// Deletes the records of instances that are neither in their group nor in its pool
    /// (the instances of every group listed: one whose pool could not be read is not
    /// judged): at a thousand short jobs a minute they would otherwise pile up for a month,
    /// and record_metric reads them all every minute.
    async fn forget_gone(
        &self,
        records: Vec<(String, String)>,
        members: &BTreeSet<&str>,
        until: Instant,
        summary: &mut Summary,
    ) {
        let Some(occupancy) = self.occupancy.as_deref() else {
            return;
        };
        for (instance, _) in records {
            if members.contains(instance.as_str()) {
                continue;
            }
            match patience::until(until, || occupancy.forget(&instance)).await {
                Ok(()) => summary.records_deleted += 1,
                Err(e) => summary.failed("delete a runner record", &e.into()),
            }
        }
    }

    /// Reads GitHub's rate limit (free) and the deployment's account of its window, and
    /// decides, by the budget, whether this sweep lists every runner of a fleet of `fleet`
    /// instances.
    async fn paced(
        &self,
        fleet: usize,
        until: Instant,
        summary: &mut Summary,
    ) -> Option<RateLimit> {
        let rate = match self.github.rate_limit(until).await {
            Ok(rate) => rate,
            Err(e) => {
                summary.failed("rate limit", &e.into());
                None
            }
        };
        let (budget, period) = (self.settings.budget, self.settings.sweep_period);
        let interval = budget.listing_interval(fleet, rate.map(|r| r.limit), period);
        summary.github_spent = match (rate, self.spending.as_deref()) {
            (Some(r), Some(spending)) => {
                match patience::until(until, || spending.spent(r.reset)).await {
                    Ok(spent) => Some(spent),
                    Err(e) => {
                        summary.failed("GitHub account", &e.into());
                        None
                    }
                }
            }
            _ => None,
        };
        let now = chrono::Utc::now().timestamp();
        summary.listing = budget.listing(now, period, interval, fleet, rate, summary.github_spent);
        rate
    }

    /// Publishes a group's findings: GitHub requests made, the offline and orphan runners
    /// (when listed), what is left of the rate limit and what the deployment spent of its
    /// window, this sweep included (when known).
    async fn publish(
        &self,
        group: &str,
        counts: Option<(u32, u32)>,
        calls: u64,
        rate: Option<RateLimit>,
        until: Instant,
        summary: &mut Summary,
    ) {
        let mut values = vec![(METRIC_GITHUB_API_CALLS, calls as f64)];
        if let Some((offline, orphans)) = counts {
            values.push((METRIC_OFFLINE_RUNNERS, f64::from(offline)));
            values.push((METRIC_ORPHAN_RUNNERS, f64::from(orphans)));
        }
        if let Some(r) = rate {
            values.push((METRIC_GITHUB_RATE_LIMIT_REMAINING, r.remaining as f64));
            let percent = 100.0 * r.remaining as f64 / r.limit.max(1) as f64;
            values.push((METRIC_GITHUB_RATE_LIMIT_PERCENT, percent));
        }
        if let Some(spent) = summary.github_spent {
            values.push((METRIC_GITHUB_REQUESTS_THIS_WINDOW, (spent + calls) as f64));
        }
        if let Err(e) = patience::until(until, || self.metrics.publish(group, &values)).await {
            summary.failed("publish", &e.into());
        }
    }

    /// Runners whose instance has left the group (or never was in it) are deleted; how
    /// many there were.
    async fn sweep_runners(
        &self,
        runners: &[&Runner],
        instances: &BTreeMap<&str, &str>,
        until: Instant,
        summary: &mut Summary,
    ) -> u32 {
        let mut orphans = 0;
        for r in runners
            .iter()
            .filter(|r| !instances.contains_key(r.name.as_str()))
        {
            orphans += 1;
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
        orphans
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
                    // The agent cannot be told and its runner runs a job: the job's time
                    // is not the hook's to cut short.
                    Outcome::Waiting { .. } => {
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

/// Runners GitHub shows offline (and not busy) while their instance is in service: its
/// runner does not listen.
fn offline_in_service(runners: &[&Runner], instances: &BTreeMap<&str, &str>) -> u32 {
    let offline = runners.iter().filter(|r| {
        r.status == RunnerStatus::Offline
            && !r.busy
            && instances.get(r.name.as_str()) == Some(&"InService")
    });
    offline.count() as u32
}

/// Whether a warm pool instance has finished its way in (hibernated, stopped or running in
/// the pool, no hook holding it).
fn at_rest_in_pool(state: &str) -> bool {
    matches!(
        state,
        "Warmed:Hibernated" | "Warmed:Stopped" | "Warmed:Running"
    )
}
