//! The registration Lambda: launch lifecycle events on the `registration` hook.
//!
//! - Into the warm pool: nothing is registered; the hook is completed with CONTINUE.
//! - Into service (a cold launch, or a resume from the warm pool): a registration token
//!   (persistent mode: the group's shared one while fresh, see `tokens`) or a JIT
//!   configuration (ephemeral mode) is written to the instance's own secret as a new
//!   version, then the hook is completed with CONTINUE.
//! - The same lifecycle action again (EventBridge delivers at least once): the secret
//!   already holds a credential for it, so nothing is minted; the hook is completed (a hook
//!   no longer waiting is not an error).
//! - GitHub asking to wait past the deadline (rate limits): the hook is heartbeated and the
//!   invocation fails retryably, so Lambda's retries of the event come back later.
//! - GitHub or AWS failing otherwise past the deadline: the hook is completed with ABANDON,
//!   and the reason is logged; the instance is replaced.

use crate::config::{Mode, RegistrationSettings};
use crate::event::{Event, LifecycleEvent, Place, Transition};
use crate::spending;
use crate::tokens::{shared_token, TokenKind};
use crate::Error;
use chrono::Utc;
use tokio::time::Instant;
use tracing::{info, warn};
use warmfleet_core::github::{GithubError, JitRequest};
use warmfleet_core::instance_secret::{InstanceSecret, RunnerCredential};
use warmfleet_core::naming::{
    instance_secret_id, runner_labels, runner_name, HOOK_REGISTRATION, TAG_ASG_NAME,
    TAG_INSTANCE_ARN, TAG_INSTANCE_ID,
};
use warmfleet_core::patience;
use warmfleet_core::ports::{GithubSpending, HookResult, Lifecycle, RunnerRegistry, SecretStore};

/// What the handler did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An instance entering the warm pool: completed, nothing minted.
    WarmPoolEntry,
    /// A credential minted and stored, the hook completed.
    Registered,
    /// A repeated event: the credential for this action exists already.
    AlreadyRegistered,
    /// Minting failed; the hook was completed with ABANDON.
    Abandoned { reason: String },
    /// Not a launch on the registration hook: left alone.
    Ignored { reason: String },
}

pub struct Registration<S, L, G> {
    pub secrets: S,
    pub lifecycle: L,
    pub github: G,
    /// Where every function accounts its GitHub requests (`spending`; none: not
    /// accounted).
    pub spending: Option<Box<dyn GithubSpending>>,
    pub settings: RegistrationSettings,
}

impl<S: SecretStore, L: Lifecycle, G: RunnerRegistry> Registration<S, L, G> {
    /// Handles one event; `deadline` is the invocation's own (the margin is kept here). The
    /// GitHub requests it made go to the deployment's account.
    pub async fn handle(&self, event: Event, deadline: Instant) -> Result<Outcome, Error> {
        let before = self.github.api_calls();
        let outcome = self.launching(event, deadline).await;
        let until = self.settings.common.until(deadline);
        spending::account(self.spending.as_deref(), &self.github, before, until).await;
        outcome
    }

