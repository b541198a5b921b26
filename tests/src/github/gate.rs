//! Every REST request passes here first: it is logged, may meet an injected fault,
//! is authenticated and is counted against its credential's rate limit.

use super::auth::{AuthError, Caller};
use super::{now, ApiError, Shared};
use crate::lock;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A fault to inject into the next `count` REST requests whose path starts with `path`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Fault {
    /// Path prefix the fault applies to (without `/api/v3`); all paths when absent.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "one")]
    pub count: u32,
    /// Answer with this status instead of serving the request.
    #[serde(default)]
    pub status: Option<u16>,
    /// With a 403/429: a secondary rate limit's `retry-after` seconds.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// With a 403/429: the primary limit is spent and resets in this many seconds.
    #[serde(default)]
    pub ratelimit_reset_in: Option<u64>,
    /// Delay the answer by this many milliseconds (the request is then served).
    #[serde(default)]
    pub latency_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub caller: &'static str,
    pub status: u16,
}

struct Window {
    used: u32,
    reset: DateTime<Utc>,
}

pub struct Gate {
    limit: u32,
    faults: Mutex<Vec<Fault>>,
    log: Mutex<Vec<LoggedRequest>>,
    windows: Mutex<HashMap<String, Window>>,
}

impl Gate {
    pub fn new(limit: u32) -> Self {
        Gate {
            limit,
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn add_fault(&self, fault: Fault) {
        lock(&self.faults).push(fault);
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.log).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.log).clear();
    }

    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let i = faults
            .iter()
            .position(|f| f.path.as_deref().is_none_or(|p| path.starts_with(p)))?;
        let fault = faults[i].clone();
        faults[i].count -= 1;
        if faults[i].count == 0 {
            faults.remove(i);
        }
        Some(fault)
    }

    /// Counts one request; `Err` with the reset time when the hour's budget is spent.
    fn spend(&self, key: &str, at: DateTime<Utc>) -> Result<(u32, DateTime<Utc>), DateTime<Utc>> {
        let mut windows = lock(&self.windows);
        let w = windows.entry(key.to_owned()).or_insert(Window {
            used: 0,
            reset: at + Duration::hours(1),
        });
        if w.reset <= at {
            w.used = 0;
            w.reset = at + Duration::hours(1);
        }
        if w.used >= self.limit {
            return Err(w.reset);
        }
        w.used += 1;
        Ok((self.limit - w.used, w.reset))
    }

    fn refund(&self, key: &str) -> u32 {
        let mut windows = lock(&self.windows);
        match windows.get_mut(key) {
            Some(w) => {
                w.used = w.used.saturating_sub(1);
                self.limit - w.used
            }
            None => self.limit,
        }
    }
}

fn rate_headers(resp: &mut Response, limit: u32, remaining: u32, reset: DateTime<Utc>) {
    let h = resp.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set("x-ratelimit-limit", limit.to_string());
    set("x-ratelimit-remaining", remaining.to_string());
    set("x-ratelimit-used", (limit - remaining).to_string());
    set("x-ratelimit-reset", reset.timestamp().to_string());
    set("x-ratelimit-resource", "core".into());
}

fn fault_response(fault: &Fault, status: StatusCode, at: DateTime<Utc>, limit: u32) -> Response {
    if let Some(reset_in) = fault.ratelimit_reset_in {
        let mut resp = ApiError::new(
            status,
            "API rate limit exceeded for this credential. (But here's the good news: \
             Authenticated requests get a higher rate limit.)",
        )
        .into_response();
        rate_headers(&mut resp, limit, 0, at + Duration::seconds(reset_in as i64));
        return resp;
    }
    if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
        let mut resp = ApiError::new(
            status,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        )
        .into_response();
        if let Some(secs) = fault.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        return resp;
    }
    let message = status.canonical_reason().unwrap_or("Server Error");
    ApiError::new(status, message).into_response()
}

pub(crate) async fn gate(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let at = now();
    let method = req.method().to_string();
    let full_path = req.uri().path().to_owned();
    let path = full_path
        .strip_prefix("/api/v3")
        .unwrap_or(&full_path)
        .to_owned();
    let query = req.uri().query().map(str::to_owned);
    let gate = &shared.gate;
    let log = |caller: &'static str, status: StatusCode| {
        lock(&gate.log).push(LoggedRequest {
            at,
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            caller,
            status: status.as_u16(),
        });
    };

    let fault = gate.take_fault(&path);
    if let Some(ms) = fault.as_ref().and_then(|f| f.latency_ms) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if let Some(fault) = &fault {
        if let Some(status) = fault.status.and_then(|s| StatusCode::from_u16(s).ok()) {
            log("fault", status);
            return fault_response(fault, status, at, gate.limit);
        }
    }

    let caller = match shared.credentials.authenticate(req.headers(), at) {
        Ok(c) => c,
        Err(e) => {
            let message = match e {
                AuthError::BadCredentials => "Bad credentials".to_owned(),
                AuthError::BadJwt(m) => m,
            };
            log("rejected", StatusCode::UNAUTHORIZED);
            return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
        }
    };
    let key = caller.rate_key();
    // GitHub charges nothing for reading the limit, and answers it when the limit is spent.
    let charged = path != "/rate_limit";
    let spent = if charged {
        gate.spend(&key, at)
    } else {
        let (_, remaining, reset) = rate_status(gate, &caller);
        Ok((remaining, reset))
    };
    let (remaining, reset) = match spent {
        Ok(r) => r,
        Err(reset) => {
            let mut resp = ApiError::new(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for this credential.",
            )
            .into_response();
            rate_headers(&mut resp, gate.limit, 0, reset);
            log(caller.kind(), StatusCode::FORBIDDEN);
            return resp;
        }
    };
    let kind = caller.kind();
    req.extensions_mut().insert(caller);
    let mut resp = next.run(req).await;
    // Nor a 304 to an authorised conditional request.
    let free = charged && resp.status() == StatusCode::NOT_MODIFIED && kind != "anonymous";
    let remaining = if free { gate.refund(&key) } else { remaining };
    rate_headers(&mut resp, gate.limit, remaining, reset);
    log(kind, resp.status());
    resp
}

/// `GET /rate_limit` reads the caller's window without spending it.
pub fn rate_status(gate: &Gate, caller: &Caller) -> (u32, u32, DateTime<Utc>) {
    let windows = lock(&gate.windows);
    match windows.get(&caller.rate_key()) {
        Some(w) => (gate.limit, gate.limit - w.used, w.reset),
        None => (gate.limit, gate.limit, now() + Duration::hours(1)),
    }
}
