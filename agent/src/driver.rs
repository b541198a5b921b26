//! The driver: performs the state machine's actions and turns what happens (IMDS answers,
//! the secret, the listener's output and exit, job hooks, drains, sleep and wake, SIGTERM)
//! into its events. One task owns the state; slow actions run in tasks of their own and
//! report back through a channel.

use crate::config::Settings;
use crate::control::{self, JobHook, Reply, Request, SleepPhase};
use crate::imds_guard;
use crate::listener_log::{read_new_lines, LogChanges};
use crate::machine::{self, Action, Event, State};
use crate::record::{self, Record};
use crate::runner::{self, Line, RunAs, Runner};
use chrono::Utc;
use secrecy::SecretString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use warmfleet_core::aws::{AutoScaling, CloudWatch, SecretsManager};
use warmfleet_core::imds::{Identity, Imds, Target};
use warmfleet_core::instance_secret::{InstanceSecret, RunnerCredential};
use warmfleet_core::naming;
use warmfleet_core::patience;
use warmfleet_core::ports::{Completion, HookResult, Lifecycle, Metrics, PortError, SecretStore};

/// How often the agent looks for a wake-up (IMDS, the clocks).
const POLL: Duration = Duration::from_secs(1);
/// How often it reads its secret while waiting for a credential.
const CREDENTIAL_POLL: Duration = Duration::from_millis(250);
/// The pause before a listener that asked for a restart is started again.
const RELAUNCH_DELAY: Duration = Duration::from_secs(2);

/// A listener to follow: one the agent started, or one that outlived an earlier agent.
enum Follow {
    Child(tokio::process::Child),
    Adopted { pid: u32, started: u64 },
}

/// What the driver's tasks report.
enum Msg {
    Event(Event),
    Credential(InstanceSecret),
    /// Time to start the listener again.
    Relaunch,
    ListenDeadline(u32),
    Request(Request, oneshot::Sender<Reply>),
}

/// Where the time from a wake-up (or the agent's start) to `bootstrap` went: the wait for
/// the Lambda's credential and the runner's own start are not the agent's overhead.
#[derive(Default)]
struct Timing {
    since: Option<tokio::time::Instant>,
    resumed: bool,
    credential_asked: Option<tokio::time::Instant>,
    credential_wait: Duration,
    register_started: Option<tokio::time::Instant>,
    runner_start: Duration,
}

impl Timing {
    fn begin(resumed: bool) -> Timing {
        Timing {
            since: Some(tokio::time::Instant::now()),
            resumed,
            ..Timing::default()
        }
    }

    /// Logs the split once `bootstrap` is completed with CONTINUE.
    fn report(&mut self, instance_id: &str) {
        let Some(since) = self.since.take() else {
            return;
        };
        let total = since.elapsed();
        let agent = total
            .saturating_sub(self.credential_wait)
            .saturating_sub(self.runner_start);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        info!(
            instance_id,
            resumed = self.resumed,
            total_ms = ms(total),
            credential_wait_ms = ms(self.credential_wait),
            runner_start_ms = ms(self.runner_start),
            agent_ms = ms(agent),
            "bootstrap timings"
        );
    }
}

/// Why the service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: drained (or failed), nothing left running.
    Drained,
    /// SIGUSR2: left the listener running for the next agent (exit with
    /// [`HANDOVER_EXIT_CODE`], which the unit restarts on).
    Handover,
}

/// The exit code of a handover; the unit's `RestartForceExitStatus`.
pub const HANDOVER_EXIT_CODE: u8 = 75;

pub struct Driver {
    settings: Settings,
    record: Record,
    imds: Imds,
    identity: Option<Identity>,
    clients: Option<(AutoScaling, SecretsManager)>,
    metrics: Option<CloudWatch>,
    runner: Runner,
    credential: Option<InstanceSecret>,
    log_offset: Arc<AtomicU64>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    drain_waiters: Vec<oneshot::Sender<Reply>>,
    stopping: bool,
    /// CLOCK_BOOTTIME − CLOCK_MONOTONIC at the last tick: it grows while the machine sleeps.
    slept: Option<Duration>,
    /// When the drain's terminate hook was last heartbeated (or the drain began).
    heartbeat_at: Option<tokio::time::Instant>,
    timing: Timing,
}