    async fn launching(&self, event: Event, deadline: Instant) -> Result<Outcome, Error> {
        let e = match event {
            Event::Lifecycle(e)
                if e.hook == HOOK_REGISTRATION && e.transition == Transition::Launching =>
            {
                e
            }
            other => {
                let reason = format!("not a launch on the {HOOK_REGISTRATION} hook: {other:?}");
                warn!(%reason, "event ignored");
                return Ok(Outcome::Ignored { reason });
            }
        };
        let work_until = self.settings.common.until(deadline);
        if e.destination == Place::WarmPool {
            self.complete(&e, HookResult::Continue, deadline).await?;
            info!(instance = %e.instance_id, group = %e.group, "warm pool entry: nothing registered");
            return Ok(Outcome::WarmPoolEntry);
        }
        let id = instance_secret_id(&e.group, &e.instance_id);
        // Reading the secret counts as part of the work: if AWS fails it, the launch is
        // abandoned like any other failure.
        let attempt = async {
            if self.registered(&e, &id, work_until).await? {
                return Ok(None);
            }
            self.mint_and_store(&e, &id, work_until).await
        };
        match attempt.await {
            Ok(None) => {
                self.complete(&e, HookResult::Continue, deadline).await?;
                info!(instance = %e.instance_id, "repeated event: already registered");
                Ok(Outcome::AlreadyRegistered)
            }
            Ok(Some(kind)) => {
                self.complete(&e, HookResult::Continue, deadline).await?;
                info!(instance = %e.instance_id, group = %e.group, kind, origin = ?e.origin, "registered");
                Ok(Outcome::Registered)
            }
            // GitHub asks to wait past this invocation (a secondary rate limit's
            // retry-after, a primary limit spent): the launch is kept alive (a heartbeat
            // gives the hook its whole timeout again) and the invocation fails retryably,
            // so that Lambda's retries of the event, one and then two minutes later, ask
            // again. Should GitHub still refuse then, the hook times out and its default
            // (ABANDON in the module) replaces the instance.
            Err(err @ Error::Github(GithubError::RateLimited { .. })) => {
                patience::until(deadline, || {
                    self.lifecycle.heartbeat(&e.group, &e.hook, &e.instance_id)
                })
                .await?;
                warn!(instance = %e.instance_id, group = %e.group, reason = %err, "GitHub asks to wait: the launch is kept waiting for a retry of this event");
                Err(err)
            }
            Err(err) => {
                let reason = err.to_string();
                warn!(instance = %e.instance_id, group = %e.group, %reason, "registration failed; abandoning the launch");
                self.complete(&e, HookResult::Abandon, deadline).await?;
                Ok(Outcome::Abandoned { reason })
            }
        }
    }

    async fn complete(
        &self,
        e: &LifecycleEvent,
        result: HookResult,
        deadline: Instant,
    ) -> Result<(), Error> {
        let done = patience::until(deadline, || {
            self.lifecycle
                .complete(&e.group, &e.hook, &e.instance_id, result)
        })
        .await?;
        info!(instance = %e.instance_id, hook = %e.hook, result = result.as_str(), ?done, "hook completed");
        Ok(())
    }

