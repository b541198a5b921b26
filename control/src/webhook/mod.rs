//! The webhook receiver (`warmfleet-webhook`, behind a Lambda function URL): GitHub's
//! `workflow_job` deliveries turned into capacity, at once, and into queue-time telemetry.
//!
//! In order, and stopping at the first that fails: a `POST`; a body within
//! [`MAX_BODY_BYTES`] (413); a valid `X-Hub-Signature-256` with the webhook secret, current
//! or previous (401) — nothing of the delivery is read before it; `ping` answered; events
//! other than `workflow_job` acknowledged and ignored; the payload parsed (400); the job
//! recorded in the ledger, so a repeated or late delivery acts once; then the decision
//! ([`decision`]) carried out. Nothing of the payload or the secret is logged.

pub mod decision;
pub mod payload;
pub mod signature;

use crate::config::WebhookSettings;
use decision::{Action, Group};
use payload::{JobNews, WorkflowJobEvent};
use serde_json::{json, Value};
use signature::{Keys, SignatureError};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};
use warmfleet_core::naming::{METRIC_JOB_QUEUE_TIME, POLICY_JOB_QUEUED};
use warmfleet_core::patience;
use warmfleet_core::ports::{Capacity, JobLedger, JobStage, Metrics, PortError, SecretStore};

/// The largest body read: `workflow_job` payloads are a few kilobytes; GitHub caps any
/// payload at 25 MB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long the webhook secret is kept before it is read again; a signature that matches
/// neither kept secret reads it again at once (at most every [`RELOAD_AFTER`]), so a
/// rotation is seen within seconds.
const KEEP_KEYS: Duration = Duration::from_secs(300);
const RELOAD_AFTER: Duration = Duration::from_secs(10);

/// A function URL request, as far as the receiver reads it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Header names in lowercase (function URLs pass them so).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The answer GitHub sees (and shows in the webhook's recent deliveries).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

fn answer(status: u16, body: Value) -> Response {
    Response { status, body }
}

pub struct Webhook<S, C, L, M> {
    pub secrets: S,
    pub capacity: C,
    pub ledger: L,
    pub metrics: M,
    pub settings: WebhookSettings,
    pub groups: Vec<Group>,
    keys: Mutex<Option<(Instant, Keys)>>,
}

impl<S: SecretStore, C: Capacity, L: JobLedger, M: Metrics> Webhook<S, C, L, M> {
    pub fn new(secrets: S, capacity: C, ledger: L, metrics: M, settings: WebhookSettings) -> Self {
        let groups = settings
            .groups
            .iter()
            .map(|g| Group::new(&settings.deployment, g, &settings.labels))
            .collect();
        Webhook {
            secrets,
            capacity,
            ledger,
            metrics,
            settings,
            groups,
            keys: Mutex::new(None),
        }
    }

    pub async fn handle(&self, request: &Request, deadline: Instant) -> Response {
        let delivery = request.header("x-github-delivery").unwrap_or("-");
        let until = deadline
            .checked_sub(self.settings.deadline_margin)
            .unwrap_or_else(Instant::now);
        if request.method != "POST" {
            return answer(405, json!({"error": "only POST is accepted"}));
        }
        if request.body.len() > MAX_BODY_BYTES {
            warn!(delivery, bytes = request.body.len(), "delivery too large");
            return answer(413, json!({"error": "the body is too large"}));
        }
        match self.verify(request, until).await {
            Ok(()) => {}
            Err(Refused::Signature(e)) => {
                warn!(delivery, reason = %e, "delivery refused");
                return answer(401, json!({"error": e.to_string()}));
            }
            Err(Refused::Secret(e)) => {
                warn!(delivery, error = %e, "the webhook secret could not be read");
                return answer(
                    503,
                    json!({"error": "the webhook secret could not be read"}),
                );
            }
        }
        let event = request.header("x-github-event").unwrap_or_default();
        match event {
            "ping" => return answer(200, json!({"ok": "pong"})),
            "workflow_job" => {}
            other => {
                info!(delivery, event = other, "event ignored");
                return answer(200, json!({"ok": format!("{other} events are ignored")}));
            }
        }
        let news = match serde_json::from_slice::<WorkflowJobEvent>(&request.body) {
            Ok(e) => e.news(),
            Err(e) => {
                // serde's message names the field and position, not the values.
                warn!(delivery, error = %e, "unreadable workflow_job payload");
                return answer(
                    400,
                    json!({"error": format!("not a workflow_job payload: {e}")}),
                );
            }
        };
        match self.act(&news, delivery, until).await {
            Ok(done) => {
                info!(delivery, ?done, "delivery handled");
                answer(200, json!({"ok": done}))
            }
            Err(e) => {
                warn!(delivery, error = %e, "delivery failed");
                let status = if e.retryable { 503 } else { 500 };
                answer(status, json!({"error": e.to_string()}))
            }
        }
    }

