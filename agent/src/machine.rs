//! The agent's state machine: `on(state, event)` says what the agent becomes and what it must
//! do, without doing any of it. The driver (`driver.rs`) performs the actions and feeds their
//! outcomes back as events. docs/development/agent.md draws it.

use crate::config::Mode;
use serde::{Deserialize, Serialize};
use warmfleet_core::imds::Target;
use warmfleet_core::ports::HookResult;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum State {
    /// Asking IMDS where Auto Scaling is taking the instance (at start, after a resume).
    Identifying,
    /// In the warm pool: bootstrap completed, nothing registered; waiting to sleep.
    Warm,
    /// On the way into service: waiting for a credential newer than any used before.
    AwaitingCredential,
    /// Configuring the runner and starting its listener; bootstrap completes when it listens.
    Registering,
    /// Listening for jobs.
    Idle,
    /// Running a job.
    Busy,
    /// Restarting the listener after it asked for it (exit codes 2, 3, 4).
    Restarting,
    /// Draining an idle runner: a moment for a job GitHub assigned just before the labels
    /// came off to show in the listener's output, before the listener is stopped.
    Settling,
    /// Draining while a job runs: the runner takes no new job, the running one finishes.
    Draining,
    /// Draining: stopping the idle listener.
    Stopping,
    /// Draining: removing the runner's registration.
    Removing,
    /// Nothing registered, nothing running; a terminating instance's hook is completed.
    Drained,
    /// Ephemeral runner after its job: the group replaces the instance.
    Replacing,
    /// Stopped by a failure, with the reason; a pending bootstrap was abandoned.
    Failed { reason: String },
}

