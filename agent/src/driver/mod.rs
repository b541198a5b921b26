//! The driver: performs the state machine's actions and turns what happens (IMDS answers,
//! the secret, the listener's output and exit, job hooks, drains, sleep and wake, SIGTERM)
//! into its events. One task owns the state; slow actions run in tasks of their own and
//! report back through a channel.

mod actions;
mod calls;
mod listener;

use crate::config::Settings;
use crate::control::{self, JobHook, Reply, Request, SleepPhase};
use crate::error::AgentError;
use crate::machine::{self, Action, Event, State};
use crate::record::{self, Record};
use crate::runner::{RunAs, Runner};
use calls::bounded;
use chrono::Utc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use warmfleet_core::aws::{AutoScaling, CloudWatch, RunnerTable, SecretsManager};
use warmfleet_core::imds::{Identity, Imds, Target};
use warmfleet_core::instance_secret::InstanceSecret;
use warmfleet_core::naming;
use warmfleet_core::ports::Lifecycle;

/// How often the agent looks for a wake-up (IMDS, the clocks).
const POLL: Duration = Duration::from_secs(1);
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
    /// `timeouts.linger` has passed since the `AwaitLinger` of this generation.
    Lingered(u64),
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
    /// Where the runner's jobs are recorded, when `runner_table` names one (instead of
    /// scale-in protection).
    occupancy: Option<RunnerTable>,
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
    /// The last `AwaitLinger`'s number: only its timer counts (a job since restarts it).
    linger_generation: u64,
    /// Whether this process saw AWS accept protection on, and nothing since: a job that
    /// starts while its instance lingers protected asks AWS for nothing (a restarted agent
    /// asks again).
    protection_confirmed: bool,
}

impl Driver {
    pub fn new(settings: Settings) -> Result<Driver, AgentError> {
        std::fs::create_dir_all(&settings.state_dir).map_err(|source| AgentError::File {
            path: settings.state_dir.clone(),
            source,
        })?;
        // Traversable by the runner user (its job hooks reach the socket in it) under the
        // agent's umask 077; the files in it have modes of their own.
        set_mode(&settings.state_dir, 0o755)?;
        let record = record::load(&settings.state_dir)?.unwrap_or_default();
        let run_as = RunAs::lookup(&settings.runner_user)?;
        let socket = control::socket(&settings.state_dir);
        let exe = std::env::current_exe()
            .map_err(|e| AgentError::Setup(format!("the agent's own path: {e}")))?;
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
            occupancy: None,
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
            linger_generation: 0,
            protection_confirmed: false,
        })
    }

    /// The service: runs until a SIGTERM drain has finished, or until SIGUSR2 asks it to
    /// hand over to a new agent (a package upgrade: nothing is drained, the running
    /// listener stays and the next agent adopts it). An error: it could not start (not even
    /// learn who it is); systemd restarts it.
    pub async fn run(mut self) -> Result<Stop, AgentError> {
        // Before any listener can start (a first one, or one adopted after a restart).
        self.guard_imds()?;
        let socket = control::socket(&self.settings.state_dir);
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|source| AgentError::File {
            path: socket.clone(),
            source,
        })?;
        let peers = control::Peers {
            agent: nix::unistd::geteuid().as_raw(),
            runner: self.runner.run_as.as_ref().map(|r| r.uid),
        };
        // Root's and the runner group's; a root agent's only when it runs jobs as itself.
        match &self.runner.run_as {
            Some(r) => {
                nix::unistd::chown(&socket, None, Some(nix::unistd::Gid::from_raw(r.gid)))
                    .map_err(|e| AgentError::File {
                        path: socket.clone(),
                        source: e.into(),
                    })?;
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
        let signal = |kind| {
            tokio::signal::unix::signal(kind)
                .map_err(|e| AgentError::Setup(format!("signal handler: {e}")))
        };
        let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut sigusr2 = signal(tokio::signal::unix::SignalKind::user_defined2())?;
        let mut tick = tokio::time::interval(POLL);
        // After a hibernation (or any freeze) one tick, not a burst of the missed ones each
        // asking IMDS while it may not answer yet.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut watchdog = watchdog_interval();

        // Who this instance is, before anything else (a restart in service needs it as much
        // as a first start).
        let identity = self.imds.identity().await.map_err(AgentError::Identity)?;
        let config = warmfleet_core::aws::load_config_in(&identity.region).await;
        self.clients = Some((AutoScaling::new(&config), SecretsManager::new(&config)));
        self.metrics = Some(CloudWatch::new(&config));
        self.occupancy = self
            .settings
            .runner_table
            .as_deref()
            .map(|t| RunnerTable::new(&config, t));
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
                    if let Err(e) = self.start_listener(jit.as_ref()) {
                        self.event(Event::Failed(e.to_string())).await;
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
            Msg::Lingered(generation) => {
                if generation == self.linger_generation {
                    self.event(Event::Lingered).await;
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
            if let Err(e) = self.perform(action.clone()).await {
                let reason = e.to_string();
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

    fn aws(&self) -> Result<(&Identity, &AutoScaling, &SecretsManager), AgentError> {
        match (&self.identity, &self.clients) {
            (Some(i), Some((a, s))) => Ok((i, a, s)),
            _ => Err(AgentError::NotIdentified),
        }
    }

    fn secret_id(&self, identity: &Identity) -> String {
        naming::prefixed_instance_secret_id(
            &self.settings.secret_prefix,
            &identity.group,
            &identity.instance_id,
        )
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

fn set_mode(path: &std::path::Path, mode: u32) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        AgentError::File {
            path: path.to_owned(),
            source,
        }
    })
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