    /// Mints the credential for this launch and writes it as the secret's new version;
    /// `None` when a repeated delivery of the same event got there first (ephemeral mode).
    async fn mint_and_store(
        &self,
        e: &LifecycleEvent,
        id: &str,
        until: Instant,
    ) -> Result<Option<&'static str>, Error> {
        let (kind, credential) = match self.settings.mode {
            Mode::Persistent => {
                let t = shared_token(
                    &self.secrets,
                    &self.github,
                    &e.group,
                    TokenKind::Registration,
                    until,
                )
                .await?;
                (
                    "registration-token",
                    RunnerCredential::RegistrationToken {
                        token: t.token,
                        expires_at: t.expires_at,
                    },
                )
            }
            Mode::Ephemeral => {
                let Some(jit) = self.jit_config(e, id, until).await? else {
                    return Ok(None);
                };
                (
                    "jit-config",
                    RunnerCredential::JitConfig {
                        runner_id: jit.runner.id,
                        encoded_jit_config: jit.encoded_jit_config,
                    },
                )
            }
        };
        let value = InstanceSecret {
            issued_at: Utc::now(),
            lifecycle_action: e.token.clone(),
            credential,
            remove_token: None,
            drain_command: None,
        };
        let tags = [
            (TAG_INSTANCE_ID, e.instance_id.as_str()),
            (TAG_INSTANCE_ARN, e.instance_arn.as_str()),
            (TAG_ASG_NAME, e.group.as_str()),
        ];
        let text = value.to_secret();
        patience::until(until, || self.secrets.put(id, &text, &tags)).await?;
        Ok(Some(kind))
    }

    /// Whether the instance's secret already holds a credential for this lifecycle action.
    async fn registered(
        &self,
        e: &LifecycleEvent,
        id: &str,
        until: Instant,
    ) -> Result<bool, Error> {
        let current = patience::until(until, || self.secrets.get(id)).await?;
        Ok(current.is_some_and(|text| {
            // An unreadable value is replaced: only a credential for this action counts.
            InstanceSecret::parse(&text).is_ok_and(|s| s.lifecycle_action == e.token)
        }))
    }

    /// A JIT configuration named after the instance. GitHub refuses a second runner of the
    /// same name (409). If a repeated delivery of this event registered it meanwhile, that
    /// one stands (`None`); otherwise the runner was left by an earlier attempt
    /// (generate-jitconfig is not idempotent): it is deleted, if idle, and the request made
    /// once more.
    async fn jit_config(
        &self,
        e: &LifecycleEvent,
        id: &str,
        until: Instant,
    ) -> Result<Option<warmfleet_core::github::JitConfig>, Error> {
        let request = JitRequest {
            name: runner_name(&e.instance_id),
            runner_group_id: self.settings.runner_group_id,
            labels: runner_labels(
                &self.settings.common.deployment,
                &e.group,
                &e.instance_id,
                &self.settings.labels,
            ),
            work_folder: "_work".into(),
        };
        match self.github.jit_config(&request, until).await {
            Err(GithubError::Rejected { status, .. }) if status.as_u16() == 409 => {
                if self.registered(e, id, until).await? {
                    return Ok(None);
                }
                // By name: a runner drained back into the pool has lost its labels.
                if let Some(r) = self.github.runner_named(&request.name, until).await? {
                    warn!(runner = r.id, name = %r.name, "deleting a stale runner of the same name");
                    match self.github.delete_runner(r.id, until).await {
                        // Gone already: the sweep deletes such runners too, and may be first.
                        Ok(()) | Err(GithubError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Some(self.github.jit_config(&request, until).await?))
            }
            other => Ok(Some(other?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Common;
    use crate::fakes;
    use secrecy::ExposeSecret;
    use std::time::Duration;
    use warmfleet_core::github::RateLimit;

    fn event(fixture: &str) -> Event {
        let text = match fixture {
            "cold" => include_str!("../tests/fixtures/launch-cold.json"),
            "entry" => include_str!("../tests/fixtures/launch-warm-pool-entry.json"),
            "resume" => include_str!("../tests/fixtures/launch-warm-pool-resume.json"),
            "scale-in" => include_str!("../tests/fixtures/terminate-scale-in.json"),
            _ => include_str!("../tests/fixtures/scheduled.json"),
        };
        Event::parse(serde_json::from_str(text).unwrap()).unwrap()
    }

    fn handler(mode: Mode) -> Registration<fakes::Secrets, fakes::Asg, fakes::Github> {
        Registration {
            secrets: fakes::Secrets::default(),
            lifecycle: fakes::Asg::default(),
            github: fakes::Github::default(),
            spending: None,
            settings: RegistrationSettings {
                common: Common {
                    github_url: "https://github.com/acme".into(),
                    github_api_url: None,
                    github_secret: "gh".into(),
                    deployment: Default::default(),
                    job_table: None,
                    deadline_margin: Duration::from_millis(200),
                },
                mode,
                runner_group_id: 1,
                labels: vec!["linux".into()],
            },
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn stored(h: &Registration<fakes::Secrets, fakes::Asg, fakes::Github>) -> InstanceSecret {
        let values = h.secrets.values.lock().unwrap();
        let (text, tags) = &values["warmfleet/runners/i-1234567890abcdef0"];
        assert!(tags.contains(&(TAG_INSTANCE_ID.to_owned(), "i-1234567890abcdef0".to_owned())));
        assert!(tags.contains(&(
            TAG_INSTANCE_ARN.to_owned(),
            "arn:aws:ec2:us-west-2:123456789012:instance/i-1234567890abcdef0".to_owned()
        )));
        InstanceSecret::parse(text).unwrap()
    }

    fn completions(h: &Registration<fakes::Secrets, fakes::Asg, fakes::Github>) -> Vec<HookResult> {
        h.lifecycle
            .completions
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.2)
            .collect()
    }

    #[tokio::test]
    async fn a_cold_launch_stores_a_fresh_token_and_continues() {
        let h = handler(Mode::Persistent);
        assert_eq!(
            h.handle(event("cold"), soon()).await.unwrap(),
            Outcome::Registered
        );
        let s = stored(&h);
        assert_eq!(s.lifecycle_action, "87654321-4321-4321-4321-210987654321");
        let RunnerCredential::RegistrationToken { token, .. } = s.credential else {
            panic!()
        };
        assert_eq!(token.expose_secret(), "REG1");
        assert_eq!(completions(&h), [HookResult::Continue]);
    }

    #[tokio::test]
    async fn a_launch_adds_the_requests_it_made_to_the_deployments_account() {
        let mut h = handler(Mode::Persistent);
        let account = fakes::Spending::default();
        h.spending = Some(Box::new(account.clone()));
        let reset = 1_764_000_000;
        *h.github.rate.lock().unwrap() = Some(RateLimit {
            limit: 5000,
            remaining: 4999,
            reset,
        });
        h.handle(event("cold"), soon()).await.unwrap();
        // Its token: one request, in the window GitHub named.
        assert_eq!(*account.windows.lock().unwrap(), [(reset, 1)].into());
        // A warm pool entry asks GitHub nothing and writes nothing.
        h.handle(event("entry"), soon()).await.unwrap();
        assert_eq!(*account.windows.lock().unwrap(), [(reset, 1)].into());
    }

    #[tokio::test]
    async fn launches_share_the_groups_token_each_in_its_own_secret() {
        let h = handler(Mode::Persistent);
        let shared = warmfleet_core::naming::shared_token_secret_id("runners", "registration");
        h.secrets
            .values
            .lock()
            .unwrap()
            .insert(shared, ("{}".to_owned().into(), Default::default()));
        for (instance, action) in [
            (
                "i-0000000000000000a",
                "11111111-2222-4333-8444-55555555555a",
            ),
            (
                "i-0000000000000000b",
                "11111111-2222-4333-8444-55555555555b",
            ),
        ] {
            let Event::Lifecycle(mut e) = event("cold") else {
                panic!()
            };
            (e.instance_id, e.token) = (instance.into(), action.into());
            assert_eq!(
                h.handle(Event::Lifecycle(e), soon()).await.unwrap(),
                Outcome::Registered
            );
        }
        assert_eq!(*h.github.tokens.lock().unwrap(), 1, "one token for both");
        let values = h.secrets.values.lock().unwrap();
        for instance in ["i-0000000000000000a", "i-0000000000000000b"] {
            let text = &values[&format!("warmfleet/runners/{instance}")].0;
            let RunnerCredential::RegistrationToken { token, .. } =
                InstanceSecret::parse(text).unwrap().credential
            else {
                panic!()
            };
            assert_eq!(token.expose_secret(), "REG1", "{instance}: its own copy");
        }
    }

    #[tokio::test]
    async fn a_warm_pool_entry_mints_nothing() {
        let h = handler(Mode::Persistent);
        assert_eq!(
            h.handle(event("entry"), soon()).await.unwrap(),
            Outcome::WarmPoolEntry
        );
        assert_eq!(*h.github.tokens.lock().unwrap(), 0);
        assert!(h.secrets.values.lock().unwrap().is_empty());
        assert_eq!(completions(&h), [HookResult::Continue]);
    }

    #[tokio::test]
    async fn a_resume_mints_anew_and_a_repeat_mints_nothing() {
        let h = handler(Mode::Persistent);
        h.handle(event("cold"), soon()).await.unwrap();
        // The same action again: nothing new.
        assert_eq!(
            h.handle(event("cold"), soon()).await.unwrap(),
            Outcome::AlreadyRegistered
        );
        assert_eq!(*h.github.tokens.lock().unwrap(), 1);
        // A resume is a new lifecycle action: a new token, never the old one.
        let Event::Lifecycle(mut resume) = event("resume") else {
            panic!()
        };
        resume.token = "11111111-2222-4333-8444-555555555555".into();
        h.handle(Event::Lifecycle(resume), soon()).await.unwrap();
        let RunnerCredential::RegistrationToken { token, .. } = stored(&h).credential else {
            panic!()
        };
        assert_eq!(token.expose_secret(), "REG2");
        assert_eq!(*h.secrets.puts.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn github_failing_abandons_the_launch() {
        let h = handler(Mode::Persistent);
        *h.github.fail.lock().unwrap() = true;
        let out = h.handle(event("cold"), soon()).await.unwrap();
        assert!(
            matches!(&out, Outcome::Abandoned { reason } if reason.contains("502")),
            "{out:?}"
        );
        assert_eq!(completions(&h), [HookResult::Abandon]);
        assert!(h.secrets.values.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn github_asking_to_wait_keeps_the_launch_alive_for_a_retry() {
        let h = handler(Mode::Persistent);
        *h.github.wait.lock().unwrap() = Some(Duration::from_secs(90));
        let err = h.handle(event("cold"), soon()).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(completions(&h).is_empty(), "not abandoned");
        assert_eq!(
            *h.lifecycle.heartbeats.lock().unwrap(),
            ["i-1234567890abcdef0"]
        );
        // The retry, once the limit has lifted.
        *h.github.wait.lock().unwrap() = None;
        assert_eq!(
            h.handle(event("cold"), soon()).await.unwrap(),
            Outcome::Registered
        );
        assert_eq!(completions(&h), [HookResult::Continue]);
    }

    #[tokio::test]
    async fn aws_failing_until_the_deadline_abandons_the_launch() {
        let h = handler(Mode::Persistent);
        *h.secrets.unreadable.lock().unwrap() = true;
        let deadline = Instant::now() + Duration::from_millis(800);
        let out = h.handle(event("cold"), deadline).await.unwrap();
        assert!(
            matches!(&out, Outcome::Abandoned { reason } if reason.contains("Rate exceeded")),
            "{out:?}"
        );
        assert_eq!(completions(&h), [HookResult::Abandon]);
        assert_eq!(*h.github.tokens.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn ephemeral_mode_stores_a_jit_config_replacing_a_stale_runner() {
        let h = handler(Mode::Ephemeral);
        // A runner of the instance's name left by its last time in service: drained back
        // into the pool, it has lost its labels (only its name ties it to the instance).
        h.github
            .jit_config(
                &JitRequest {
                    name: "i-1234567890abcdef0".into(),
                    runner_group_id: 1,
                    labels: vec![],
                    work_folder: "_work".into(),
                },
                soon(),
            )
            .await
            .unwrap();
        assert_eq!(
            h.handle(event("cold"), soon()).await.unwrap(),
            Outcome::Registered
        );
        assert_eq!(*h.github.deleted.lock().unwrap(), [100]);
        let RunnerCredential::JitConfig { runner_id, .. } = stored(&h).credential else {
            panic!()
        };
        assert_eq!(runner_id, 101);
        let runners = h.github.runners.lock().unwrap();
        let labels: Vec<&str> = runners[0].labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            labels,
            ["warmfleet", "runners", "i-1234567890abcdef0", "linux"]
        );
    }

    #[tokio::test]
    async fn a_stale_runner_the_sweep_deletes_first_is_no_reason_to_abandon() {
        let h = handler(Mode::Ephemeral);
        let stale = JitRequest {
            name: "i-1234567890abcdef0".into(),
            runner_group_id: 1,
            labels: vec![],
            work_folder: "_work".into(),
        };
        h.github.jit_config(&stale, soon()).await.unwrap();
        h.github.deleted_elsewhere.lock().unwrap().push(100);
        assert_eq!(
            h.handle(event("cold"), soon()).await.unwrap(),
            Outcome::Registered
        );
        assert_eq!(completions(&h), [HookResult::Continue]);
    }

    #[tokio::test]
    async fn other_events_are_left_alone() {
        let h = handler(Mode::Persistent);
        for e in ["scale-in", "scheduled"] {
            assert!(matches!(
                h.handle(event(e), soon()).await.unwrap(),
                Outcome::Ignored { .. }
            ));
        }
        assert!(completions(&h).is_empty());
    }
}
