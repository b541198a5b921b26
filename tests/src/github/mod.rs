//! `warmfleet-testbed github`: a stateful fake of the GitHub REST endpoints warmfleet calls,
//! the runner protocol the fake runner speaks, and test controls under `/_testbed`.
//!
//! Paths, status codes and bodies follow GitHub's REST API (checked against GitHub's OpenAPI
//! description by the contract test). The runner protocol is the fake's own, under
//! `/_runner`: the real runner speaks a private protocol to other hosts, which warmfleet
//! never touches.

mod auth;
pub mod control;
pub mod gate;
pub mod rest;
pub mod runner_api;
pub mod state;
pub mod versions;
pub mod webhooks;

use anyhow::Context;
use auth::{App, Credentials};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use gate::Gate;
use state::{Refusal, Settings, World};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What `warmfleet-testbed github` is started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub orgs: Vec<String>,
    /// `owner/name`
    pub repos: Vec<String>,
    pub enterprises: Vec<String>,
    pub pats: Vec<String>,
    /// (app id, path of its private key PEM)
    pub apps: Vec<(u64, PathBuf)>,
    pub settings: Settings,
    /// How long a listener's poll waits for a job before answering "nothing".
    pub poll_wait: Duration,
    pub webhook: Option<webhooks::Webhook>,
}

pub use webhooks::Webhook;

pub(crate) struct Shared {
    world: Mutex<World>,
    /// Woken whenever a job is queued or a runner changes, for long-polling listeners.
    changed: Notify,
    credentials: Credentials,
    gate: Gate,
    orgs: Vec<String>,
    repos: Vec<String>,
    enterprises: Vec<String>,
    poll_wait: Duration,
    hooks: webhooks::Hooks,
}

impl Shared {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a scope (`orgs/x`, `repos/o/r`, `enterprises/e`) exists in this fake.
    fn scope_exists(&self, scope: &str) -> bool {
        let eq = |list: &[String], name: &str| list.iter().any(|x| x.eq_ignore_ascii_case(name));
        if let Some(org) = scope.strip_prefix("orgs/") {
            eq(&self.orgs, org)
        } else if let Some(repo) = scope.strip_prefix("repos/") {
            eq(&self.repos, repo)
        } else if let Some(ent) = scope.strip_prefix("enterprises/") {
            eq(&self.enterprises, ent)
        } else {
            false
        }
    }
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// An error answer in GitHub's shape: `{"message", "documentation_url", "status"}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "Not Found")
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthorized(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
            Refusal::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            Refusal::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            Refusal::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            Refusal::Unprocessable(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "message": self.message,
            "documentation_url": "https://docs.github.com/rest",
            "status": self.status.as_u16().to_string(),
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Runs the fake until `shutdown` is cancelled. `on_ready` gets the bound address.
pub async fn serve(
    config: Config,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let mut apps = Vec::new();
    for (id, path) in &config.apps {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading the key of app {id} from {}", path.display()))?;
        apps.push(App::from_private_pem(*id, &pem)?);
    }
    let mut accounts: Vec<String> = config.orgs.clone();
    for repo in &config.repos {
        let owner = repo.split('/').next().unwrap_or_default().to_owned();
        if !accounts.iter().any(|a| a.eq_ignore_ascii_case(&owner)) {
            accounts.push(owner);
        }
    }
    let shared = Arc::new(Shared {
        world: Mutex::new(World::new(config.settings.clone())),
        changed: Notify::new(),
        credentials: Credentials::new(
            config.pats.clone(),
            apps,
            &accounts,
            config.settings.token_ttl,
        ),
        gate: Gate::new(config.settings.rate_limit),
        orgs: config.orgs.clone(),
        repos: config.repos.clone(),
        enterprises: config.enterprises.clone(),
        poll_wait: config.poll_wait,
        hooks: webhooks::Hooks::default(),
    });
    if let Some(hook) = &config.webhook {
        shared
            .hooks
            .add("", &hook.url, &hook.secret, vec!["workflow_job".to_owned()]);
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    on_ready(addr);

    tokio::spawn(housekeeping(shared.clone(), shutdown.clone()));
    let app = router(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving the GitHub fake")
}

fn router(shared: Arc<Shared>) -> Router {
    let rest = rest::routes(shared.clone());
    Router::new()
        .nest("/api/v3", rest.clone())
        .merge(rest)
        .nest("/_runner", runner_api::routes(shared.clone()))
        .nest("/_testbed", control::routes(shared))
}

/// What GitHub does on its own: twice a second, fail jobs whose runner went silent and
/// delete long-offline runners; every 20 ms, send the webhooks of the job events since
/// (GitHub sends them within about a second; at a time scale of 20, 500 ms would be 10 world
/// seconds).
async fn housekeeping(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let events = {
            let mut world = shared.world();
            if last_sweep.elapsed() >= Duration::from_millis(500) {
                last_sweep = tokio::time::Instant::now();
                let gone = world.tick(now());
                if !gone.is_empty() {
                    tracing::info!(?gone, "deleted runners offline for too long");
                }
            }
            std::mem::take(&mut world.events)
        };
        for event in &events {
            shared.hooks.job_event(event);
        }
    }
}
