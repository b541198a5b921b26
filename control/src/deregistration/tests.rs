//! The deregistration Lambda against in-memory fakes of its ports: events, drains, sweeps.

use super::*;
use crate::config::Common;
use crate::fakes;
use chrono::Utc;
use std::time::Duration;
use warmfleet_core::github::RateLimit;
use warmfleet_core::instance_secret::RunnerCredential;
use warmfleet_core::ports::InstanceStatus;

type Handler =
    Deregistration<fakes::Secrets, fakes::Asg, fakes::Ssm, fakes::Github, fakes::Cloudwatch>;

const I: &str = "i-1234567890abcdef0";

fn handler() -> Handler {
    Deregistration {
        secrets: fakes::Secrets::default(),
        lifecycle: fakes::Asg::default(),
        commands: fakes::Ssm::default(),
        github: fakes::Github::default(),
        metrics: fakes::Cloudwatch::default(),
        spending: None,
        claims: None,
        occupancy: None,
        settings: DeregistrationSettings {
            common: Common {
                github_url: "https://github.com/acme".into(),
                github_api_url: None,
                github_secret: "gh".into(),
                deployment: Default::default(),
                job_table: None,
                deadline_margin: Duration::from_millis(100),
            },
            groups: vec!["runners".into()],
            drain_command: "warmfleet-agent drain".into(),
            drain_timeout: Duration::from_secs(3600),
            drain_delivery_timeout: Duration::from_secs(120),
            registration_grace: Duration::from_secs(900),
            sweep_period: Duration::from_secs(300),
            budget: crate::budget::Budget { share: 0.2 },
            runner_table: None,
        },
    }
}

