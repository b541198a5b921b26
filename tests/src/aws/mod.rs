//! `warmfleet-testbed aws`: the testbed's AWS world, on one port, for the real aws-sdk
//! clients (pointed here with `AWS_ENDPOINT_URL_<SERVICE>`; any credentials are accepted).
//!
//! Today it serves Auto Scaling (awsQuery). Each instance is a process with its own root
//! directory and IMDSv2 endpoint (`instances`, `imds`); every effect the model asks for
//! (start, hibernate, resume, stop, lifecycle events) is recorded, readable at
//! `GET /_testbed/aws/effects`, and instances at `GET /_testbed/aws/instances`.

pub mod autoscaling;
pub mod imds;
pub mod instances;
pub mod moto;
pub mod query;

use anyhow::Context;
use autoscaling::api::{self, Timestamps};
use autoscaling::model::{Asg, Effect, Place, PoolState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use instances::{Driver, InstanceInfo};
use query::{Params, QueryError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// World seconds per real second.
    pub time_scale: f64,
    /// Run in every instance (as cloud-init would start the agent), by `sh -c`.
    pub instance_command: Option<String>,
    /// Where instance roots live; a temporary directory when absent.
    pub state_dir: Option<PathBuf>,
    /// World time a new instance boots before its launch hooks fire.
    pub boot_delay: Duration,
    /// World time a warm instance takes to resume.
    pub resume_delay: Duration,
    /// World time an instance takes to hibernate before it counts as warm.
    pub hibernate_delay: Duration,
    pub moto: MotoMode,
}

/// Where Secrets Manager comes from.
#[derive(Debug, Clone)]
pub enum MotoMode {
    /// No Secrets Manager.
    Off,
    /// `moto_server` from PATH, else a venv installed on first use.
    Auto,
    /// This `moto_server`.
    Path(PathBuf),
}

/// World time: real time since start, times the scale.
struct Clock {
    start: Instant,
    scale: f64,
}

impl Clock {
    fn now(&self) -> Duration {
        self.start.elapsed().mul_f64(self.scale)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// World seconds since the simulator started.
    pub at: f64,
    pub effect: Effect,
}

struct World {
    asg: Mutex<Asg>,
    clock: Clock,
    stamps: Timestamps,
    effects: Mutex<Vec<Recorded>>,
    requests: AtomicU64,
    driver: mpsc::UnboundedSender<Effect>,
    instances: Arc<Mutex<BTreeMap<String, InstanceInfo>>>,
    endpoints: Endpoints,
}

/// Where each service of this world is served.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    pub autoscaling: String,
    pub secretsmanager: Option<String>,
}

/// What an instance's IMDS reads of the world.
struct Metadata(std::sync::Weak<World>);

impl imds::MetadataSource for Metadata {
    fn now(&self) -> Duration {
        self.0.upgrade().map(|w| w.clock.now()).unwrap_or_default()
    }

    fn target_lifecycle_state(&self, instance: &str) -> Option<String> {
        let world = self.0.upgrade()?;
        let asg = lock(&world.asg);
        let i = asg.instances.get(instance)?;
        Some(match i.destination {
            Place::AutoScalingGroup => "InService".to_owned(),
            Place::EC2 => "Terminated".to_owned(),
            Place::WarmPool => {
                let state = asg
                    .groups
                    .get(&i.group)
                    .and_then(|g| g.warm_pool.as_ref())
                    .map(|p| p.state);
                match state.unwrap_or(PoolState::Stopped) {
                    PoolState::Hibernated => "Warmed:Hibernated",
                    PoolState::Stopped => "Warmed:Stopped",
                    PoolState::Running => "Warmed:Running",
                }
                .to_owned()
            }
        })
    }

    fn tags(&self, instance: &str) -> Vec<(String, String)> {
        let Some(world) = self.0.upgrade() else {
            return vec![];
        };
        let asg = lock(&world.asg);
        let Some(i) = asg.instances.get(instance) else {
            return vec![];
        };
        let mut tags = vec![("aws:autoscaling:groupName".to_owned(), i.group.clone())];
        if let Some(g) = asg.groups.get(&i.group) {
            tags.extend(g.tags.iter().cloned());
        }
        tags
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl World {
    /// Moves the model to now and records what it asked for.
    fn tick(&self) {
        let now = self.clock.now();
        let effects = lock(&self.asg).tick(now);
        if effects.is_empty() {
            return;
        }
        let mut log = lock(&self.effects);
        for effect in effects {
            tracing::debug!(?effect, "auto scaling");
            let _ = self.driver.send(effect.clone());
            log.push(Recorded {
                at: now.as_secs_f64(),
                effect,
            });
        }
    }
}

pub async fn serve(
    config: Config,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.time_scale > 0.0 && config.time_scale.is_finite(),
        "--time-scale must be a positive number"
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let moto = match &config.moto {
        MotoMode::Off => None,
        MotoMode::Auto => Some(moto::Moto::start(None).await?),
        MotoMode::Path(p) => Some(moto::Moto::start(Some(p.clone())).await?),
    };
    let endpoints = Endpoints {
        autoscaling: format!("http://{}", listener.local_addr()?),
        secretsmanager: moto.as_ref().map(|m| m.url.clone()),
    };
    // What an instance's AWS clients need to find this world.
    let mut instance_env = vec![
        (
            "AWS_ENDPOINT_URL_AUTO_SCALING".to_owned(),
            endpoints.autoscaling.clone(),
        ),
        ("AWS_REGION".to_owned(), imds::REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID".to_owned(), "testbed".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "testbed".to_owned()),
    ];
    if let Some(url) = &endpoints.secretsmanager {
        instance_env.push(("AWS_ENDPOINT_URL_SECRETS_MANAGER".to_owned(), url.clone()));
    }
    let (temp, dir) = match &config.state_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let temp = tempfile::tempdir().context("creating a state directory")?;
            let dir = temp.path().to_owned();
            (Some(temp), dir)
        }
    };
    let (driver_tx, mut driver_rx) = mpsc::unbounded_channel::<Effect>();
    let mut driver_task = None;
    let world = Arc::new_cyclic(|weak: &std::sync::Weak<World>| {
        let driver = Driver::new(
            dir.clone(),
            config.instance_command.clone(),
            instance_env,
            Arc::new(Metadata(weak.clone())),
        );
        let instances = driver.info.clone();
        let stop = shutdown.clone();
        driver_task = Some(tokio::spawn(async move {
            let mut driver = driver;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    effect = driver_rx.recv() => match effect {
                        Some(effect) => driver.apply(&effect).await,
                        None => break,
                    },
                }
            }
            driver.shutdown().await;
            drop(temp);
        }));
        World {
            asg: Mutex::new(Asg::new(
                config.boot_delay,
                config.resume_delay,
                config.hibernate_delay,
            )),
            clock: Clock {
                start: Instant::now(),
                scale: config.time_scale,
            },
            stamps: Timestamps {
                started: chrono::Utc::now(),
            },
            effects: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            driver: driver_tx,
            instances,
            endpoints,
        }
    });
    on_ready(listener.local_addr()?);
    let ticker = world.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => ticker.tick(),
            }
        }
    });
    let app = Router::new()
        .route("/", post(dispatch))
        .route("/_testbed/aws/effects", get(effects))
        .route("/_testbed/aws/instances", get(instance_list))
        .route("/_testbed/aws/endpoints", get(endpoint_list))
        .with_state(world);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving the AWS world");
    // Instances end with the world: no process is left behind.
    shutdown.cancel();
    if let Some(task) = driver_task {
        let _ = task.await;
    }
    if let Some(m) = moto {
        m.stop().await;
    }
    served
}

