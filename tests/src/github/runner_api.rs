//! The runner protocol of the fake, under `/_runner`: what `config.sh`, `config.sh remove`
//! and the listener say to GitHub. The real runner speaks a private protocol to GitHub's
//! Actions service; this one carries the same facts (register with a token, one session per
//! runner, long-poll for a job, renew it, report its result) and nothing more.

use super::state::{JobRec, Message, Registration};
use super::{now, ApiError, Shared};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use warmfleet_core::github::{GithubTarget, Scope};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub url: String,
    pub token: String,
    pub name: String,
    pub labels: Vec<String>,
    pub runner_group: Option<String>,
    pub replace: bool,
    pub ephemeral: bool,
    pub no_default_labels: bool,
    /// The runner's version, as the real one sends it.
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub runner_id: u64,
    pub runner_name: String,
    pub credential: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnregisterRequest {
    pub url: String,
    pub token: String,
    pub runner_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRequest {
    pub runner_id: u64,
    pub credential: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionOpened {
    pub session_id: String,
}

/// What a listener says about itself on every poll, as the real one does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollQuery {
    pub version: String,
    pub disable_update: bool,
}

/// A refused poll's body, as GitHub's broker answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerError {
    pub error_kind: String,
    pub message: String,
}

/// The `errorKind` of a poll refused for the runner's version.
pub const RUNNER_VERSION_TOO_OLD: &str = "RunnerVersionTooOld";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Poll {
    Job { job: Box<JobRec> },
    Update,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub succeeded: bool,
    /// The runner was shut down mid-job.
    pub shutdown: bool,
    pub message: Option<String>,
}

pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/register", post(register))
        .route("/unregister", post(unregister))
        .route("/sessions", post(open_session))
        .route("/sessions/{session}", delete(close_session))
        .route("/sessions/{session}/message", get(poll))
        .route("/sessions/{session}/jobs/{job}/renew", post(renew))
        .route("/sessions/{session}/jobs/{job}/finish", post(finish))
        .with_state(shared)
}

/// The scope a runner URL names (what `config.sh --url` was given).
fn scope_of(shared: &Shared, url: &str) -> Result<String, ApiError> {
    let target = GithubTarget::parse(url, None)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let scope = match target.scope {
        Scope::Org(org) => format!("orgs/{org}"),
        Scope::Repo { owner, name } => format!("repos/{owner}/{name}"),
        Scope::Enterprise(e) => format!("enterprises/{e}"),
    };
    if !shared.scope_exists(&scope) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{url} is not an organisation, repository or enterprise here"),
        ));
    }
    Ok(scope)
}

async fn register(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<RegisterRequest>,
) -> Result<Json<Registered>, ApiError> {
    let scope = scope_of(&shared, &req.url)?;
    let refused = shared
        .world()
        .runner_versions
        .refuse_registration(&req.version);
    if let Some(message) = refused {
        return Err(ApiError::new(StatusCode::NOT_FOUND, message));
    }
    let group = match req.runner_group.as_deref() {
        None | Some("") | Some("Default") | Some("default") => 1,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("Could not find any self-hosted runner group named \"{other}\"."),
            ))
        }
    };
    let runner = shared.world().register(
        Registration {
            scope,
            token: req.token,
            name: req.name,
            labels: req.labels,
            runner_group_id: group,
            replace: req.replace,
            ephemeral: req.ephemeral,
            no_default_labels: req.no_default_labels,
        },
        now(),
    )?;
    shared.changed.notify_waiters();
    Ok(Json(Registered {
        runner_id: runner.id,
        runner_name: runner.name,
        credential: runner.credential,
    }))
}

async fn unregister(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<UnregisterRequest>,
) -> Result<StatusCode, ApiError> {
    let scope = scope_of(&shared, &req.url)?;
    shared
        .world()
        .unregister(&scope, &req.token, req.runner_id, now())?;
    shared.changed.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

async fn open_session(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<SessionRequest>,
) -> Result<Json<SessionOpened>, ApiError> {
    let session_id = shared
        .world()
        .open_session(req.runner_id, &req.credential, now())?;
    Ok(Json(SessionOpened { session_id }))
}

async fn close_session(
    State(shared): State<Arc<Shared>>,
    Path(session): Path<String>,
) -> Result<StatusCode, ApiError> {
    shared.world().close_session(&session)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Long poll: answers as soon as a job (or an update) is there, or "nothing" after the
/// poll wait.
async fn poll(
    State(shared): State<Arc<Shared>>,
    Path(session): Path<String>,
    Query(me): Query<PollQuery>,
) -> Result<Response, ApiError> {
    let refused = (shared.world().runner_versions).refuse_messages(&me.version, me.disable_update);
    if let Some(message) = refused {
        let body = BrokerError {
            error_kind: RUNNER_VERSION_TOO_OLD.into(),
            message,
        };
        return Ok((StatusCode::FORBIDDEN, Json(body)).into_response());
    }
    let deadline = tokio::time::Instant::now() + shared.poll_wait;
    loop {
        let notified = shared.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let message = shared.world().poll(&session, now())?;
        match message {
            Some(Message::Job(job)) => return Ok(Json(Poll::Job { job }).into_response()),
            Some(Message::Update) => return Ok(Json(Poll::Update).into_response()),
            None => {}
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            // Seen alive at the end of the wait too.
            shared.world().poll_touch(&session, now());
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

async fn renew(
    State(shared): State<Arc<Shared>>,
    Path((session, job)): Path<(String, u64)>,
) -> Result<StatusCode, ApiError> {
    shared.world().renew_job(&session, job, now())?;
    Ok(StatusCode::NO_CONTENT)
}

async fn finish(
    State(shared): State<Arc<Shared>>,
    Path((session, job)): Path<(String, u64)>,
    Json(result): Json<JobResult>,
) -> Result<StatusCode, ApiError> {
    shared.world().finish_job(
        &session,
        job,
        result.succeeded,
        result.shutdown,
        result.message,
        now(),
    )?;
    shared.changed.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}
