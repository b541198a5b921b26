//! Lambda: functions are real binaries run as processes that speak the Lambda Runtime API
//! (`/2018-06-01/runtime/invocation/next`, `/response`, `/error`, `/init/error`).
//!
//! Each function has up to `concurrency` execution environments. An environment is one
//! process with its own runtime-API port; it is started on its first invocation (a cold
//! start, whose init time is recorded) and reused while it lives. An invocation that outlives
//! the function's timeout kills its process (`Task timed out`), and so does a crash; the next
//! invocation gets a new process. Invocations from events are asynchronous: a failed one is
//! retried up to `retries` times, 1 and then 2 minutes (world time) later, as AWS does.

pub mod function_url;

use crate::aws::Clock;
use crate::lock;
use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::{ACCOUNT, REGION};

/// One function, as a world file or a test declares it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    pub name: String,
    /// The binary (`bootstrap`), run directly.
    pub command: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// World seconds an invocation may run (AWS's default is 3).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// Retries of a failed asynchronous invocation (AWS: 0 to 2, default 2).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Most environments (processes) at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Whether the function has a function URL (auth type NONE), served at
    /// `/_function_url/<name>/` on the world's address.
    #[serde(default)]
    pub url: bool,
}

fn default_timeout() -> f64 {
    3.0
}

fn default_retries() -> u32 {
    2
}

fn default_concurrency() -> usize {
    10
}

impl FunctionSpec {
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(format!(
                "function name {:?}: 1 to 64 letters, digits, '-' or '_'",
                self.name
            ));
        }
        if !(self.timeout_seconds > 0.0 && self.timeout_seconds <= 900.0) {
            return Err(format!(
                "function {}: timeout_seconds must be in (0, 900]",
                self.name
            ));
        }
        if self.retries > 2 {
            return Err(format!("function {}: retries must be 0, 1 or 2", self.name));
        }
        if self.concurrency == 0 {
            return Err(format!(
                "function {}: concurrency must be at least 1",
                self.name
            ));
        }
        Ok(())
    }

    pub fn arn(&self) -> String {
        function_arn(&self.name)
    }
}

pub fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
}