impl State {
    /// The one-line status systemd and `warmfleet-agent status` show.
    pub fn describe(&self) -> String {
        match self {
            State::Identifying => "identifying the instance".into(),
            State::Warm => "in the warm pool, nothing registered".into(),
            State::AwaitingCredential => "waiting for a new runner credential".into(),
            State::Registering => "registering the runner".into(),
            State::Idle => "listening for jobs".into(),
            State::Busy => "running a job".into(),
            State::Restarting => "restarting the listener".into(),
            State::Settling => "draining: a moment for a job assigned just before".into(),
            State::Draining => "draining: the running job finishes, no new job".into(),
            State::Stopping => "draining: stopping the listener".into(),
            State::Removing => "draining: removing the registration".into(),
            State::Drained => "drained, nothing registered".into(),
            State::Replacing => "job done (ephemeral): instance being replaced".into(),
            State::Failed { reason } => format!("failed: {reason}"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            State::Identifying => "identifying",
            State::Warm => "warm",
            State::AwaitingCredential => "awaiting-credential",
            State::Registering => "registering",
            State::Idle => "idle",
            State::Busy => "busy",
            State::Restarting => "restarting",
            State::Settling => "settling",
            State::Draining => "draining",
            State::Stopping => "stopping",
            State::Removing => "removing",
            State::Drained => "drained",
            State::Replacing => "replacing",
            State::Failed { .. } => "failed",
        }
    }

    /// Whether a listener may be running.
    fn has_listener(&self) -> bool {
        matches!(
            self,
            State::Registering
                | State::Idle
                | State::Busy
                | State::Restarting
                | State::Settling
                | State::Draining
                | State::Stopping
                | State::Replacing
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// IMDS answered where the instance is going.
    Target(Target),
    /// A credential newer than any used before is in hand.
    Credential,
    /// The listener printed that it listens.
    Listening,
    /// The listener took a job.
    JobRunning,
    /// The listener reported its job finished.
    JobFinished,
    /// The runner's job-started hook ran.
    JobStarted,
    /// The runner's job-completed hook ran.
    JobCompleted,
    /// The listener exited with this code (`None`: killed by a signal, or not our child).
    ListenerExited(Option<i32>),
    /// SIGTERM, or `warmfleet-agent drain`.
    Drain,
    /// `timeouts.settle` has passed since an idle runner was asked to drain.
    Settled,
    /// `timeouts.linger` has passed since a persistent runner's last job ended.
    Lingered,
    /// The runner's registration is gone.
    Removed,
    /// The sleep hook's `pre`: the instance is about to hibernate.
    Hibernating,
    /// The sleep hook's `post`, or a clock jump: the instance woke up.
    Resumed,
    /// The action in progress failed for good.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask IMDS for the target lifecycle state (a fresh IMDS session).
    Identify,
    /// Complete the bootstrap launch hook.
    CompleteBootstrap(HookResult),
    /// Wait for a credential newer than any used before.
    AwaitCredential,
    /// Configure the runner unless it is configured, then start its listener.
    Register,
    /// Start the listener again after a pause.
    RestartListener,
    /// Follow a listener that outlived the agent (its output and its end).
    Watch,
    /// Set or clear the instance's scale-in protection. Clearing is idempotent: the driver
    /// calls AWS only when its record says protection is on, and records "on" before it
    /// asks for it, so a crash in between never leaves it on unknowingly.
    Protect(bool),
    /// Send `Settled` once `timeouts.settle` has passed.
    AwaitSettle,
    /// Send `Lingered` once `timeouts.linger` has passed (a later `AwaitLinger` replaces an
    /// earlier one).
    AwaitLinger,
    /// Stop the listener (SIGINT: it ends its session and exits 0).
    StopListener,
    /// Remove the runner's registration (`config.sh remove`).
    RemoveRunner,
    /// Complete the deregistration hook if the instance is terminating.
    CompleteDeregistration,
    /// Terminate the instance without lowering desired capacity (ephemeral mode).
    Replace,
    /// Tell systemd the service is ready.
    Ready,
    /// Take the credential just used out of the instance's secret.
    ForgetCredential,
    /// Mark the instance unhealthy, so that the group replaces it.
    MarkUnhealthy,
}

/// An event that makes no sense in a state. The driver logs it and carries on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{event:?} is not expected while {state}")]
pub struct Unexpected {
    pub state: &'static str,
    pub event: Event,
}

fn failed(reason: String) -> State {
    State::Failed { reason }
}

fn listener_exit(code: Option<i32>) -> String {
    match code {
        Some(1) => "the listener exited with code 1 (terminated: its registration or \
                    credentials were refused)"
            .into(),
        Some(c) => format!("the listener exited with code {c}"),
        None => "the listener ended without an exit code (killed by a signal)".into(),
    }
}

/// The transition function.
pub fn on(state: &State, event: Event, mode: Mode) -> Result<(State, Vec<Action>), Unexpected> {
    use Action as A;
    use Event as E;
    use State as S;
    let next = match (state, event) {
        // Where the instance is going decides everything else.
        (S::Identifying, E::Target(Target::WarmPool)) => {
            (S::Warm, vec![A::CompleteBootstrap(HookResult::Continue)])
        }
        (S::Identifying, E::Target(Target::InService)) => {
            (S::AwaitingCredential, vec![A::AwaitCredential])
        }
        (S::Identifying, E::Target(Target::Terminated)) => (S::Drained, vec![]),

        (S::AwaitingCredential, E::Credential) => (S::Registering, vec![A::Register]),
        // Registered: the credential has done its work and leaves the secret before any
        // job can run and read it.
        (S::Registering, E::Listening) => (
            S::Idle,
            vec![
                A::CompleteBootstrap(HookResult::Continue),
                A::Ready,
                A::ForgetCredential,
            ],
        ),
        (S::Restarting, E::Listening) => (S::Idle, vec![]),

        // Jobs: the listener's output says when one runs; the hooks bracket it exactly,
        // and protection follows them.
        (S::Idle, E::JobRunning) => (S::Busy, vec![]),
        (S::Idle, E::JobStarted) => (S::Busy, vec![A::Protect(true)]),
        (s @ (S::Busy | S::Draining), E::JobRunning) => (s.clone(), vec![]),
        (s @ (S::Busy | S::Draining), E::JobStarted) => (s.clone(), vec![A::Protect(true)]),
        // A persistent runner keeps its protection for `timeouts.linger` after a job: a job
        // queued meanwhile reaches it within seconds, and a scale-in decided on an older
        // count (Auto Scaling picks unprotected instances) cannot take it in between.
        (s @ (S::Busy | S::Idle), E::JobCompleted) if mode == Mode::Persistent => {
            (s.clone(), vec![A::AwaitLinger])
        }
        // The listener's word that the job finished clears protection too: the
        // job-completed hook is lost when the agent was down while it ran, and an instance
        // left protected is never scaled in.
        (s, E::JobCompleted) if s.has_listener() => (s.clone(), vec![A::Protect(false)]),
        (S::Busy, E::JobFinished) => match mode {
            Mode::Persistent => (S::Idle, vec![A::AwaitLinger]),
            Mode::Ephemeral => (S::Replacing, vec![A::Protect(false), A::Replace]),
        },
        (S::Idle, E::Lingered) => (S::Idle, vec![A::Protect(false)]),
        (s, E::Lingered) => (s.clone(), vec![]),
        (S::Draining, E::JobFinished) => (S::Stopping, vec![A::Protect(false), A::StopListener]),
        (S::Idle, E::JobFinished) => (S::Idle, vec![]),

        // Draining: no new job from the moment it is acknowledged.
        (S::Busy, E::Drain) => (S::Draining, vec![]),
        // An idle runner: its labels are gone (the Lambda takes them first), but a job
        // GitHub assigned just before may not show yet; it would be cut off. A lingering
        // one's protection goes now: a drained instance must not stay protected.
        (S::Idle, E::Drain) => (S::Settling, vec![A::Protect(false), A::AwaitSettle]),
        (S::Settling, E::JobRunning) => (S::Draining, vec![]),
        (S::Settling, E::JobStarted) => (S::Draining, vec![A::Protect(true)]),
        (S::Settling, E::Settled) => (S::Stopping, vec![A::StopListener]),
        (S::Settling, E::ListenerExited(_)) => (S::Removing, vec![A::RemoveRunner]),
        (S::Settling, E::JobFinished) => (S::Settling, vec![]),
        (s, E::Settled) => (s.clone(), vec![]),
        (S::Registering | S::Restarting, E::Drain) => (S::Stopping, vec![A::StopListener]),
        (s @ (S::Settling | S::Draining | S::Stopping | S::Removing), E::Drain) => {
            (s.clone(), vec![])
        }
        (S::Drained, E::Drain) => (S::Drained, vec![A::CompleteDeregistration]),
        (_, E::Drain) => (S::Removing, vec![A::StopListener, A::RemoveRunner]),
        (S::Stopping, E::ListenerExited(_)) => (S::Removing, vec![A::RemoveRunner]),
        (S::Draining, E::ListenerExited(_)) => {
            (S::Removing, vec![A::Protect(false), A::RemoveRunner])
        }
        (S::Removing, E::Removed) => (S::Drained, vec![A::CompleteDeregistration]),

        // The listener's exit codes, as the real runner defines them.
        (S::Registering, E::ListenerExited(Some(2..=4))) => {
            (S::Registering, vec![A::RestartListener])
        }
        (S::Idle | S::Restarting, E::ListenerExited(Some(2..=4))) => {
            (S::Restarting, vec![A::RestartListener])
        }
        (S::Busy, E::ListenerExited(Some(2..=4))) => {
            (S::Restarting, vec![A::Protect(false), A::RestartListener])
        }
        (S::Busy | S::Idle, E::ListenerExited(Some(0))) if mode == Mode::Ephemeral => {
            (S::Replacing, vec![A::Protect(false), A::Replace])
        }
        (S::Replacing, E::ListenerExited(_)) => (S::Replacing, vec![]),
        // Auto Scaling would not replace it (throttled past the retries): marked unhealthy,
        // the group replaces it all the same, rather than keep an instance with no runner.
        (S::Replacing, E::Failed(reason)) => (failed(reason), vec![A::MarkUnhealthy]),
        (S::Registering, E::ListenerExited(code)) => (
            failed(listener_exit(code)),
            vec![A::CompleteBootstrap(HookResult::Abandon)],
        ),
        (S::Idle | S::Busy | S::Restarting, E::ListenerExited(code)) => (
            failed(listener_exit(code)),
            vec![A::Protect(false), A::MarkUnhealthy],
        ),

        // Failures: fail closed. A pending bootstrap is abandoned, so the group replaces
        // the instance.
        (S::AwaitingCredential | S::Registering, E::Failed(reason)) => (
            failed(reason),
            vec![A::StopListener, A::CompleteBootstrap(HookResult::Abandon)],
        ),
        // Where it is going is unknown: a launch hook that waits for this instance is
        // abandoned (the group replaces it) rather than left to its timeout.
        (S::Identifying, E::Failed(reason)) => (
            failed(reason),
            vec![A::CompleteBootstrap(HookResult::Abandon)],
        ),
        (S::Warm | S::Removing, E::Failed(reason)) => (failed(reason), vec![]),
        (S::Idle | S::Busy | S::Restarting | S::Settling, E::Failed(reason)) => {
            (failed(reason), vec![A::StopListener, A::MarkUnhealthy])
        }

        // Sleep and wake: only an instance with nothing registered sleeps.
        (s, E::Hibernating) => (s.clone(), vec![]),
        (S::Warm | S::Drained | S::Failed { .. }, E::Resumed) => {
            (S::Identifying, vec![A::Identify])
        }
        (s, E::Resumed) => (s.clone(), vec![]),

        (state, event) => {
            return Err(Unexpected {
                state: state.name(),
                event,
            })
        }
    };
    Ok(next)
}

/// Where to pick up after a restart (a crash, or systemd's `Restart=on-failure`): the state
/// the agent was in when it stopped, whether its listener outlived it, and what to do
/// again. Nothing is registered twice (`Register` keeps an existing configuration,
/// `AwaitCredential` wants a credential newer than the last used) and no running job is
/// touched (a live listener is only watched again).
pub fn recover(state: &State, listener_alive: bool) -> (State, Vec<Action>) {
    use Action as A;
    use State as S;
    match (state, listener_alive) {
        (S::Identifying | S::Warm | S::AwaitingCredential, _) => {
            (S::Identifying, vec![A::Identify])
        }
        // A listener that listens: the service is ready again (systemd waits for it). An
        // idle runner runs no job, so no protection is left on it.
        (S::Idle, true) => (S::Idle, vec![A::Protect(false), A::Watch, A::Ready]),
        (S::Busy, true) => (S::Busy, vec![A::Watch, A::Ready]),
        (S::Restarting, true) => (S::Idle, vec![A::Protect(false), A::Watch, A::Ready]),
        // The drain's caller asks again (the `drain` command retries): settle anew.
        (S::Settling, true) => (S::Idle, vec![A::Protect(false), A::Watch, A::Ready]),
        (S::Settling, false) => (S::Removing, vec![A::RemoveRunner]),
        (S::Registering | S::Draining, true) => (state.clone(), vec![A::Watch]),
        // No listener: whatever job ran is over.
        (S::Registering | S::Idle | S::Busy | S::Restarting, false) => {
            (S::Registering, vec![A::Protect(false), A::Register])
        }
        (S::Draining, false) => (S::Removing, vec![A::Protect(false), A::RemoveRunner]),
        (S::Stopping, true) => (S::Stopping, vec![A::Watch, A::StopListener]),
        (S::Stopping | S::Removing, false) => (S::Removing, vec![A::RemoveRunner]),
        (S::Removing, true) => (S::Stopping, vec![A::Watch, A::StopListener]),
        (S::Drained | S::Replacing | S::Failed { .. }, _) => (state.clone(), vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use Event as E;
    use State as S;

    /// Runs events from a state; returns the end state and every action, in order.
    fn run(mut s: State, events: Vec<Event>, mode: Mode) -> (State, Vec<Action>) {
        let mut all = vec![];
        for e in events {
            let (next, actions) = on(&s, e, mode).unwrap();
            s = next;
            all.extend(actions);
        }
        (s, all)
    }

    #[test]
    fn a_cold_launch_completes_bootstrap_only_once_the_listener_listens() {
        let (s, actions) = run(
            S::Identifying,
            vec![E::Target(Target::InService), E::Credential],
            Mode::Persistent,
        );
        assert_eq!(s, S::Registering);
        assert_eq!(actions, [A::AwaitCredential, A::Register]);
        let (s, actions) = on(&s, E::Listening, Mode::Persistent).unwrap();
        assert_eq!(s, S::Idle);
        assert_eq!(
            actions,
            [
                A::CompleteBootstrap(HookResult::Continue),
                A::Ready,
                A::ForgetCredential
            ]
        );
    }

    #[test]
    fn a_warm_pool_launch_registers_nothing_and_a_resume_starts_over() {
        let (s, actions) = run(
            S::Identifying,
            vec![E::Target(Target::WarmPool), E::Hibernating, E::Resumed],
            Mode::Persistent,
        );
        assert_eq!(s, S::Identifying);
        assert_eq!(
            actions,
            [A::CompleteBootstrap(HookResult::Continue), A::Identify]
        );
    }

    #[test]
    fn protection_follows_the_job_hooks_and_a_persistent_runner_lingers_protected() {
        let (s, actions) = run(
            S::Idle,
            vec![
                E::JobRunning,
                E::JobStarted,
                E::JobCompleted,
                E::JobFinished,
            ],
            Mode::Persistent,
        );
        assert_eq!(s, S::Idle);
        // Kept for `timeouts.linger` after the job (each end restarts the wait), then
        // cleared while idle.
        assert_eq!(actions, [A::Protect(true), A::AwaitLinger, A::AwaitLinger]);
        assert_eq!(
            on(&s, E::Lingered, Mode::Persistent).unwrap(),
            (S::Idle, vec![A::Protect(false)])
        );
        // A queued job reached it meanwhile: still protected, the linger's end changes
        // nothing.
        let (s, actions) = run(
            S::Idle,
            vec![E::JobRunning, E::JobStarted, E::Lingered],
            Mode::Persistent,
        );
        assert_eq!((s, actions), (S::Busy, vec![A::Protect(true)]));
        // A drain while lingering clears it at once: a drained instance stays in service.
        assert_eq!(
            on(&S::Idle, E::Drain, Mode::Persistent).unwrap(),
            (S::Settling, vec![A::Protect(false), A::AwaitSettle])
        );
        // Ephemeral runners end with their job: no linger.
        let (_, actions) = run(
            S::Idle,
            vec![E::JobStarted, E::JobCompleted, E::JobFinished],
            Mode::Ephemeral,
        );
        assert_eq!(
            actions,
            [
                A::Protect(true),
                A::Protect(false),
                A::Protect(false),
                A::Replace
            ]
        );
    }

    #[test]
    fn an_agent_down_through_the_job_completed_hook_still_clears_protection() {
        let (s, actions) = recover(&S::Busy, true);
        assert_eq!((&s, &actions[..]), (&S::Busy, &[A::Watch, A::Ready][..]));
        // The hook ran while the agent was down; only the listener's log tells (after
        // the linger).
        let (s, actions) = on(&s, E::JobFinished, Mode::Persistent).unwrap();
        assert_eq!((&s, actions), (&S::Idle, vec![A::AwaitLinger]));
        let (s, actions) = on(&s, E::Lingered, Mode::Persistent).unwrap();
        assert_eq!((s, actions), (S::Idle, vec![A::Protect(false)]));
        let (s, actions) = on(&S::Draining, E::JobFinished, Mode::Persistent).unwrap();
        assert_eq!(
            (s, actions),
            (S::Stopping, vec![A::Protect(false), A::StopListener])
        );
    }

    #[test]
    fn a_drain_lets_the_running_job_finish_then_stops_and_removes() {
        let (s, actions) = run(
            S::Busy,
            vec![
                E::Drain,
                E::JobCompleted,
                E::JobFinished,
                E::ListenerExited(Some(0)),
                E::Removed,
            ],
            Mode::Persistent,
        );
        assert_eq!(s, S::Drained);
        assert_eq!(
            actions,
            [
                A::Protect(false),
                A::Protect(false),
                A::StopListener,
                A::RemoveRunner,
                A::CompleteDeregistration
            ]
        );
    }

    #[test]
    fn an_idle_drain_settles_then_stops_and_a_second_drain_is_answered_drained() {
        let (s, actions) = run(
            S::Idle,
            vec![
                E::Drain,
                E::Drain,
                E::Settled,
                E::ListenerExited(Some(0)),
                E::Removed,
            ],
            Mode::Persistent,
        );
        assert_eq!(s, S::Drained);
        assert_eq!(
            actions,
            [
                A::Protect(false),
                A::AwaitSettle,
                A::StopListener,
                A::RemoveRunner,
                A::CompleteDeregistration
            ]
        );
        let (s, actions) = on(&s, E::Drain, Mode::Persistent).unwrap();
        assert_eq!((s, actions), (S::Drained, vec![A::CompleteDeregistration]));
    }

    #[test]
    fn a_job_that_shows_while_an_idle_drain_settles_finishes_before_the_listener_stops() {
        for first in [E::JobRunning, E::JobStarted] {
            let (s, actions) = run(
                S::Idle,
                vec![
                    E::Drain,
                    first.clone(),
                    E::Settled,
                    E::JobStarted,
                    E::JobCompleted,
                    E::JobFinished,
                ],
                Mode::Persistent,
            );
            assert_eq!(s, S::Stopping, "{first:?}");
            // No StopListener before the job finished; the settle's end changes nothing.
            assert_eq!(actions[..2], [A::Protect(false), A::AwaitSettle]);
            assert_eq!(actions.last(), Some(&A::StopListener));
            assert_eq!(actions.iter().filter(|a| **a == A::StopListener).count(), 1);
        }
        // The listener gone while settling: on to removing.
        let (s, a) = on(&S::Settling, E::ListenerExited(Some(0)), Mode::Persistent).unwrap();
        assert_eq!((s, a), (S::Removing, vec![A::RemoveRunner]));
    }

    #[test]
    fn listener_exit_codes_follow_the_runner_contract() {
        for code in [2, 3, 4] {
            let (s, a) = on(&S::Idle, E::ListenerExited(Some(code)), Mode::Persistent).unwrap();
            assert_eq!((s, a), (S::Restarting, vec![A::RestartListener]));
        }
        let (s, a) = on(&S::Idle, E::ListenerExited(Some(1)), Mode::Persistent).unwrap();
        assert!(matches!(&s, S::Failed { reason } if reason.contains("code 1")));
        assert_eq!(a, [A::Protect(false), A::MarkUnhealthy]);
        let (s, a) = on(
            &S::Registering,
            E::ListenerExited(Some(1)),
            Mode::Persistent,
        )
        .unwrap();
        assert!(matches!(s, S::Failed { .. }));
        assert_eq!(a, [A::CompleteBootstrap(HookResult::Abandon)]);
    }

    #[test]
    fn imds_failing_for_good_after_a_resume_abandons_the_bootstrap() {
        let (s, actions) = run(
            S::Warm,
            vec![E::Resumed, E::Failed("IMDS cannot tell".into())],
            Mode::Persistent,
        );
        assert!(matches!(s, S::Failed { .. }));
        assert_eq!(
            actions,
            [A::Identify, A::CompleteBootstrap(HookResult::Abandon)]
        );
    }

    #[test]
    fn failures_before_listening_abandon_the_bootstrap() {
        let (s, a) = on(
            &S::AwaitingCredential,
            E::Failed("no credential within 5m".into()),
            Mode::Persistent,
        )
        .unwrap();
        assert_eq!(
            s,
            S::Failed {
                reason: "no credential within 5m".into()
            }
        );
        assert_eq!(
            a,
            [A::StopListener, A::CompleteBootstrap(HookResult::Abandon)]
        );
    }

    #[test]
    fn an_ephemeral_runner_has_its_instance_replaced_after_its_job() {
        let (s, actions) = run(
            S::Idle,
            vec![
                E::JobStarted,
                E::JobCompleted,
                E::JobFinished,
                E::ListenerExited(Some(0)),
                E::Drain,
                E::Removed,
            ],
            Mode::Ephemeral,
        );
        assert_eq!(s, S::Drained);
        assert_eq!(
            actions,
            [
                A::Protect(true),
                A::Protect(false),
                A::Protect(false),
                A::Replace,
                A::StopListener,
                A::RemoveRunner,
                A::CompleteDeregistration
            ]
        );
    }

    #[test]
    fn an_ephemeral_instance_auto_scaling_would_not_replace_is_marked_unhealthy() {
        let (s, actions) = on(
            &S::Replacing,
            E::Failed("TerminateInstanceInAutoScalingGroup: Rate exceeded".into()),
            Mode::Ephemeral,
        )
        .unwrap();
        assert!(matches!(s, S::Failed { .. }));
        assert_eq!(actions, [A::MarkUnhealthy]);
    }

    #[test]
    fn unexpected_events_are_errors_not_panics() {
        let err = on(&S::Warm, E::Listening, Mode::Persistent).unwrap_err();
        assert_eq!(err.state, "warm");
        assert!(on(&S::Drained, E::JobStarted, Mode::Persistent).is_err());
    }

    #[test]
    fn a_restart_never_registers_twice_nor_touches_a_running_job() {
        assert_eq!(recover(&S::Busy, true), (S::Busy, vec![A::Watch, A::Ready]));
        assert_eq!(
            recover(&S::Idle, true),
            (S::Idle, vec![A::Protect(false), A::Watch, A::Ready])
        );
        assert_eq!(
            recover(&S::Restarting, true),
            (S::Idle, vec![A::Protect(false), A::Watch, A::Ready])
        );
        assert_eq!(
            recover(&S::Registering, true),
            (S::Registering, vec![A::Watch])
        );
        assert_eq!(recover(&S::Draining, true), (S::Draining, vec![A::Watch]));
        assert_eq!(
            recover(&S::Busy, false),
            (S::Registering, vec![A::Protect(false), A::Register])
        );
        assert_eq!(
            recover(&S::Draining, false),
            (S::Removing, vec![A::Protect(false), A::RemoveRunner])
        );
        assert_eq!(
            recover(&S::AwaitingCredential, false),
            (S::Identifying, vec![A::Identify])
        );
        assert_eq!(recover(&S::Drained, false), (S::Drained, vec![]));
    }
}
