//! Webhooks, as GitHub delivers them: hooks created with `POST /orgs/{org}/hooks` (or
//! `/repos/{owner}/{repo}/hooks`, or `--webhook-url` at start), a `ping` to each new hook,
//! then a `workflow_job` delivery for each job event (`queued`, `in_progress`, `completed`)
//! to every active hook subscribed to it. Each delivery is signed (`X-Hub-Signature-256`)
//! and carries `X-GitHub-Event`, `X-GitHub-Delivery` (a GUID) and `X-GitHub-Hook-ID`; a
//! hook's deliveries leave as their events happen, each waited on for at most 10 s, without
//! waiting for the ones before (so a slow one can be overtaken: GitHub promises no order),
//! and a failed one is not retried (GitHub redelivers only when asked). For chaos, deliveries can
//! be dropped, held back (and so overtaken), redelivered and accompanied by forgeries
//! (`PUT /_testbed/webhooks/faults`); every attempt is recorded
//! (`GET /_testbed/webhooks/deliveries`).

use super::state::{JobEvent, Outcome};
use crate::lock;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
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

/// Chaos for `workflow_job` deliveries (the demo's `--chaos`, the soak), each with its
/// probability: lost on the way, held back so that later ones overtake it, redelivered
/// (the same GUID again, as GitHub's Redeliver sends it), or accompanied by a forgery (a
/// `queued` delivery for a job that does not exist, signed with another secret).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryFaults {
    pub drop: f64,
    pub delay: f64,
    /// Real milliseconds a held-back delivery waits: drawn between the two.
    pub delay_ms: [u64; 2],
    pub duplicate: f64,
    pub forge: f64,
}

impl DeliveryFaults {
    /// Names what is wrong with a fault setting.
    pub fn check(&self) -> Result<(), String> {
        for (name, p) in [
            ("drop", self.drop),
            ("delay", self.delay),
            ("duplicate", self.duplicate),
            ("forge", self.forge),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name}: a probability, 0 to 1 (got {p})"));
            }
        }
        if self.delay_ms[0] > self.delay_ms[1] {
            return Err("delay_ms: [shortest, longest]".into());
        }
        Ok(())
    }
}

/// The chaos that shaped a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Never sent.
    Dropped,
    /// Held back, so that later ones overtook it.
    Delayed,
    /// Sent again with the same GUID.
    Duplicate,
    /// Signed with another secret.
    Forged,
}

/// One attempt to deliver, as the demo's report counts them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRec {
    pub hook_id: u64,
    pub guid: String,
    pub event: String,
    pub fault: Option<Fault>,
    /// The receiver's HTTP status; none when it never answered (or was never asked).
    pub status: Option<u16>,
}

/// What the hooks' senders share: the faults to apply and the record of attempts.
#[derive(Default)]
struct Chaos {
    faults: Mutex<DeliveryFaults>,
    log: Mutex<Vec<DeliveryRec>>,
}

/// The hooks of the fake, each with its own sender.
#[derive(Default)]
pub(crate) struct Hooks {
    hooks: Mutex<Vec<Hook>>,
    chaos: Arc<Chaos>,
}

/// Where one hook's deliveries go and how they are signed.
#[derive(Clone)]
struct Target {
    id: u64,
    url: String,
    secret: String,
    client: reqwest::Client,
    chaos: Arc<Chaos>,
}

impl Target {
    /// Posts one delivery and records the answer.
    async fn post(&self, event: &str, guid: &str, body: String, fault: Option<Fault>) {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/warmfleet-testbed")
            .header("x-github-event", event)
            .header("x-github-delivery", guid)
            .header("x-github-hook-id", self.id.to_string());
        // A forgery is signed with a secret that is not the hook's.
        let secret = match fault {
            Some(Fault::Forged) => "not-the-hooks-secret",
            _ => &self.secret,
        };
        // A hook without a secret gets unsigned deliveries, as on GitHub.
        if !secret.is_empty() {
            request = request.header("x-hub-signature-256", signature(secret, body.as_bytes()));
        }
        let status = match request.body(body).send().await {
            Ok(r) => {
                // A forgery is meant to be refused.
                if !r.status().is_success() && fault != Some(Fault::Forged) {
                    tracing::warn!(url = %self.url, delivery = %guid, status = %r.status(), ?fault, "webhook delivery refused");
                }
                Some(r.status().as_u16())
            }
            Err(e) => {
                tracing::warn!(url = %self.url, delivery = %guid, error = %e, "webhook delivery failed");
                None
            }
        };
        self.record(event, guid, fault, status);
    }

    fn record(&self, event: &str, guid: &str, fault: Option<Fault>, status: Option<u16>) {
        lock(&self.chaos.log).push(DeliveryRec {
            hook_id: self.id,
            guid: guid.to_owned(),
            event: event.to_owned(),
            fault,
            status,
        });
    }
}

/// A forgery of a `workflow_job` delivery: the same shape, `queued`, for a job id no job has.
fn forgery(body: &str) -> String {
    let mut v: Value = serde_json::from_str(body).unwrap_or_default();
    v["action"] = json!("queued");
    v["workflow_job"]["id"] = json!(rand::thread_rng().gen_range(1u64 << 40..1u64 << 50));
    v.to_string()
}