async fn endpoint_list(State(world): State<Arc<World>>) -> Json<Endpoints> {
    Json(world.endpoints.clone())
}

async fn instance_list(State(world): State<Arc<World>>) -> Json<Vec<InstanceInfo>> {
    Json(lock(&world.instances).values().cloned().collect())
}

async fn effects(State(world): State<Arc<World>>) -> Json<Vec<Recorded>> {
    Json(lock(&world.effects).clone())
}

/// Picks the service the way AWS does: awsQuery requests carry `Action` in the form body.
async fn dispatch(State(world): State<Arc<World>>, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = format!(
        "{:08x}-0000-4000-8000-000000000000",
        world.requests.fetch_add(1, Ordering::Relaxed)
    );
    if headers.contains_key("x-amz-target") {
        let e = QueryError {
            status: axum::http::StatusCode::BAD_REQUEST,
            code: "UnknownOperationException",
            message: "this AWS world serves no JSON-protocol service yet".into(),
        };
        return query::error(api::NAMESPACE, &e, &request_id);
    }
    let params = Params::parse(&body);
    let Some(action) = params.get("Action").map(str::to_owned) else {
        return query::error(
            api::NAMESPACE,
            &QueryError::validation("Action is required"),
            &request_id,
        );
    };
    world.tick();
    let now = world.clock.now();
    let result = {
        let mut asg = lock(&world.asg);
        api::handle(&mut asg, &action, &params, now, &world.stamps)
    };
    world.tick();
    match result {
        Ok(xml) => query::answer(api::NAMESPACE, &action, xml, &request_id),
        Err(e) => {
            tracing::info!(action, code = e.code, message = %e.message, "auto scaling error");
            query::error(api::NAMESPACE, &e, &request_id).into_response()
        }
    }
}
