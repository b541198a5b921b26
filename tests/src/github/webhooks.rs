//! Optional `workflow_job` webhooks, signed as GitHub signs them (`X-Hub-Signature-256`).

use super::state::JobEvent;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

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

impl Webhook {
    pub async fn send(&self, client: &reqwest::Client, event: &JobEvent) {
        let job = &event.job;
        let status = match event.action {
            "queued" => "queued",
            "in_progress" => "in_progress",
            _ => "completed",
        };
        let conclusion = (status == "completed").then_some(match job.outcome {
            super::state::Outcome::Succeeded => "success",
            _ => "failure",
        });
        let body = json!({
            "action": event.action,
            "workflow_job": {
                "id": job.id,
                "name": job.name,
                "status": status,
                "conclusion": conclusion,
                "labels": job.labels,
                "runner_id": job.runner_id,
                "runner_name": job.runner_name,
                "created_at": job.queued_at,
                "started_at": job.started_at,
                "completed_at": job.finished_at,
            },
        })
        .to_string();
        let result = client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_job")
            .header(
                "x-hub-signature-256",
                signature(&self.secret, body.as_bytes()),
            )
            .body(body)
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(url = %self.url, error = %e, "webhook delivery failed");
        }
    }
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