fn event(fixture: &str) -> Event {
    let text = match fixture {
        "scale-in" => include_str!("../../tests/fixtures/terminate-scale-in.json"),
        "trim" => include_str!("../../tests/fixtures/terminate-warm-pool-trim.json"),
        _ => include_str!("../../tests/fixtures/launch-cold.json"),
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
            Duration::from_secs(120),
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
async fn a_runner_leaving_service_is_no_longer_one_a_queued_job_may_claim() {
    let mut h = handler();
    let claims = fakes::Ledger::default();
    h.claims = Some(Box::new(claims.clone()));
    claims.idle.lock().unwrap().insert("runners".into(), 2);
    registered(&h, I, Duration::ZERO);
    h.github.runners.lock().unwrap().push(runner(7, I, false));
    h.commands.reachable.lock().unwrap().push(I.into());
    deliver(&h, "scale-in").await;
    assert_eq!(claims.idle.lock().unwrap()["runners"], 1);
    // One trimmed from the warm pool was never counted.
    deliver(&h, "trim").await;
    assert_eq!(claims.idle.lock().unwrap()["runners"], 1);
    // Nor one taken while protected (a health replacement of a busy instance).
    *h.lifecycle.instances.lock().unwrap() = vec![InstanceStatus {
        instance_id: I.into(),
        group: "runners".into(),
        lifecycle_state: "Terminating:Wait".into(),
        protected_from_scale_in: true,
    }];
    h.handle(event("scale-in"), soon()).await.unwrap();
    assert_eq!(claims.idle.lock().unwrap()["runners"], 1);
    // Nor one the runner table holds busy, protected or not.
    h.lifecycle.instances.lock().unwrap()[0].protected_from_scale_in = false;
    h.occupancy = Some(Box::new(fakes::Runners {
        busy: [(I.to_owned(), true)].into(),
        ..Default::default()
    }));
    h.handle(event("scale-in"), soon()).await.unwrap();
    assert_eq!(claims.idle.lock().unwrap()["runners"], 1);
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
    assert_eq!((s.listing, s.orphan_runners), (Listing::Listed, 4));
}

#[tokio::test]
async fn the_sweep_deletes_the_runner_records_of_instances_gone_and_keeps_the_rest() {
    let mut h = handler();
    at(&h, "i-live", "InService");
    at(&h, "i-warm", "Warmed:Hibernated");
    let record = |i: &str, g: &str| (i.to_owned(), g.to_owned());
    h.occupancy = Some(Box::new(fakes::Runners {
        groups: [
            record("i-live", "runners"),
            record("i-warm", "runners"),
            record("i-gone", "runners"),
            // Another deployment's group sharing the table: not this sweep's to judge.
            record("i-elsewhere", "other"),
        ]
        .into(),
        ..Default::default()
    }));
    let s = h.sweep(soon()).await.unwrap();
    assert_eq!(s.records_deleted, 1, "{s:?}");
    let runners = h.occupancy.as_deref().unwrap();
    assert_eq!(runners.recorded().await.unwrap().len(), 3);
    assert!(!runners
        .recorded()
        .await
        .unwrap()
        .iter()
        .any(|(i, _)| i == "i-gone"));
}

fn published(h: &Handler) -> Vec<(String, Vec<(String, f64)>)> {
    h.metrics.published.lock().unwrap().clone()
}

#[tokio::test]
async fn the_sweep_publishes_offline_and_orphan_runners_and_what_is_left_of_the_rate_limit() {
    let h = handler();
    at(&h, "i-live", "InService");
    at(&h, "i-silent", "InService");
    at(&h, "i-booting", "Pending:Wait");
    let offline = |id, name| {
        let mut r = runner(id, name, false);
        r.status = RunnerStatus::Offline;
        r
    };
    *h.github.runners.lock().unwrap() = vec![
        runner(1, "i-live", false),
        offline(2, "i-silent"),
        // Not in service yet: its runner is not expected to listen.
        offline(3, "i-booting"),
        runner(4, "i-orphan", false),
    ];
    *h.github.rate.lock().unwrap() = Some(RateLimit {
        limit: 5000,
        remaining: 4000,
        reset: 0,
    });
    let s = h.sweep(soon()).await.unwrap();
    assert_eq!(
        (s.listing, s.offline_runners, s.orphan_runners),
        (Listing::Listed, 1, 1),
        "{s:?}"
    );
    let values = |pairs: &[(&str, f64)]| -> Vec<(String, f64)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };
    assert_eq!(
        published(&h),
        [(
            "runners".to_owned(),
            values(&[
                // A page, and the orphan's deletion.
                ("GitHubApiCalls", 2.0),
                ("OfflineRunners", 1.0),
                ("OrphanRunners", 1.0),
                ("GitHubRateLimitRemaining", 4000.0),
                ("GitHubRateLimitRemainingPercent", 80.0),
            ])
        )]
    );
}

#[tokio::test]
async fn the_sweep_keeps_the_deployment_within_its_share_by_every_functions_account() {
    let mut h = handler();
    let account = fakes::Spending::default();
    h.spending = Some(Box::new(account.clone()));
    at(&h, "i-live", "InService");
    *h.github.runners.lock().unwrap() = vec![runner(1, "i-live", false)];
    let reset = 1_764_000_000;
    // GitHub has plenty left (the installation's other users spent little) ...
    *h.github.rate.lock().unwrap() = Some(RateLimit {
        limit: 5000,
        remaining: 4000,
        reset,
    });
    // ... but the launches and drains spent the deployment's whole share (5000 × 0.2).
    account.windows.lock().unwrap().insert(reset, 1000);
    let s = h.sweep(soon()).await.unwrap();
    assert_eq!((s.listing, s.github_spent), (Listing::Deferred, Some(1000)));
    assert_eq!(*h.github.listings.lock().unwrap(), 0);
    assert!(published(&h)[0]
        .1
        .contains(&("GitHubRequestsThisWindow".to_owned(), 1000.0)));

    // Room for its page: listed, and the page added to the account.
    account.windows.lock().unwrap().insert(reset, 500);
    h.metrics.published.lock().unwrap().clear();
    let s = h.sweep(soon()).await.unwrap();
    assert_eq!((s.listing, s.github_spent), (Listing::Listed, Some(500)));
    assert_eq!(account.windows.lock().unwrap()[&reset], 501);
    assert!(published(&h)[0]
        .1
        .contains(&("GitHubRequestsThisWindow".to_owned(), 501.0)));

    // A listing that fails part-way: the sweep fails, its pages are accounted all the same.
    *h.github.unlistable.lock().unwrap() = true;
    assert!(h.sweep(soon()).await.is_err());
    assert_eq!(account.windows.lock().unwrap()[&reset], 502);
}

#[tokio::test]
async fn a_sweep_short_of_rate_limit_sees_to_the_hooks_and_leaves_github_alone() {
    let h = handler();
    at(&h, "i-lost-drain", "Terminating:Wait");
    registered(&h, "i-lost-drain", Duration::ZERO);
    registered(&h, "i-gone", Duration::ZERO);
    h.commands
        .reachable
        .lock()
        .unwrap()
        .push("i-lost-drain".to_owned());
    *h.github.runners.lock().unwrap() = vec![
        runner(1, "i-lost-drain", false),
        runner(2, "i-orphan", false),
    ];
    // A page would leave less than half the deployment's share (5000 × 0.2 / 2) until the
    // window resets: launches keep it.
    *h.github.rate.lock().unwrap() = Some(RateLimit {
        limit: 5000,
        remaining: 500,
        reset: 0,
    });
    let s = h.sweep(soon()).await.unwrap();
    assert_eq!(s.listing, Listing::Deferred, "{s:?}");
    assert_eq!(*h.github.listings.lock().unwrap(), 0);
    assert_eq!(s.drains_sent, 1, "the hooks are seen to all the same");
    assert!(h.github.deleted.lock().unwrap().is_empty());
    assert_eq!(
        s.secrets_deleted, 0,
        "its leftover runners are looked for first"
    );
    let p = published(&h);
    assert!(!p[0].1.iter().any(|(k, _)| k == "OfflineRunners"), "{p:?}");
    assert!(p[0]
        .1
        .contains(&("GitHubRateLimitRemainingPercent".to_owned(), 10.0)));
}

/// A runner of deployment `deployment` (its own label), in the group `runners`.
fn runner_of(deployment: &str, id: u64, name: &str) -> Runner {
    serde_json::from_value(serde_json::json!({"id": id, "name": name, "status": "online",
        "busy": false, "labels": [{"name": "warmfleet"}, {"name": format!("warmfleet-{deployment}")},
        {"name": "runners"}, {"name": name}]}))
    .unwrap()
}

#[tokio::test]
async fn the_sweep_leaves_another_deployments_runners_of_the_same_group_name_alone() {
    let mut h = handler();
    h.settings.common.deployment = warmfleet_core::naming::Deployment::parse("prod").unwrap();
    at(&h, "i-live", "InService");
    *h.github.runners.lock().unwrap() = vec![
        runner_of("prod", 1, "i-live"),
        runner_of("prod", 2, "i-orphan"),
        // Staging's group is called `runners` too; its instances are not in this account.
        runner_of("staging", 3, "i-staging"),
        // Nor is a deployment's without an id this one's.
        runner(4, "i-unnamed", false),
    ];
    let s = h.sweep(soon()).await.unwrap();
    assert_eq!(*h.github.deleted.lock().unwrap(), [2], "{s:?}");
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
async fn a_drain_ssm_never_delivers_counts_as_unreachable_and_a_busy_runner_keeps_its_hook_alive() {
    // The instance's SSM agent stopped answering: the drain is sent with a short delivery
    // timeout, and once it ends undelivered the runner is handled here, not re-sent.
    let h = handler();
    at(&h, I, "Terminating:Wait");
    registered(&h, I, Duration::ZERO);
    h.github.runners.lock().unwrap().push(runner(7, I, true));
    let command = draining(&h, I).await;
    assert_eq!(
        *h.commands.delivery.lock().unwrap(),
        Some(Duration::from_secs(120))
    );
    h.commands.states.lock().unwrap().insert(
        command,
        CommandState::Undelivered {
            detail: "Delivery Timed Out".into(),
        },
    );
    // Busy: nothing removed, the hook heartbeated (a job is never cut short), nothing sent.
    let sent = h.commands.sent.lock().unwrap().len();
    let s = h.sweep(soon()).await.unwrap();
    assert_eq!(s.drains_heartbeated, 1, "{s:?}");
    assert_eq!(*h.lifecycle.heartbeats.lock().unwrap(), [I]);
    assert!(completed(&h).is_empty());
    assert_eq!(
        h.commands.sent.lock().unwrap().len(),
        sent,
        "not sent again"
    );
    // The job over: the runner is deleted here and the hook completed.
    h.github.runners.lock().unwrap()[0].busy = false;
    let s = h.sweep(soon()).await.unwrap();
    assert_eq!(s.removed_without_drain, 1, "{s:?}");
    assert_eq!(completed(&h), [I]);
    assert_eq!(*h.github.deleted.lock().unwrap(), [7]);
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