    /// The signature, against the kept secrets, and against freshly read ones when it
    /// matches neither (a rotation).
    async fn verify(&self, request: &Request, until: Instant) -> Result<(), Refused> {
        let header = request.header("x-hub-signature-256");
        let mut kept = self.keys.lock().await;
        let fresh = |at: &Instant, age: Duration| at.elapsed() < age;
        if let Some((at, keys)) = kept.as_ref() {
            if fresh(at, KEEP_KEYS) {
                match signature::verify(keys, header, &request.body) {
                    Err(SignatureError::Mismatch) if !fresh(at, RELOAD_AFTER) => {}
                    other => return other.map_err(Refused::Signature),
                }
            }
        }
        let keys = self.read_keys(until).await.map_err(Refused::Secret)?;
        let verdict = signature::verify(&keys, header, &request.body);
        *kept = Some((Instant::now(), keys));
        verdict.map_err(Refused::Signature)
    }

    async fn read_keys(&self, until: Instant) -> Result<Keys, PortError> {
        let id = &self.settings.secret_id;
        let current = patience::until(until, || self.secrets.get(id))
            .await?
            .ok_or_else(|| PortError {
                service: "Secrets Manager",
                operation: "GetSecretValue",
                resource: id.clone(),
                message: "the webhook secret does not exist".into(),
                retryable: false,
            })?;
        let previous = patience::until(until, || self.secrets.get_previous(id)).await?;
        Ok(Keys { current, previous })
    }

    /// Carries out what the news calls for, once per job: a repeated `queued`, or one that
    /// arrives after the job started, adds nothing; the same delivery again before its
    /// action was carried out (a retry, GitHub's "Redeliver") acts.
    async fn act(
        &self,
        news: &JobNews,
        delivery: &str,
        until: Instant,
    ) -> Result<String, PortError> {
        let Some(action) = decision::decide(news, &self.groups) else {
            return Ok("nothing to do".into());
        };
        let (job_id, stage) = match news {
            JobNews::Queued { job_id, .. } => (*job_id, JobStage::Queued),
            JobNews::Started { job_id, .. } => (*job_id, JobStage::Started),
            JobNews::Completed { .. } | JobNews::Other { .. } => return Ok("nothing to do".into()),
        };
        let first = patience::until(until, || self.ledger.record(job_id, stage, delivery)).await?;
        if !first {
            return Ok(format!("job {job_id} was {} already", stage.as_str()));
        }
        let outcome = self.carry_out(action, until).await;
        let marked = match &outcome {
            Ok(_) => self.ledger.done(job_id, stage).await,
            // So that a later delivery of this news acts again.
            Err(_) => self.ledger.forget(job_id, stage).await,
        };
        if let Err(e) = marked {
            // Done but not marked: only this same delivery, redelivered, could act again.
            warn!(job_id, error = %e, "could not update the job's record");
        }
        outcome
    }

    async fn carry_out(&self, action: Action, until: Instant) -> Result<String, PortError> {
        match action {
            Action::AddOne { group } => {
                // An idle runner takes the job: no instance for it (one claim per idle
                // runner record_metric counted; a failed claim errs towards capacity).
                match patience::until(until, || self.ledger.claim_idle(&group)).await {
                    Ok(true) => return Ok(format!("an idle runner of {group} takes it")),
                    Ok(false) => {}
                    Err(e) => warn!(group, error = %e, "claiming an idle runner failed"),
                }
                patience::until(until, || self.capacity.add_one(&group, POLICY_JOB_QUEUED)).await?;
                Ok(format!("one instance added to {group}"))
            }
            Action::RecordQueueTime { group, seconds } => {
                let values = [seconds];
                patience::until(until, || {
                    self.metrics
                        .publish_seconds(&group, METRIC_JOB_QUEUE_TIME, &values)
                })
                .await?;
                Ok(format!("queue time {seconds} s recorded for {group}"))
            }
        }
    }
}

enum Refused {
    Signature(SignatureError),
    Secret(PortError),
}

#[cfg(test)]
mod tests;
