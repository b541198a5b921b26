//! Webhooks, as GitHub delivers them: hooks created with `POST /orgs/{org}/hooks` (or
//! `/repos/{owner}/{repo}/hooks`, or `--webhook-url` at start), a `ping` to each new hook,
//! then a `workflow_job` delivery for each job event (`queued`, `in_progress`, `completed`)
//! to every active hook subscribed to it. Each delivery is signed (`X-Hub-Signature-256`)
//! and carries `X-GitHub-Event`, `X-GitHub-Delivery` (a GUID) and `X-GitHub-Hook-ID`; a
//! hook's deliveries leave in order, one at a time, each waited on for at most 10 s, and a
//! failed one is not retried (GitHub redelivers only when asked).

use super::state::{JobEvent, Outcome};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// A hook given at start (`--webhook-url`, `--webhook-secret`): `workflow_job` events only.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
}

/// `sha256=<hex HMAC-SHA256 of the body>`, GitHub's signature header value.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One delivery: the event's name and its JSON body.
struct Delivery {
    event: &'static str,
    body: String,
}

struct Hook {
    /// `orgs/acme` or `repos/acme/app`: which jobs' events it hears.
    scope: String,
    events: Vec<String>,
    queue: mpsc::UnboundedSender<Delivery>,
}

impl Hook {
    fn wants(&self, event: &str, job_scope: &str) -> bool {
        let in_scope = match self.scope.strip_prefix("orgs/") {
            // A hook given at start hears everything.
            _ if self.scope.is_empty() => true,
            // An organisation's hook hears every repository of it.
            Some(org) => job_scope == self.scope || job_scope.starts_with(&format!("repos/{org}/")),
            None => job_scope == self.scope,
        };
        in_scope && self.events.iter().any(|e| e == event || e == "*")
    }
}

/// The hooks of the fake, each with its own sender.
#[derive(Default)]
pub(crate) struct Hooks {
    hooks: Mutex<Vec<Hook>>,
}

/// Sends one hook's deliveries, in order.
async fn sender(
    id: u64,
    url: String,
    secret: String,
    mut queue: mpsc::UnboundedReceiver<Delivery>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    while let Some(d) = queue.recv().await {
        let guid = crate::aws::json::uuid(&mut rand::thread_rng());
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/warmfleet-testbed")
            .header("x-github-event", d.event)
            .header("x-github-delivery", &guid)
            .header("x-github-hook-id", id.to_string());
        // A hook without a secret gets unsigned deliveries, as on GitHub.
        if !secret.is_empty() {
            request = request.header("x-hub-signature-256", signature(&secret, d.body.as_bytes()));
        }
        let sent = request.body(d.body).send().await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(%url, delivery = %guid, status = %r.status(), "webhook delivery refused")
            }
            Err(e) => tracing::warn!(%url, delivery = %guid, error = %e, "webhook delivery failed"),
        }
    }
}

impl Hooks {
    /// Adds a hook and sends it its `ping`; returns its id. Needs a tokio runtime.
    pub fn add(&self, scope: &str, url: &str, secret: &str, events: Vec<String>) -> u64 {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        let id = 400_000 + hooks.len() as u64 + 1;
        tokio::spawn(sender(id, url.to_owned(), secret.to_owned(), rx));
        let ping = json!({
            "zen": "Design for failure.",
            "hook_id": id,
            "hook": hook_json(id, scope, url, &events),
        });
        let _ = tx.send(Delivery {
            event: "ping",
            body: ping.to_string(),
        });
        hooks.push(Hook {
            scope: scope.to_owned(),
            events,
            queue: tx,
        });
        id
    }

    /// Queues a job event for every hook that hears it.
    pub fn job_event(&self, event: &JobEvent) {
        let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        let mut body = None;
        for h in hooks
            .iter()
            .filter(|h| h.wants("workflow_job", &event.job.scope))
        {
            let body = body.get_or_insert_with(|| workflow_job_payload(event).to_string());
            let _ = h.queue.send(Delivery {
                event: "workflow_job",
                body: body.clone(),
            });
        }
    }
}

/// A hook as the REST API shows it (the secret is never shown).
pub fn hook_json(id: u64, scope: &str, url: &str, events: &[String]) -> Value {
    let api = format!("https://api.github.com/{scope}/hooks/{id}");
    json!({
        "type": if scope.starts_with("orgs/") { "Organization" } else { "Repository" },
        "id": id,
        "name": "web",
        "active": true,
        "events": events,
        "config": {"url": url, "content_type": "json", "insecure_ssl": "0", "secret": "********"},
        "updated_at": "2026-01-01T00:00:00Z",
        "created_at": "2026-01-01T00:00:00Z",
        "url": api,
        "ping_url": format!("{api}/pings"),
        "deliveries_url": format!("{api}/deliveries"),
    })
}

/// The `workflow_job` payload of a job event, with the fields GitHub's schema requires of
/// `workflow_job`.
pub fn workflow_job_payload(event: &JobEvent) -> Value {
    let job = &event.job;
    let status = match event.action {
        "queued" => "queued",
        "in_progress" => "in_progress",
        _ => "completed",
    };
    let conclusion = (status == "completed").then_some(match job.outcome {
        Outcome::Succeeded => "success",
        _ => "failure",
    });
    let repo = job
        .scope
        .strip_prefix("repos/")
        .unwrap_or("acme/.github")
        .to_owned();
    let run_id = 9_000_000_000u64 + job.id;
    let api = format!("https://api.github.com/repos/{repo}");
    json!({
        "action": event.action,
        "workflow_job": {
            "id": job.id,
            "run_id": run_id,
            "run_attempt": 1,
            "run_url": format!("{api}/actions/runs/{run_id}"),
            "node_id": format!("CR_{}", job.id),
            "head_sha": "0000000000000000000000000000000000000000",
            "head_branch": "main",
            "url": format!("{api}/actions/jobs/{}", job.id),
            "html_url": format!("https://github.com/{repo}/actions/runs/{run_id}/job/{}", job.id),
            "check_run_url": format!("{api}/check-runs/{}", job.id),
            "workflow_name": "warmfleet",
            "name": job.name,
            "status": status,
            "conclusion": conclusion,
            "labels": job.labels,
            "steps": [],
            "runner_id": job.runner_id,
            "runner_name": job.runner_name,
            "runner_group_id": job.runner_id.map(|_| 1),
            "runner_group_name": job.runner_id.map(|_| "Default"),
            "created_at": job.queued_at,
            // Set from the start, as GitHub does; the moment a runner took the job from
            // `in_progress` on.
            "started_at": job.started_at.unwrap_or(job.queued_at),
            "completed_at": job.finished_at,
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" documentation.
        assert_eq!(
            super::signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