impl Driver {
    pub fn new(settings: Settings) -> Result<Driver, String> {
        std::fs::create_dir_all(&settings.state_dir)
            .map_err(|e| format!("{}: {e}", settings.state_dir.display()))?;
        // Traversable by the runner user (its job hooks reach the socket in it) under the
        // agent's umask 077; the files in it have modes of their own.
        set_mode(&settings.state_dir, 0o755)?;
        let record = record::load(&settings.state_dir)?.unwrap_or_default();
        let run_as = RunAs::lookup(&settings.runner_user)?;
        let socket = control::socket(&settings.state_dir);
        let exe = std::env::current_exe().map_err(|e| format!("the agent's own path: {e}"))?;
        let runner = Runner {
            dir: settings.runner_dir.clone(),
            run_as,
            env: vec![
                (
                    "ACTIONS_RUNNER_HOOK_JOB_STARTED".into(),
                    settings.job_started_hook.display().to_string(),
                ),
                (
                    "ACTIONS_RUNNER_HOOK_JOB_COMPLETED".into(),
                    settings.job_completed_hook.display().to_string(),
                ),
                (control::SOCKET_ENV.into(), socket.display().to_string()),
                ("WARMFLEET_AGENT".into(), exe.display().to_string()),
            ],
        };
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Driver {
            imds: Imds::new(settings.timeouts.call),
            log_offset: Arc::new(AtomicU64::new(record.listener_log_offset)),
            settings,
            record,
            identity: None,
            clients: None,
            metrics: None,
            runner,
            credential: None,
            tx,
            rx,
            drain_waiters: vec![],
            stopping: false,
            slept: None,
            heartbeat_at: None,
            timing: Timing::begin(false),
        })
    }

    /// The service: runs until a SIGTERM drain has finished, or until SIGUSR2 asks it to
    /// hand over to a new agent (a package upgrade: nothing is drained, the running
    /// listener stays and the next agent adopts it). An error: it could not start (not even
    /// learn who it is); systemd restarts it.
    pub async fn run(mut self) -> Result<Stop, String> {
        // Before any listener can start (a first one, or one adopted after a restart).
        self.guard_imds()?;
        let socket = control::socket(&self.settings.state_dir);
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)
            .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
        let peers = control::Peers {
            agent: nix::unistd::geteuid().as_raw(),
            runner: self.runner.run_as.as_ref().map(|r| r.uid),
        };
        // Root's and the runner group's; a root agent's only when it runs jobs as itself.
        match &self.runner.run_as {
            Some(r) => {
                nix::unistd::chown(&socket, None, Some(nix::unistd::Gid::from_raw(r.gid)))
                    .map_err(|e| format!("{}: {e}", socket.display()))?;
                set_mode(&socket, 0o660)?;
            }
            None => set_mode(&socket, 0o600)?,
        }
        let tx = self.tx.clone();
        tokio::spawn(control::serve(
            listener,
            peers,
            control::READ_TIMEOUT,
            move |request, reply| tx.send(Msg::Request(request, reply)).is_ok(),
        ));
        let signal = |kind| tokio::signal::unix::signal(kind).map_err(|e| e.to_string());
        let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut sigusr2 = signal(tokio::signal::unix::SignalKind::user_defined2())?;
        let mut tick = tokio::time::interval(POLL);
        // After a hibernation (or any freeze) one tick, not a burst of the missed ones each
        // asking IMDS while it may not answer yet.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut watchdog = watchdog_interval();

        // Who this instance is, before anything else (a restart in service needs it as much
        // as a first start).
        let identity = self
            .imds
            .identity()
            .await
            .map_err(|e| format!("IMDS cannot tell who this instance is: {e}"))?;
        let config = warmfleet_core::aws::load_config_in(&identity.region).await;
        self.clients = Some((AutoScaling::new(&config), SecretsManager::new(&config)));
        self.metrics = Some(CloudWatch::new(&config));
        self.record.instance_id = Some(identity.instance_id.clone());
        self.record.group = Some(identity.group.clone());
        self.identity = Some(identity);
        let alive = self.listener_running();
        let (state, actions) = machine::recover(&self.record.state, alive);
        self.record.agent_pid = Some(std::process::id());
        info!(state = state.name(), "starting");
        self.enter(state);
        self.perform_all(actions).await;
        loop {
            tokio::select! {
                Some(msg) = self.rx.recv() => self.message(msg).await,
                _ = sigterm.recv() => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                    self.stopping = true;
                    // Drained or failed already (the instance is going away): just stop.
                    if !matches!(self.record.state, State::Drained | State::Failed { .. }) {
                        info!("SIGTERM: draining");
                        self.event(Event::Drain).await;
                    }
                }
                _ = sigusr2.recv() => {
                    info!(state = self.record.state.name(), "SIGUSR2: handing over to a new agent, nothing drained");
                    self.save();
                    return Ok(Stop::Handover);
                }
                _ = tick.tick() => self.tick().await,
                _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            }
            if self.stopping && matches!(self.record.state, State::Drained | State::Failed { .. }) {
                return Ok(Stop::Drained);
            }
        }
    }

    async fn message(&mut self, msg: Msg) {
        match msg {
            Msg::Event(e) => self.event(e).await,
            Msg::Credential(secret) => {
                if let Some(asked) = self.timing.credential_asked.take() {
                    self.timing.credential_wait = asked.elapsed();
                }
                self.credential = Some(secret);
                self.event(Event::Credential).await;
            }
            Msg::Relaunch => {
                if matches!(self.record.state, State::Registering | State::Restarting) {
                    let jit = self.jit_config();
                    if let Err(reason) = self.start_listener(jit.as_ref()) {
                        self.event(Event::Failed(reason)).await;
                    }
                }
            }
            Msg::ListenDeadline(pid) => {
                if self.record.state == State::Registering && self.record.listener_pid == Some(pid)
                {
                    let reason = format!(
                        "the listener did not listen within {}",
                        humantime::format_duration(self.settings.timeouts.listen)
                    );
                    self.event(Event::Failed(reason)).await;
                }
            }
            Msg::Request(request, reply) => self.request(request, reply).await,
        }
    }

    async fn request(&mut self, request: Request, reply: oneshot::Sender<Reply>) {
        let answer = match request {
            Request::Hook { hook } => {
                let event = match hook {
                    JobHook::JobStarted => Event::JobStarted,
                    JobHook::JobCompleted => Event::JobCompleted,
                };
                self.event(event).await;
                // A job hook never fails the job: protection is a second line of defence.
                Reply::ok(self.record.state.describe())
            }
            Request::Sleep { phase } => {
                let phase_name = match phase {
                    SleepPhase::Pre => "pre",
                    SleepPhase::Post => "post",
                };
                info!(
                    phase = phase_name,
                    state = self.record.state.name(),
                    "sleep hook"
                );
                self.event(match phase {
                    SleepPhase::Pre => Event::Hibernating,
                    SleepPhase::Post => Event::Resumed,
                })
                .await;
                Reply::ok(self.record.state.describe())
            }
            Request::Drain => {
                info!("drain requested");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                self.event(Event::Drain).await;
                self.drain_waiters.push(reply);
                self.answer_drains();
                return;
            }
            Request::Status => Reply {
                status: Some(self.record.clone()),
                ..Reply::ok(self.record.state.describe())
            },
        };
        let _ = reply.send(answer);
    }

    fn answer_drains(&mut self) {
        let answer = match &self.record.state {
            State::Drained => Reply::ok("drained: the runner is removed"),
            State::Failed { reason } => Reply::err(format!("the drain failed: {reason}")),
            _ => return,
        };
        for w in self.drain_waiters.drain(..) {
            let _ = w.send(answer.clone());
        }
    }

    async fn event(&mut self, event: Event) {
        match (&self.record.state, &event) {
            (State::Warm | State::Drained | State::Failed { .. }, Event::Resumed) => {
                self.timing = Timing::begin(true);
            }
            (State::Registering, Event::Listening) => {
                if let Some(started) = self.timing.register_started.take() {
                    self.timing.runner_start = started.elapsed();
                }
            }
            _ => {}
        }
        let (next, actions) = match machine::on(&self.record.state, event, self.settings.mode) {
            Ok(t) => t,
            Err(e) => {
                warn!(state = self.record.state.name(), "{e}; ignored");
                return;
            }
        };
        self.enter(next);
        self.perform_all(actions).await;
        self.answer_drains();
    }

    fn enter(&mut self, state: State) {
        if state != self.record.state {
            match &state {
                State::Failed { reason } => {
                    tracing::error!(
                        instance_id = self.instance(),
                        state = state.name(),
                        %reason,
                        "failed"
                    );
                    self.record.last_error = Some(reason.clone());
                }
                _ => info!(
                    instance_id = self.instance(),
                    state = state.name(),
                    "{}",
                    state.describe()
                ),
            }
        }
        self.record.job_in_progress = matches!(state, State::Busy | State::Draining);
        self.record.state = state;
        let _ = sd_notify::notify(
            false,
            &[sd_notify::NotifyState::Status(
                &self.record.state.describe(),
            )],
        );
        self.save();
    }

    fn save(&mut self) {
        self.record.listener_log_offset = self.log_offset.load(Ordering::Relaxed);
        self.record.updated_at = Utc::now();
        if let Err(e) = record::save(&self.settings.state_dir, &self.record) {
            warn!("cannot save the state: {e}");
        }
    }

    fn instance(&self) -> &str {
        self.identity
            .as_ref()
            .map_or("unknown", |i| i.instance_id.as_str())
    }

    async fn perform_all(&mut self, actions: Vec<Action>) {
        for action in actions {
            if let Err(reason) = self.perform(action.clone()).await {
                warn!(?action, %reason, "action failed");
                self.record.last_error = Some(reason.clone());
                self.save();
                // Protection and clearing the used credential are best effort; anything
                // else fails the state.
                if !matches!(action, Action::Protect(_) | Action::ForgetCredential) {
                    let _ = self.tx.send(Msg::Event(Event::Failed(reason)));
                }
            }
        }
    }

    fn send_later(&self, f: impl std::future::Future<Output = Msg> + Send + 'static) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(f.await);
        });
    }

    fn aws(&self) -> Result<(&Identity, &AutoScaling, &SecretsManager), String> {
        match (&self.identity, &self.clients) {
            (Some(i), Some((a, s))) => Ok((i, a, s)),
            _ => Err("the instance's identity is not known yet".into()),
        }
    }

    fn secret_id(&self, identity: &Identity) -> String {
        naming::prefixed_instance_secret_id(
            &self.settings.secret_prefix,
            &identity.group,
            &identity.instance_id,
        )
    }

    async fn perform(&mut self, action: Action) -> Result<(), String> {
        let call = self.settings.timeouts.call;
        match action {
            Action::Identify => {
                // A fresh IMDS session: the old token may have expired while asleep. Who the
                // instance is was learnt at start; only where it is going has changed.
                // Right after a resume IMDS may not answer yet: asked again with backoff
                // (about 30 s in all) before the agent gives up.
                self.imds = Imds::new(call);
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
                        Err(e) => Msg::Event(Event::Failed(format!(
                            "IMDS cannot tell where this instance is going: {e}"
                        ))),
                    }
                });
            }
            Action::AwaitCredential => {
                self.timing.credential_asked = Some(tokio::time::Instant::now());
                let (identity, _, secrets) = self.aws()?;
                let id = self.secret_id(identity);
                let secrets = secrets.clone();
                let newer_than = self.record.credential_used;
                let limit = self.settings.timeouts.credential;
                self.send_later(await_credential(secrets, id, newer_than, limit, call));
            }
            Action::Register => {
                self.timing.register_started = Some(tokio::time::Instant::now());
                self.register().await?
            }
            Action::Watch => match (self.record.listener_pid, self.record.listener_started) {
                (Some(pid), Some(started)) => {
                    info!(pid, "the listener outlived the agent: following it again");
                    self.watch(Follow::Adopted { pid, started });
                }
                _ => {
                    let _ = self.tx.send(Msg::Event(Event::ListenerExited(None)));
                }
            },
            Action::RestartListener => self.send_later(async {
                tokio::time::sleep(RELAUNCH_DELAY).await;
                Msg::Relaunch
            }),
            Action::Protect(on) => {
                if !on && !self.record.protected {
                    return Ok(());
                }
                if on {
                    // Recorded first: should the agent die before the answer, its successor
                    // still knows to clear it.
                    self.record.protected = true;
                    self.save();
                }
                let (identity, asg, _) = self.aws()?;
                let protect = asg.set_protection(&identity.group, &identity.instance_id, on);
                bounded(call, "SetInstanceProtection", protect).await?;
                info!(instance_id = %identity.instance_id, protected = on, "scale-in protection");
                self.record.protected = on;
                self.save();
            }
            Action::StopListener => match self.record.listener_pid {
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
            },
            Action::RemoveRunner => {
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
            Action::CompleteBootstrap(result) => {
                let hook = self.settings.bootstrap_hook.clone();
                // The agent may be up before its launch hooks fire (the instance is still
                // Pending, not Pending:Wait): then wait for them.
                let until = tokio::time::Instant::now() + self.settings.timeouts.credential;
                while self.complete(&hook, result).await? == Completion::NotPending
                    && tokio::time::Instant::now() < until
                {
                    if !self.hooks_not_yet_fired().await {
                        // They fired, perhaps just after the attempt above found nothing
                        // to complete: once more, or the hook would wait out its timeout
                        // and the launch be abandoned.
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
            }
            Action::CompleteDeregistration => {
                let target = self.imds.target().await.map_err(|e| e.to_string())?;
                self.record.back_to_pool = target == Target::WarmPool;
                if target != Target::InService {
                    let hook = self.settings.deregistration_hook.clone();
                    self.complete(&hook, HookResult::Continue).await?;
                }
            }
            Action::Replace => {
                let (identity, asg, _) = self.aws()?;
                let id = &identity.instance_id;
                insist(call, "TerminateInstanceInAutoScalingGroup", || {
                    asg.replace(id)
                })
                .await?;
                info!(instance_id = %identity.instance_id, "ephemeral runner done: instance replaced");
            }
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
            Action::ForgetCredential => self.forget_credential().await?,
            Action::MarkUnhealthy => {
                let (identity, asg, _) = self.aws()?;
                let id = &identity.instance_id;
                insist(call, "SetInstanceHealth", || asg.set_unhealthy(id)).await?;
                warn!(instance_id = %identity.instance_id, "instance marked unhealthy");
                self.count_failure().await;
            }
        }
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

    async fn complete(&mut self, hook: &str, result: HookResult) -> Result<Completion, String> {
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
    fn guard_imds(&self) -> Result<(), String> {
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
        imds_guard::apply(&imds_guard::ruleset(run_as.uid, &targets)).map_err(|e| {
            format!("closing IMDS to runner.user: {e} (runner.block_imds = false leaves it open)")
        })?;
        info!(
            uid = run_as.uid,
            table = imds_guard::TABLE,
            "IMDS closed to the runner user"
        );
        Ok(())
    }

    /// Replaces the credential just used in the instance's secret with `Used`, unless the
    /// secret holds another (a newer launch's) by now.
    async fn forget_credential(&self) -> Result<(), String> {
        let (identity, _, secrets) = self.aws()?;
        let Some(used) = self.record.credential_used else {
            return Ok(());
        };
        let id = self.secret_id(identity);
        let call = self.settings.timeouts.call;
        let Some(text) = bounded(call, "GetSecretValue", secrets.get(&id)).await? else {
            return Ok(());
        };
        let mut value = InstanceSecret::parse(&text).map_err(|e| format!("{id}: {e}"))?;
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

    fn jit_config(&self) -> Option<SecretString> {
        match self.credential.as_ref().map(|c| &c.credential) {
            Some(RunnerCredential::JitConfig {
                encoded_jit_config, ..
            }) => Some(encoded_jit_config.clone()),
            _ => None,
        }
    }

    /// Configures the runner unless it is, then starts its listener. (A listener that
    /// outlived the agent is followed by `Watch`, never started twice.)
    async fn register(&mut self) -> Result<(), String> {
        let (identity, _, secrets) = self.aws()?;
        let identity = identity.clone();
        if self.credential.is_none() {
            // After a restart: the credential last written for this launch.
            let id = self.secret_id(&identity);
            let text = bounded(
                self.settings.timeouts.call,
                "GetSecretValue",
                secrets.get(&id),
            )
            .await?
            .ok_or_else(|| format!("the secret {id} is gone"))?;
            self.credential = Some(InstanceSecret::parse(&text).map_err(|e| format!("{id}: {e}"))?);
        }
        let Some(secret) = self.credential.as_ref() else {
            return Err("no credential".into());
        };
        self.record.credential_used = Some(secret.issued_at);
        let name = naming::runner_name(&identity.instance_id);
        if let RunnerCredential::RegistrationToken { token, .. } = &secret.credential {
            if !self.runner.configured() {
                let labels = naming::runner_labels(
                    &self.settings.deployment,
                    &identity.group,
                    &identity.instance_id,
                    &self.settings.labels,
                );
                let out = self
                    .runner
                    .configure(
                        &self.settings.github_url,
                        &name,
                        &labels,
                        self.settings.runner_group.as_deref(),
                        token,
                    )
                    .await
                    .map_err(|e| format!("config.sh could not run: {e}"))?;
                if let Some(m) = runner::version_refused(&out.output) {
                    return Err(version_refused(&m));
                }
                if !out.success {
                    return Err(format!("config.sh failed: {}", last_lines(&out.output)));
                }
                info!(instance_id = %identity.instance_id, runner = %name, "runner configured");
            }
        }
        self.record.runner_name = Some(name);
        let jit = self.jit_config();
        let pid = self.start_listener(jit.as_ref())?;
        let tx = self.tx.clone();
        let listen = self.settings.timeouts.listen;
        tokio::spawn(async move {
            tokio::time::sleep(listen).await;
            let _ = tx.send(Msg::ListenDeadline(pid));
        });
        Ok(())
    }

    fn start_listener(&mut self, jit: Option<&SecretString>) -> Result<u32, String> {
        let log = self.settings.state_dir.join("listener.log");
        let offset = std::fs::metadata(&log).map_or(0, |m| m.len());
        self.log_offset.store(offset, Ordering::Relaxed);
        let child = self
            .runner
            .start_listener(&log, jit)
            .map_err(|e| format!("the listener could not start: {e}"))?;
        let pid = child.id().unwrap_or(0);
        info!(pid, "listener started");
        self.record.listener_pid = Some(pid);
        self.record.listener_started = runner::started_at(pid);
        self.save();
        self.watch(Follow::Child(child));
        Ok(pid)
    }

    /// Whether the listener the record names still runs.
    fn listener_running(&self) -> bool {
        match (self.record.listener_pid, self.record.listener_started) {
            (Some(pid), Some(started)) => runner::still_running(pid, started),
            _ => false,
        }
    }

    /// Follows a listener: its output lines and its exit become events.
    fn watch(&self, listener: Follow) {
        let log = self.settings.state_dir.join("listener.log");
        let offset = self.log_offset.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let read = |offset: &AtomicU64| {
                for line in read_new_lines(&log, offset) {
                    if let Some(l) = runner::parse_line(&line) {
                        let event = match l {
                            Line::Listening => Event::Listening,
                            Line::JobRunning => Event::JobRunning,
                            Line::JobFinished => Event::JobFinished,
                            Line::VersionRefused(m) => Event::Failed(version_refused(&m)),
                        };
                        let _ = tx.send(Msg::Event(event));
                    }
                }
            };
            let changes = LogChanges::new(&log);
            let (pid, code) = match listener {
                Follow::Child(mut child) => {
                    let pid = child.id();
                    let code = loop {
                        tokio::select! {
                            status = child.wait() => break status.ok().and_then(|s| s.code()),
                            _ = changes.next() => read(&offset),
                        }
                    };
                    (pid, code)
                }
                // Not our child: no exit code, only its end.
                Follow::Adopted { pid, started } => {
                    while runner::still_running(pid, started) {
                        read(&offset);
                        changes.next().await;
                    }
                    (Some(pid), None)
                }
            };
            read(&offset);
            info!(?pid, ?code, "listener exited");
            let _ = tx.send(Msg::Event(Event::ListenerExited(code)));
        });
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

    /// While a job finishes under a drain, keeps the terminate hook from timing out.
    async fn heartbeat(&mut self) {
        if self.record.state != State::Draining {
            self.heartbeat_at = None;
            return;
        }
        let now = tokio::time::Instant::now();
        let last = *self.heartbeat_at.get_or_insert(now);
        if now.duration_since(last) < self.settings.timeouts.heartbeat {
            return;
        }
        self.heartbeat_at = Some(now);
        let Ok((identity, asg, _)) = self.aws() else {
            return;
        };
        let hook = &self.settings.deregistration_hook;
        let beat = asg.heartbeat(&identity.group, hook, &identity.instance_id);
        match bounded(
            self.settings.timeouts.call,
            "RecordLifecycleActionHeartbeat",
            beat,
        )
        .await
        {
            Ok(done) => {
                info!(instance_id = %identity.instance_id, hook = %hook, ?done, "heartbeat")
            }
            Err(e) => {
                warn!(instance_id = %identity.instance_id, hook = %hook, "heartbeat failed: {e}")
            }
        }
    }

    async fn tick(&mut self) {
        self.heartbeat().await;
        // A jump of CLOCK_BOOTTIME against CLOCK_MONOTONIC: the machine slept.
        let slept = slept();
        let jumped =
            matches!((self.slept, slept), (Some(a), Some(b)) if b > a + Duration::from_secs(2));
        self.slept = slept;
        let asleep_before = matches!(self.record.state, State::Warm)
            || (self.record.state == State::Drained && self.record.back_to_pool);
        if !asleep_before {
            return;
        }
        let woke = jumped || matches!(self.imds.target().await, Ok(Target::InService));
        if woke {
            info!("woke up (clock jump or IMDS target state)");
            self.event(Event::Resumed).await;
        }
    }
}

fn set_mode(path: &std::path::Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// How long the agent insists on an Auto Scaling call whose loss would leave the instance
/// in service with no runner (replacing it, marking it unhealthy).
const INSIST: Duration = Duration::from_secs(30);

/// Such a call, tried again while AWS throttles or fails in a way a retry can help
/// (`patience`, as the Lambdas do), each attempt bounded by `limit`.
async fn insist<F, Fut>(limit: Duration, what: &'static str, call: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), PortError>>,
{
    patience::until(tokio::time::Instant::now() + INSIST, || async {
        tokio::time::timeout(limit, call())
            .await
            .unwrap_or_else(|_| {
                Err(PortError {
                    service: "autoscaling",
                    operation: what,
                    resource: String::new(),
                    message: format!("no answer within {limit:?}"),
                    retryable: true,
                })
            })
    })
    .await
    .map_err(|e| e.to_string())
}

/// An AWS call that gets `limit` to answer (`timeouts.call`): one that hangs is an error
/// naming the call, never a stuck agent.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, PortError>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| {
            format!(
                "{what}: no answer within {}",
                humantime::format_duration(limit)
            )
        })?
        .map_err(|e| e.to_string())
}

fn watchdog_interval() -> Option<tokio::time::Interval> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| tokio::time::interval(Duration::from_micros(usec / 2)))
}