/// The function a target ARN names, if it names one.
pub fn function_name(arn: &str) -> Option<&str> {
    let name = arn.strip_prefix(&format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:"))?;
    // A qualified ARN (`:$LATEST`, `:alias`) runs the same binary here.
    Some(name.split(':').next().unwrap_or(name))
}

/// What became of one invocation (one attempt).
#[derive(Debug, Clone, Serialize)]
pub struct Invocation {
    pub request_id: String,
    pub function: String,
    /// What asked for it: an event id, or `direct`.
    pub source: String,
    /// 0 for the first attempt, then 1, 2 for AWS's retries.
    pub attempt: u32,
    /// World seconds.
    pub queued_at: f64,
    pub started_at: Option<f64>,
    pub ended_at: Option<f64>,
    /// `queued`, `running`, `success`, `error`, `timeout`, `crash`, `init_error`.
    pub outcome: &'static str,
    /// The process (environment) that ran it.
    pub pid: Option<u32>,
    /// Real milliseconds from process start to its first `next` or its init error (cold
    /// starts only).
    pub init_ms: Option<f64>,
    /// Real milliseconds from hand-over to the answer.
    pub duration_ms: Option<f64>,
    pub response: Option<Value>,
    pub error: Option<Value>,
}

struct Job {
    index: usize,
    payload: Value,
    retry: Option<Retry>,
    /// A synchronous caller waiting for the outcome.
    answer: Option<oneshot::Sender<Invocation>>,
}

/// What a failed asynchronous invocation needs to be tried again.
#[derive(Clone)]
struct Retry {
    left: u32,
    attempt: u32,
}

/// The functions of the world.
pub struct Lambda {
    clock: Clock,
    /// Environment every function process gets (region, credentials, endpoints).
    base_env: Vec<(String, String)>,
    log_dir: PathBuf,
    shutdown: CancellationToken,
    functions: Mutex<BTreeMap<String, Function>>,
    records: Arc<Mutex<Vec<Invocation>>>,
}

struct Function {
    spec: Arc<FunctionSpec>,
    queue: mpsc::UnboundedSender<Job>,
}

impl Lambda {
    pub fn new(
        clock: Clock,
        base_env: Vec<(String, String)>,
        log_dir: PathBuf,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Lambda {
            clock,
            base_env,
            log_dir,
            shutdown,
            functions: Mutex::new(BTreeMap::new()),
            records: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Creates (or replaces) a function; its old environments finish their work and end.
    pub fn put(self: &Arc<Self>, spec: FunctionSpec) -> Result<(), String> {
        spec.validate()?;
        std::fs::create_dir_all(&self.log_dir).map_err(|e| format!("creating logs: {e}"))?;
        let spec = Arc::new(spec);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(self.clone().dispatch(spec.clone(), rx));
        lock(&self.functions).insert(spec.name.clone(), Function { spec, queue: tx });
        Ok(())
    }

    pub fn exists(&self, name: &str) -> bool {
        lock(&self.functions).contains_key(name)
    }

    /// Whether a function exists and has a function URL.
    pub fn has_url(&self, name: &str) -> bool {
        lock(&self.functions).get(name).is_some_and(|f| f.spec.url)
    }

    pub fn specs(&self) -> Vec<FunctionSpec> {
        lock(&self.functions)
            .values()
            .map(|f| (*f.spec).clone())
            .collect()
    }

    pub fn invocations(&self) -> Vec<Invocation> {
        lock(&self.records).clone()
    }

    /// Queues an asynchronous invocation (as EventBridge makes), retried on failure.
    pub fn invoke_async(&self, function: &str, payload: Value, source: &str) -> Result<(), String> {
        let retries = lock(&self.functions)
            .get(function)
            .map(|f| f.spec.retries)
            .ok_or_else(|| format!("Function not found: {}", function_arn(function)))?;
        self.enqueue(
            function,
            payload,
            source,
            Some(Retry {
                left: retries,
                attempt: 0,
            }),
            None,
        )
    }

    /// Runs one invocation and waits for its outcome (Lambda's `RequestResponse` Invoke).
    pub async fn invoke(&self, function: &str, payload: Value) -> Result<Invocation, String> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(function, payload, "invoke", None, Some(tx))?;
        rx.await
            .map_err(|_| format!("function {function} ended without an answer"))
    }

    fn enqueue(
        &self,
        function: &str,
        payload: Value,
        source: &str,
        retry: Option<Retry>,
        answer: Option<oneshot::Sender<Invocation>>,
    ) -> Result<(), String> {
        let functions = lock(&self.functions);
        let f = functions
            .get(function)
            .ok_or_else(|| format!("Function not found: {}", function_arn(function)))?;
        let index = {
            let mut records = lock(&self.records);
            records.push(Invocation {
                request_id: crate::aws::protocol::json::uuid(&mut rand::thread_rng()),
                function: function.to_owned(),
                source: source.to_owned(),
                attempt: retry.as_ref().map_or(0, |r| r.attempt),
                queued_at: self.clock.now().as_secs_f64(),
                started_at: None,
                ended_at: None,
                outcome: "queued",
                pid: None,
                init_ms: None,
                duration_ms: None,
                response: None,
                error: None,
            });
            records.len() - 1
        };
        f.queue
            .send(Job {
                index,
                payload,
                retry,
                answer,
            })
            .map_err(|_| format!("function {function} is shutting down"))
    }

    /// Hands queued jobs to idle environments (the most recently used first, so a warm
    /// process is reused), starting new ones up to the function's concurrency.
    async fn dispatch(
        self: Arc<Self>,
        spec: Arc<FunctionSpec>,
        mut jobs: mpsc::UnboundedReceiver<Job>,
    ) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Env>();
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut idle: Vec<Env> = Vec::new();
        let mut live = 0usize;
        let mut serial = 0u32;
        let mut replaced = false;
        loop {
            if replaced && queue.is_empty() && live == idle.len() {
                break;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                job = jobs.recv(), if !replaced => match job {
                    Some(job) => queue.push_back(job),
                    None => replaced = true,
                },
                Some(env) = done_rx.recv() => idle.push(env),
            }
            while !queue.is_empty() {
                let env = match idle.pop() {
                    Some(env) => env,
                    None if live < spec.concurrency => {
                        serial += 1;
                        match Env::serve(serial).await {
                            Ok(env) => {
                                live += 1;
                                env
                            }
                            Err(e) => {
                                tracing::warn!(function = %spec.name, error = %format!("{e:#}"), "no environment");
                                break;
                            }
                        }
                    }
                    None => break,
                };
                let Some(job) = queue.pop_front() else { break };
                let me = self.clone();
                let spec = spec.clone();
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let env = me.run(&spec, env, job).await;
                    let _ = done.send(env);
                });
            }
        }
        for mut env in idle {
            env.end().await;
        }
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut Invocation)) -> Invocation {
        let mut records = lock(&self.records);
        f(&mut records[index]);
        records[index].clone()
    }

    /// Runs one job in one environment, starting its process when it has none.
    async fn run(self: &Arc<Self>, spec: &FunctionSpec, mut env: Env, job: Job) -> Env {
        // A process that died while idle is not handed work: it is replaced.
        if env
            .child
            .as_mut()
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
        {
            env.end().await;
        }
        let cold = env.child.is_none();
        if cold {
            if let Err(e) = self.start(spec, &mut env) {
                let record = self.update(job.index, |r| {
                    r.outcome = "init_error";
                    r.error = Some(json!({"errorType": "Runtime.InvalidEntrypoint", "errorMessage": format!("{e:#}")}));
                });
                self.finish(spec, record, job);
                return env;
            }
        }
        let request_id = lock(&self.records)[job.index].request_id.clone();
        let timeout = self
            .clock
            .real(Duration::from_secs_f64(spec.timeout_seconds));
        let deadline = chrono::Utc::now() + chrono::Duration::from_std(timeout).unwrap_or_default();
        let (reply_tx, reply_rx) = oneshot::channel();
        env.shared.deliver(Delivery {
            request_id: request_id.clone(),
            payload: job.payload.clone(),
            deadline_ms: deadline.timestamp_millis(),
            function_arn: spec.arn(),
            reply: reply_tx,
        });
        let pid = env.child.as_ref().and_then(Child::id);
        let now = self.clock.now().as_secs_f64();
        self.update(job.index, |r| {
            r.outcome = "running";
            r.started_at = Some(now);
            r.pid = pid;
        });
        let started = Instant::now();
        let outcome = match env.child.as_mut() {
            Some(child) => {
                tokio::select! {
                    reply = reply_rx => match reply {
                        Ok(Ok(v)) => Ok(v),
                        Ok(Err(e)) => Err(("error", e)),
                        Err(_) => Err(("crash", json!({"errorType": "Runtime.ExitError", "errorMessage": "the runtime dropped the invocation"}))),
                    },
                    status = child.wait() => {
                        let init = env.shared.take_init_error();
                        match init {
                            Some(e) => Err(("init_error", e)),
                            None => Err(("crash", json!({"errorType": "Runtime.ExitError", "errorMessage": format!("RequestId: {request_id} Error: Runtime exited ({})", status.map(|s| s.to_string()).unwrap_or_default())}))),
                        }
                    }
                    _ = tokio::time::sleep(timeout) => Err(("timeout", json!({"errorType": "Sandbox.Timedout", "errorMessage": format!("{request_id} Task timed out after {:.2} seconds", spec.timeout_seconds)}))),
                    _ = self.shutdown.cancelled() => Err(("crash", json!({"errorType": "Runtime.ExitError", "errorMessage": "the world shut down"}))),
                }
            }
            None => Err((
                "crash",
                json!({"errorType": "Runtime.ExitError", "errorMessage": "no runtime process"}),
            )),
        };
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let init_ms = if cold {
            env.shared.init_ms(env.started)
        } else {
            None
        };
        if outcome.is_err() {
            // A process that failed this way is not reused: timeouts and crashes restart it.
            if !matches!(outcome, Err(("error", _))) {
                env.end().await;
            }
        }
        let ended = self.clock.now().as_secs_f64();
        let record = self.update(job.index, |r| {
            r.ended_at = Some(ended);
            r.duration_ms = Some(duration_ms);
            r.init_ms = init_ms;
            match outcome {
                Ok(v) => {
                    r.outcome = "success";
                    r.response = Some(v);
                }
                Err((kind, e)) => {
                    r.outcome = kind;
                    r.error = Some(e);
                }
            }
        });
        self.log_report(&record);
        self.finish(spec, record, job);
        env
    }

    /// Schedules the retry of a failed asynchronous invocation.
    fn finish(self: &Arc<Self>, spec: &FunctionSpec, record: Invocation, mut job: Job) {
        if let Some(answer) = job.answer.take() {
            let _ = answer.send(record.clone());
        }
        if record.outcome == "success" {
            return;
        }
        tracing::info!(function = %spec.name, request_id = %record.request_id, outcome = record.outcome, error = ?record.error, "invocation failed");
        let Some(retry) = job.retry.filter(|r| r.left > 0) else {
            return;
        };
        let wait = self
            .clock
            .real(Duration::from_secs(60 * u64::from(retry.attempt + 1)));
        let me = self.clone();
        let name = spec.name.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = me.shutdown.cancelled() => {}
                _ = tokio::time::sleep(wait) => {
                    let _ = me.enqueue(&name, job.payload, &record.source, Some(Retry { left: retry.left - 1, attempt: retry.attempt + 1 }), None);
                }
            }
        });
    }

    fn log_path(&self, function: &str) -> PathBuf {
        self.log_dir.join(format!("{function}.log"))
    }

    fn log_report(&self, r: &Invocation) {
        let mut line = format!(
            "REPORT RequestId: {} Outcome: {} Duration: {:.2} ms",
            r.request_id,
            r.outcome,
            r.duration_ms.unwrap_or_default()
        );
        if let Some(init) = r.init_ms {
            line.push_str(&format!(" Init Duration: {init:.2} ms"));
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.log_path(&r.function))
        {
            let _ = writeln!(f, "{line}");
        }
    }

    fn start(&self, spec: &FunctionSpec, env: &mut Env) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.log_path(&spec.name))
            .context("opening the function's log")?;
        // Before the spawn: a quick process asks for its first event (and so is ready)
        // before this task runs again, and a reset after would forget it.
        env.shared.reset();
        env.started = Instant::now();
        let child = tokio::process::Command::new(&spec.command)
            .args(&spec.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.base_env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", env.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", spec.name),
            )
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!("testbed/{}", env.serial),
            )
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("_HANDLER", "bootstrap")
            .envs(spec.environment.iter())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", spec.command.display()))?;
        env.child = Some(child);
        Ok(())
    }
}

