//! `warmfleet-testbed aws`: the testbed's AWS world, on one port, for the real aws-sdk
//! clients (pointed here with `AWS_ENDPOINT_URL_<SERVICE>`; any credentials are accepted).
//!
//! Today it serves Auto Scaling (awsQuery). Instances are records whose lifecycle follows
//! AWS's rules; what the model asks of their processes (start, hibernate, resume, stop) is
//! recorded as effects, readable at `GET /_testbed/aws/effects`. Running each instance as a
//! process with its own IMDS is the next step (issue 3).

pub mod autoscaling;
pub mod query;

use anyhow::Context;
use autoscaling::api::{self, Timestamps};
use autoscaling::model::{Asg, Effect};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use query::{Params, QueryError};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// World seconds per real second.
    pub time_scale: f64,
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
    let world = Arc::new(World {
        asg: Mutex::new(Asg::default()),
        clock: Clock {
            start: Instant::now(),
            scale: config.time_scale,
        },
        stamps: Timestamps {
            started: chrono::Utc::now(),
        },
        effects: Mutex::new(Vec::new()),
        requests: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
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
        .with_state(world);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving the AWS world")
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