fn slept() -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    let boot = clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?;
    let mono = clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?;
    let d = Duration::from(boot).checked_sub(Duration::from(mono))?;
    Some(d)
}

/// Why the agent gives up when GitHub refuses the runner's version: what to do about it.
fn version_refused(message: &str) -> String {
    format!(
        "GitHub refuses this runner's version ({message}): the runner in the AMI is too old \
         (it registers with --disableupdate); bake an AMI with a current actions runner \
         (docs/usage/install.md, \"Upgrading the runner\")"
    )
}

fn last_lines(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

async fn await_credential(
    secrets: SecretsManager,
    id: String,
    newer_than: Option<chrono::DateTime<Utc>>,
    limit: Duration,
    call: Duration,
) -> Msg {
    let until = tokio::time::Instant::now() + limit;
    let mut last;
    loop {
        match bounded(call, "GetSecretValue", secrets.get(&id)).await {
            Ok(Some(text)) => match InstanceSecret::parse(&text) {
                Ok(s) if newer_than.is_none_or(|t| s.issued_at > t) => {
                    info!(secret = %id, issued_at = %s.issued_at, "new credential");
                    return Msg::Credential(s);
                }
                Ok(s) => {
                    last = format!(
                        "it holds only a credential issued at {} (used)",
                        s.issued_at
                    )
                }
                Err(e) => last = e,
            },
            Ok(None) => last = "the secret does not exist".into(),
            Err(e) => last = e,
        }
        if tokio::time::Instant::now() >= until {
            return Msg::Event(Event::Failed(format!(
                "no new credential in {id} within {}: {last}",
                humantime::format_duration(limit)
            )));
        }
        tokio::time::sleep(CREDENTIAL_POLL).await;
    }
}

async fn remove(runner: &Runner, token: Option<SecretString>) {
    let with_token = token.is_some();
    match runner.remove(token.as_ref()).await {
        Ok(out) if out.success => info!(with_token, "runner removed"),
        Ok(out) => {
            warn!(output = %last_lines(&out.output), "config.sh remove failed; removing the local configuration only (the sweep deletes the registration)");
            let _ = runner.remove(None).await;
        }
        Err(e) => warn!("config.sh remove could not run: {e}"),
    }
    if !with_token {
        warn!(
            "no remove token in the secret: the registration is left to the deregistration sweep"
        );
    }
}
