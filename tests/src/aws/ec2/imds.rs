//! One instance's IMDSv2 endpoint: session tokens with a TTL, then the metadata warmfleet
//! reads (instance id, region, zone, instance tags, Auto Scaling target lifecycle state).
//! A test control, `PUT /_testbed/faults {"fail": N}`, makes its next N answers 500 (IMDS
//! not answering yet right after a resume, say).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What an instance's metadata service needs to know about the world.
pub trait MetadataSource: Send + Sync + 'static {
    /// World time now.
    fn now(&self) -> Duration;
    /// `autoscaling/target-lifecycle-state` of the instance, if it exists.
    fn target_lifecycle_state(&self, instance: &str) -> Option<String>;
    /// The instance's tags.
    fn tags(&self, instance: &str) -> Vec<(String, String)>;
}

use crate::aws::{REGION, ZONE};
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

struct Imds {
    instance: String,
    source: Arc<dyn MetadataSource>,
    /// token -> world time it expires
    tokens: Mutex<HashMap<String, Duration>>,
    /// Answers still to fail with 500.
    failing: AtomicU32,
}

#[derive(serde::Deserialize)]
struct Faults {
    fail: u32,
}

pub fn router(instance: String, source: Arc<dyn MetadataSource>) -> Router {
    let imds = Arc::new(Imds {
        instance,
        source,
        tokens: Mutex::new(HashMap::new()),
        failing: AtomicU32::new(0),
    });
    Router::new()
        .route("/latest/api/token", put(token))
        .route("/latest/meta-data/{*path}", get(metadata))
        .route("/_testbed/faults", put(set_faults))
        .with_state(imds)
}

async fn set_faults(
    State(imds): State<Arc<Imds>>,
    axum::Json(f): axum::Json<Faults>,
) -> StatusCode {
    imds.failing.store(f.fail, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

impl Imds {
    /// Whether this answer is one of those set to fail.
    fn fails(&self) -> bool {
        self.failing
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

async fn token(State(imds): State<Arc<Imds>>, headers: HeaderMap) -> Response {
    if imds.fails() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
    }
    let ttl = headers
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|t| (1..=21_600).contains(t));
    let Some(ttl) = ttl else {
        return (StatusCode::BAD_REQUEST, "").into_response();
    };
    let token = crate::github::state::random_token("AQAEA", 51);
    let expires = imds.source.now() + Duration::from_secs(ttl);
    imds.tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(token.clone(), expires);
    ([(TTL_HEADER, ttl.to_string())], token).into_response()
}

async fn metadata(
    State(imds): State<Arc<Imds>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    if imds.fails() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
    }
    let valid = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| {
            imds.tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(t)
                .copied()
        })
        .is_some_and(|expires| imds.source.now() < expires);
    if !valid {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    }
    let tags = || imds.source.tags(&imds.instance);
    let value = match path.trim_end_matches('/') {
        "instance-id" => Some(imds.instance.clone()),
        "placement/region" => Some(REGION.to_owned()),
        "placement/availability-zone" => Some(ZONE.to_owned()),
        "tags/instance" => Some(
            tags()
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        "autoscaling/target-lifecycle-state" => imds.source.target_lifecycle_state(&imds.instance),
        other => other
            .strip_prefix("tags/instance/")
            .and_then(|key| tags().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)),
    };
    match value {
        Some(v) => v.into_response(),
        None => (StatusCode::NOT_FOUND, "").into_response(),
    }
}