/// Where a runtime's answer goes: the response, or the error it reported.
type Reply = oneshot::Sender<Result<Value, Value>>;

/// One invocation handed to a runtime's `next`.
struct Delivery {
    request_id: String,
    payload: Value,
    deadline_ms: i64,
    function_arn: String,
    reply: Reply,
}

/// One execution environment: a runtime-API port and, while it lives, its process.
struct Env {
    serial: u32,
    addr: std::net::SocketAddr,
    shared: Arc<EnvShared>,
    child: Option<Child>,
    started: Instant,
    server: CancellationToken,
}

#[derive(Default)]
struct EnvShared {
    waiting: Mutex<Option<Delivery>>,
    arrived: tokio::sync::Notify,
    /// The request id being worked on, and where its answer goes.
    inflight: Mutex<Option<(String, Reply)>>,
    /// When the current process first asked for work.
    ready: Mutex<Option<Instant>>,
    init_error: Mutex<Option<Value>>,
}

impl EnvShared {
    fn reset(&self) {
        *lock(&self.ready) = None;
        *lock(&self.init_error) = None;
        *lock(&self.waiting) = None;
        *lock(&self.inflight) = None;
    }

    fn deliver(&self, d: Delivery) {
        *lock(&self.waiting) = Some(d);
        self.arrived.notify_one();
    }

