//! Test controls under `/_testbed`, a prefix no GitHub path uses: queue jobs and read their
//! fate, read the request log, inject faults, inspect runners, ask a listener to update,
//! rotate the personal access tokens, set the oldest runner versions GitHub accepts.

use super::gate::{Fault, LoggedRequest};
use super::state::{JobRec, RunnerRec};
use super::versions::RunnerVersions;
use super::webhooks::{DeliveryFaults, DeliveryRec};
use super::{now, ApiError, Shared};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewJob {
    /// `orgs/acme` or `repos/acme/app`; the first organisation when absent.
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// The job's `runs-on` labels: a runner must carry all of them.
    pub labels: Vec<String>,
    pub duration_secs: f64,
    /// The job's own steps fail.
    #[serde(default)]
    pub fail: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerView {
    #[serde(flatten)]
    pub runner: RunnerRec,
    pub status: String,
    pub busy: bool,
}

pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/jobs", post(enqueue).get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/requests", get(requests).delete(clear_requests))
        .route("/faults", post(add_fault))
        .route("/webhooks/faults", put(set_webhook_faults))
        .route("/webhooks/deliveries", get(webhook_deliveries))
        .route("/runners", get(runners))
        .route("/runners/{id}/update", post(request_update))
        .route("/pats", put(set_pats))
        .route("/runner-versions", put(set_runner_versions))
        .with_state(shared)
}

async fn enqueue(
    State(shared): State<Arc<Shared>>,
    Json(job): Json<NewJob>,
) -> Result<(StatusCode, Json<JobRec>), ApiError> {
    let scope = match job.scope {
        Some(s) => s,
        None => format!(
            "orgs/{}",
            shared.orgs.first().ok_or_else(|| ApiError::new(
                StatusCode::BAD_REQUEST,
                "no organisation: give \"scope\""
            ))?
        ),
    };
    if !shared.scope_exists(&scope) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown scope {scope}"),
        ));
    }
    if !(job.duration_secs.is_finite() && job.duration_secs >= 0.0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "duration_secs must be a number >= 0",
        ));
    }
    let rec = shared.world().enqueue_job(
        &scope,
        job.name,
        job.labels,
        job.duration_secs,
        job.fail,
        now(),
    );
    shared.changed.notify_waiters();
    Ok((StatusCode::CREATED, Json(rec)))
}

async fn jobs(State(shared): State<Arc<Shared>>) -> Json<Vec<JobRec>> {
    Json(shared.world().jobs.values().cloned().collect())
}

async fn job(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
) -> Result<Json<JobRec>, ApiError> {
    shared
        .world()
        .jobs
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

async fn requests(State(shared): State<Arc<Shared>>) -> Json<Vec<LoggedRequest>> {
    Json(shared.gate.requests())
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.gate.clear_requests();
    StatusCode::NO_CONTENT
}

async fn add_fault(
    State(shared): State<Arc<Shared>>,
    Json(fault): Json<Fault>,
) -> Result<StatusCode, ApiError> {
    if fault.count == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "count must be at least 1",
        ));
    }
    if fault.status.is_none() && fault.latency_ms.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a fault needs a status or latency_ms",
        ));
    }
    shared.gate.add_fault(fault);
    Ok(StatusCode::NO_CONTENT)
}

/// Chaos for the `workflow_job` deliveries from now on (probabilities; all 0 turns it off).
async fn set_webhook_faults(
    State(shared): State<Arc<Shared>>,
    Json(faults): Json<DeliveryFaults>,
) -> Result<StatusCode, ApiError> {
    shared
        .hooks
        .set_faults(faults)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Pats {
    pats: Vec<String>,
}

/// The personal access tokens in force from now on (a rotation: the old one revoked).
async fn set_pats(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<Pats>,
) -> Result<StatusCode, ApiError> {
    if body.pats.iter().any(|p| p.trim().is_empty()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "a token is empty"));
    }
    shared.credentials.set_pats(body.pats);
    Ok(StatusCode::NO_CONTENT)
}

/// The oldest runner versions GitHub lets register and poll from now on.
async fn set_runner_versions(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<RunnerVersions>,
) -> StatusCode {
    shared.world().runner_versions = body;
    StatusCode::NO_CONTENT
}

async fn webhook_deliveries(State(shared): State<Arc<Shared>>) -> Json<Vec<DeliveryRec>> {
    Json(shared.hooks.deliveries())
}

async fn runners(State(shared): State<Arc<Shared>>) -> Json<Vec<RunnerView>> {
    let world = shared.world();
    let at = now();
    Json(
        world
            .runners
            .values()
            .map(|r| RunnerView {
                status: if r.online(at, &world.settings) {
                    "online"
                } else {
                    "offline"
                }
                .into(),
                busy: r.busy(),
                runner: r.clone(),
            })
            .collect(),
    )
}

async fn request_update(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    let mut world = shared.world();
    let runner = world.runners.get_mut(&id).ok_or_else(ApiError::not_found)?;
    runner.update_pending = true;
    drop(world);
    shared.changed.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}