/// Sends one hook's deliveries: each as soon as it is queued, without waiting for the ones
/// before it (GitHub promises no order; a slow answer does not hold the next delivery back).
async fn sender(target: Target, mut queue: mpsc::UnboundedReceiver<Delivery>) {
    while let Some(d) = queue.recv().await {
        let guid = crate::aws::protocol::json::uuid(&mut rand::thread_rng());
        let faults = if d.event == "workflow_job" {
            lock(&target.chaos.faults).clone()
        } else {
            DeliveryFaults::default()
        };
        // Drawn before any await: the generator is not Send.
        let (drop, forge, delay, duplicate) = {
            let mut rng = rand::thread_rng();
            let delay_ms = rng.gen_range(faults.delay_ms[0]..=faults.delay_ms[1]);
            (
                rng.gen_bool(faults.drop),
                rng.gen_bool(faults.forge),
                rng.gen_bool(faults.delay).then_some(delay_ms),
                rng.gen_bool(faults.duplicate),
            )
        };
        let target = target.clone();
        let send = async move {
            if forge {
                let forged = crate::aws::protocol::json::uuid(&mut rand::thread_rng());
                target
                    .post(d.event, &forged, forgery(&d.body), Some(Fault::Forged))
                    .await;
            }
            if drop {
                target.record(d.event, &guid, Some(Fault::Dropped), None);
                return;
            }
            if let Some(ms) = delay {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let fault = delay.map(|_| Fault::Delayed);
            target.post(d.event, &guid, d.body.clone(), fault).await;
            if duplicate {
                target
                    .post(d.event, &guid, d.body, Some(Fault::Duplicate))
                    .await;
            }
        };
        // The ping first, before any event.
        if d.event == "ping" {
            send.await;
        } else {
            tokio::spawn(send);
        }
    }
}

impl Hooks {
    /// Adds a hook and sends it its `ping`; returns its id. Needs a tokio runtime.
    pub fn add(&self, scope: &str, url: &str, secret: &str, events: Vec<String>) -> u64 {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut hooks = lock(&self.hooks);
        let id = 400_000 + hooks.len() as u64 + 1;
        let target = Target {
            id,
            url: url.to_owned(),
            secret: secret.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            chaos: self.chaos.clone(),
        };
        tokio::spawn(sender(target, rx));
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
        let hooks = lock(&self.hooks);
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

    /// Applies `faults` to the deliveries from now on.
    pub fn set_faults(&self, faults: DeliveryFaults) -> Result<(), String> {
        faults.check()?;
        *lock(&self.chaos.faults) = faults;
        Ok(())
    }

    /// Every delivery attempt so far.
    pub fn deliveries(&self) -> Vec<DeliveryRec> {
        lock(&self.chaos.log).clone()
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
        "repository": repository_json(&repo),
        "sender": account_json("warmfleet-bot", 5_000_001, "User"),
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

/// An account (`User` or `Organization`) as webhook payloads show it.
fn account_json(login: &str, id: u64, kind: &str) -> Value {
    let api = format!("https://api.github.com/users/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": format!("U_{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": api,
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": kind,
        "site_admin": false,
    })
}

/// The repository a job runs for (`owner/name`), as webhook payloads show it.
fn repository_json(full_name: &str) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap_or(("acme", full_name));
    let api = format!("https://api.github.com/repos/{full_name}");
    let html = format!("https://github.com/{full_name}");
    let mut repo = json!({
        "id": 7_000_001,
        "node_id": "R_7000001",
        "name": name,
        "full_name": full_name,
        "private": true,
        "owner": account_json(owner, 4_000_001, "Organization"),
        "html_url": html,
        "description": null,
        "fork": false,
        "url": api,
        "homepage": null,
        "language": null,
        "mirror_url": null,
        "license": null,
        "default_branch": "main",
        "clone_url": format!("{html}.git"),
        "git_url": format!("git://github.com/{full_name}.git"),
        "ssh_url": format!("git@github.com:{full_name}.git"),
        "svn_url": html,
        "size": 0,
        "forks": 0,
        "forks_count": 0,
        "open_issues": 0,
        "open_issues_count": 0,
        "stargazers_count": 0,
        "watchers": 0,
        "watchers_count": 0,
        "has_downloads": true,
        "has_issues": true,
        "has_projects": false,
        "has_wiki": false,
        "has_pages": false,
        "archived": false,
        "disabled": false,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "pushed_at": "2026-01-01T00:00:00Z",
    });
    // The API links every repository carries, templated as GitHub templates them.
    for (field, path) in [
        ("archive_url", "/{archive_format}{/ref}"),
        ("assignees_url", "/assignees{/user}"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("branches_url", "/branches{/branch}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("comments_url", "/comments{/number}"),
        ("commits_url", "/commits{/sha}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("contents_url", "/contents/{+path}"),
        ("contributors_url", "/contributors"),
        ("deployments_url", "/deployments"),
        ("downloads_url", "/downloads"),
        ("events_url", "/events"),
        ("forks_url", "/forks"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("hooks_url", "/hooks"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("issue_events_url", "/issues/events{/number}"),
        ("issues_url", "/issues{/number}"),
        ("keys_url", "/keys{/key_id}"),
        ("labels_url", "/labels{/name}"),
        ("languages_url", "/languages"),
        ("merges_url", "/merges"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("pulls_url", "/pulls{/number}"),
        ("releases_url", "/releases{/id}"),
        ("stargazers_url", "/stargazers"),
        ("statuses_url", "/statuses/{sha}"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("tags_url", "/tags"),
        ("teams_url", "/teams"),
        ("trees_url", "/git/trees{/sha}"),
    ] {
        repo[field] = json!(format!("{api}{path}"));
    }
    repo
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