    fn take_init_error(&self) -> Option<Value> {
        lock(&self.init_error).take()
    }

    fn init_ms(&self, started: Instant) -> Option<f64> {
        lock(&self.ready).map(|r| (r - started).as_secs_f64() * 1000.0)
    }
}

impl Env {
    async fn serve(serial: u32) -> anyhow::Result<Env> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a runtime API port")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(EnvShared::default());
        let server = CancellationToken::new();
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            // A function's answer may be as large as Lambda's 6 MB (axum stops at 2 MB).
            .layer(axum::extract::DefaultBodyLimit::max(
                function_url::MAX_REQUEST_BYTES,
            ))
            .with_state(shared.clone());
        let until = server.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(until)
                .await
        });
        Ok(Env {
            serial,
            addr,
            shared,
            child: None,
            started: Instant::now(),
            server,
        })
    }

    /// Ends the process; the port stays for the next one.
    async fn end(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
        }
        self.shared.reset();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.server.cancel();
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn next(State(env): State<Arc<EnvShared>>) -> Response {
    {
        let mut ready = lock(&env.ready);
        if ready.is_none() {
            *ready = Some(Instant::now());
        }
    }
    let delivery = loop {
        let notified = env.arrived.notified();
        if let Some(d) = lock(&env.waiting).take() {
            break d;
        }
        notified.await;
    };
    let mut headers = HeaderMap::new();
    let pairs = [
        ("lambda-runtime-aws-request-id", delivery.request_id.clone()),
        (
            "lambda-runtime-deadline-ms",
            delivery.deadline_ms.to_string(),
        ),
        (
            "lambda-runtime-invoked-function-arn",
            delivery.function_arn.clone(),
        ),
        (
            "lambda-runtime-trace-id",
            format!(
                "Root=1-00000000-{};Sampled=0",
                delivery.request_id.replace('-', "")
            ),
        ),
        ("content-type", "application/json".to_owned()),
    ];
    for (k, v) in pairs {
        if let Ok(v) = v.parse() {
            headers.insert(k, v);
        }
    }
    *lock(&env.inflight) = Some((delivery.request_id, delivery.reply));
    (StatusCode::OK, headers, delivery.payload.to_string()).into_response()
}

fn body_value(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn answer(env: &EnvShared, id: &str, result: Result<Value, Value>) -> Response {
    let mut inflight = lock(&env.inflight);
    match inflight.take() {
        Some((current, reply)) if current == id => {
            let _ = reply.send(result);
            (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
        }
        other => {
            *inflight = other;
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"errorType": "InvalidRequestID", "errorMessage": format!("no invocation {id} in progress")})),
            )
                .into_response()
        }
    }
}

async fn response(
    State(env): State<Arc<EnvShared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    answer(&env, &id, Ok(body_value(&body)))
}

async fn error(State(env): State<Arc<EnvShared>>, Path(id): Path<String>, body: Bytes) -> Response {
    answer(&env, &id, Err(body_value(&body)))
}

async fn init_error(State(env): State<Arc<EnvShared>>, body: Bytes) -> Response {
    // A failed initialisation ends here: its duration counts as init time.
    lock(&env.ready).get_or_insert_with(Instant::now);
    *lock(&env.init_error) = Some(body_value(&body));
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}
