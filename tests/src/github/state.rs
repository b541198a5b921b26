//! The fake GitHub's state and its rules, without HTTP: tokens, runners, sessions and jobs.
//! Every method takes `now` so the rules can be tested without waiting.

use chrono::{DateTime, Duration, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The fake's tunables; every GitHub constant it imitates is here, with GitHub's value as
/// the default.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Registration and remove tokens, and installation tokens, live this long (GitHub: 1 h).
    pub token_ttl: Duration,
    /// A runner that has not polled for this long shows offline.
    pub offline_after: Duration,
    /// An offline persistent runner is deleted after this long (GitHub: 14 days).
    pub offline_max_age: Duration,
    /// An offline ephemeral runner is deleted after this long (GitHub: 1 day).
    pub ephemeral_offline_max_age: Duration,
    /// A running job whose runner has not renewed it for this long fails as lost.
    pub job_lock_timeout: Duration,
    /// Requests per hour per credential (GitHub: 5,000 for a PAT or an installation).
    pub rate_limit: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            token_ttl: Duration::hours(1),
            offline_after: Duration::seconds(30),
            offline_max_age: Duration::days(14),
            ephemeral_offline_max_age: Duration::days(1),
            job_lock_timeout: Duration::seconds(60),
            rate_limit: 5000,
        }
    }
}

/// What a registration-style token is for; GitHub's tokens are bound to one purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Registration,
    Remove,
}

#[derive(Debug, Clone)]
pub struct RunnerToken {
    pub scope: String,
    pub purpose: Purpose,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Label {
    pub id: u64,
    pub name: String,
    /// `read-only` or `custom`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerRec {
    pub id: u64,
    pub name: String,
    /// `orgs/acme`, `repos/acme/app` or `enterprises/big`.
    pub scope: String,
    pub os: String,
    pub labels: Vec<Label>,
    pub ephemeral: bool,
    pub runner_group_id: u64,
    #[serde(skip)]
    pub credential: String,
    /// A JIT runner's configuration works for one session only.
    pub jit: bool,
    pub sessions_opened: u32,
    #[serde(skip)]
    pub session: Option<String>,
    pub last_poll: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub job: Option<u64>,
    /// Set by the test-control API: the next poll tells the listener to update.
    pub update_pending: bool,
}

impl RunnerRec {
    pub fn online(&self, now: DateTime<Utc>, settings: &Settings) -> bool {
        self.session.is_some()
            && self
                .last_poll
                .is_some_and(|t| now - t < settings.offline_after)
    }

    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// When it was last seen online (its last poll, or its registration).
    fn last_seen(&self) -> DateTime<Utc> {
        self.last_poll.unwrap_or(self.created_at)
    }

    fn has_label(&self, name: &str) -> bool {
        self.labels
            .iter()
            .any(|l| l.name.eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// The runner was shut down or lost mid-job.
    Killed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRec {
    pub id: u64,
    pub name: String,
    pub scope: String,
    pub labels: Vec<String>,
    pub duration_secs: f64,
    /// The job's own steps fail (a failing test, say): outcome `failed`, not `killed`.
    pub fail: bool,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub outcome: Outcome,
    pub message: Option<String>,
    #[serde(skip)]
    pub renewed_at: Option<DateTime<Utc>>,
}

impl JobRec {
    /// A job just queued: `job-<id>`, one second long, its steps succeeding.
    pub fn queued(id: u64, scope: &str, labels: Vec<String>, now: DateTime<Utc>) -> JobRec {
        JobRec {
            id,
            name: format!("job-{id}"),
            scope: scope.to_owned(),
            labels,
            duration_secs: 1.0,
            fail: false,
            queued_at: now,
            started_at: None,
            finished_at: None,
            runner_id: None,
            runner_name: None,
            outcome: Outcome::Queued,
            message: None,
            renewed_at: None,
        }
    }
}

/// Why the fake refuses a runner-protocol or REST request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    Unprocessable(String),
}

/// A registration request as `config.sh` makes it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub scope: String,
    pub token: String,
    pub name: String,
    pub labels: Vec<String>,
    pub runner_group_id: u64,
    pub replace: bool,
    pub ephemeral: bool,
    pub no_default_labels: bool,
}

/// What a listener's poll returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Job(Box<JobRec>),
    Update,
}

/// Events a webhook receiver hears about (`workflow_job` actions).
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub action: &'static str,
    pub job: JobRec,
}

#[derive(Debug, Default)]
pub struct World {
    pub settings: Settings,
    next_id: u64,
    tokens: HashMap<String, RunnerToken>,
    pub runners: BTreeMap<u64, RunnerRec>,
    pub jobs: BTreeMap<u64, JobRec>,
    /// Events not yet delivered to the webhook sender.
    pub events: Vec<JobEvent>,
    /// Which runner versions may register and poll.
    pub runner_versions: super::versions::RunnerVersions,
}

pub fn random_token(prefix: &str, len: usize) -> String {
    let body: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{body}")
}

const DEFAULT_LABELS: [&str; 3] = ["self-hosted", "Linux", "X64"];

impl World {
    pub fn new(settings: Settings) -> Self {
        World {
            settings,
            next_id: 1,
            ..World::default()
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn mint_token(
        &mut self,
        scope: &str,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> (String, DateTime<Utc>) {
        // GitHub's tokens are 29 upper-case letters and digits today; nobody may rely on it.
        let token = random_token("A", 28).to_uppercase();
        let expires_at = now + self.settings.token_ttl;
        self.tokens.insert(
            token.clone(),
            RunnerToken {
                scope: scope.to_owned(),
                purpose,
                expires_at,
            },
        );
        (token, expires_at)
    }

    fn check_token(
        &self,
        token: &str,
        scope: &str,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let Some(t) = self.tokens.get(token) else {
            return Err(Refusal::Unauthorized("Invalid token".into()));
        };
        if t.purpose != purpose {
            return Err(Refusal::Unauthorized(format!(
                "The token is a {:?} token, not a {purpose:?} token",
                t.purpose
            )));
        }
        if t.expires_at <= now {
            return Err(Refusal::Unauthorized("The token has expired".into()));
        }
        if t.scope != scope {
            return Err(Refusal::Unauthorized(format!(
                "The token was issued for {}, not for {scope}",
                t.scope
            )));
        }
        Ok(())
    }

    fn labels(&mut self, names: &[String], defaults: bool) -> Vec<Label> {
        let mut labels = Vec::new();
        if defaults {
            for name in DEFAULT_LABELS {
                let id = self.id();
                labels.push(Label {
                    id,
                    name: name.to_owned(),
                    kind: "read-only".into(),
                });
            }
        }
        for name in names {
            let name = name.trim();
            if name.is_empty()
                || labels
                    .iter()
                    .any(|l: &Label| l.name.eq_ignore_ascii_case(name))
            {
                continue;
            }
            let id = self.id();
            labels.push(Label {
                id,
                name: name.to_owned(),
                kind: "custom".into(),
            });
        }
        labels
    }

    fn runner_named(&self, scope: &str, name: &str) -> Option<u64> {
        self.runners
            .values()
            .find(|r| r.scope == scope && r.name.eq_ignore_ascii_case(name))
            .map(|r| r.id)
    }

    /// `config.sh`: registers a runner with a registration token.
    pub fn register(
        &mut self,
        reg: Registration,
        now: DateTime<Utc>,
    ) -> Result<RunnerRec, Refusal> {
        self.check_token(&reg.token, &reg.scope, Purpose::Registration, now)?;
        if let Some(existing) = self.runner_named(&reg.scope, &reg.name) {
            if !reg.replace {
                return Err(Refusal::Conflict(format!(
                    "A runner exists with the same name {}",
                    reg.name
                )));
            }
            if self.runners.get(&existing).is_some_and(RunnerRec::busy) {
                return Err(Refusal::Unprocessable(format!(
                    "Runner {} is running a job and cannot be replaced",
                    reg.name
                )));
            }
            self.runners.remove(&existing);
        }
        let labels = self.labels(&reg.labels, !reg.no_default_labels);
        let id = self.id();
        let runner = RunnerRec {
            id,
            name: reg.name,
            scope: reg.scope,
            os: "Linux".into(),
            labels,
            ephemeral: reg.ephemeral,
            runner_group_id: reg.runner_group_id,
            credential: random_token("cred_", 40),
            jit: false,
            sessions_opened: 0,
            session: None,
            last_poll: None,
            created_at: now,
            job: None,
            update_pending: false,
        };
        self.runners.insert(id, runner.clone());
        Ok(runner)
    }

    /// `generate-jitconfig`: registers an ephemeral runner whose configuration works once.
    pub fn register_jit(
        &mut self,
        scope: &str,
        name: &str,
        labels: &[String],
        runner_group_id: u64,
        now: DateTime<Utc>,
    ) -> Result<RunnerRec, Refusal> {
        if self.runner_named(scope, name).is_some() {
            return Err(Refusal::Conflict(format!(
                "Already exists - A runner with the name {name} already exists."
            )));
        }
        let labels = self.labels(labels, false);
        let id = self.id();
        let runner = RunnerRec {
            id,
            name: name.to_owned(),
            scope: scope.to_owned(),
            os: "Linux".into(),
            labels,
            ephemeral: true,
            runner_group_id,
            credential: random_token("jit_", 40),
            jit: true,
            sessions_opened: 0,
            session: None,
            last_poll: None,
            created_at: now,
            job: None,
            update_pending: false,
        };
        self.runners.insert(id, runner.clone());
        Ok(runner)
    }

    /// `config.sh remove --token`: unregisters with a remove token.
    pub fn unregister(
        &mut self,
        scope: &str,
        token: &str,
        runner_id: u64,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        self.check_token(token, scope, Purpose::Remove, now)?;
        self.delete_runner(scope, runner_id)
    }

    /// REST delete: 404 when gone, 422 while busy.
    pub fn delete_runner(&mut self, scope: &str, runner_id: u64) -> Result<(), Refusal> {
        let Some(runner) = self.runners.get(&runner_id).filter(|r| r.scope == scope) else {
            return Err(Refusal::NotFound("Not Found".into()));
        };
        if runner.busy() {
            return Err(Refusal::Unprocessable(format!(
                "Bad request - Runner \"{}\" is still running a job",
                runner.name
            )));
        }
        self.runners.remove(&runner_id);
        Ok(())
    }

    /// REST: removes all custom labels; returns the read-only ones left.
    pub fn remove_custom_labels(
        &mut self,
        scope: &str,
        runner_id: u64,
    ) -> Result<Vec<Label>, Refusal> {
        let runner = self
            .runners
            .get_mut(&runner_id)
            .filter(|r| r.scope == scope)
            .ok_or_else(|| Refusal::NotFound("Not Found".into()))?;
        runner.labels.retain(|l| l.kind == "read-only");
        Ok(runner.labels.clone())
    }

    fn runner_by_credential(
        &mut self,
        runner_id: u64,
        credential: &str,
    ) -> Result<&mut RunnerRec, Refusal> {
        let runner = self.runners.get_mut(&runner_id).ok_or_else(|| {
            Refusal::NotFound(
                "The runner registration has been deleted from the server, please re-configure."
                    .into(),
            )
        })?;
        if runner.credential != credential {
            return Err(Refusal::Unauthorized("Invalid runner credential".into()));
        }
        Ok(runner)
    }

    /// The listener connects: one session per runner at a time.
    pub fn open_session(
        &mut self,
        runner_id: u64,
        credential: &str,
        now: DateTime<Utc>,
    ) -> Result<String, Refusal> {
        let settings = self.settings.clone();
        let runner = self.runner_by_credential(runner_id, credential)?;
        if runner.jit && runner.sessions_opened > 0 {
            return Err(Refusal::Forbidden(
                "The JIT configuration has already been used".into(),
            ));
        }
        if runner.session.is_some() && runner.online(now, &settings) {
            return Err(Refusal::Conflict(
                "A session for this runner already exists.".into(),
            ));
        }
        let session = random_token("sess_", 24);
        runner.session = Some(session.clone());
        runner.sessions_opened += 1;
        runner.last_poll = Some(now);
        Ok(session)
    }

    fn runner_of_session(&mut self, session: &str) -> Result<&mut RunnerRec, Refusal> {
        self.runners
            .values_mut()
            .find(|r| r.session.as_deref() == Some(session))
            .ok_or_else(|| {
                Refusal::NotFound("The session has expired or the runner was deleted".into())
            })
    }

    pub fn close_session(&mut self, session: &str) -> Result<(), Refusal> {
        let runner = self.runner_of_session(session)?;
        runner.session = None;
        Ok(())
    }

    /// A listener polls: marks it online and hands it the oldest queued job it matches.
    pub fn poll(&mut self, session: &str, now: DateTime<Utc>) -> Result<Option<Message>, Refusal> {
        let runner = self.runner_of_session(session)?;
        runner.last_poll = Some(now);
        if runner.busy() {
            return Ok(None);
        }
        if runner.update_pending {
            runner.update_pending = false;
            return Ok(Some(Message::Update));
        }
        let runner_id = runner.id;
        let runner = &self.runners[&runner_id];
        let job_id = self
            .jobs
            .values()
            .filter(|j| j.outcome == Outcome::Queued && scope_serves(&runner.scope, &j.scope))
            .find(|j| j.labels.iter().all(|l| runner.has_label(l)))
            .map(|j| j.id);
        let Some(job_id) = job_id else {
            return Ok(None);
        };
        let name = runner.name.clone();
        let job = self
            .jobs
            .get_mut(&job_id)
            .expect("job id taken from the map");
        job.outcome = Outcome::Running;
        job.started_at = Some(now);
        job.renewed_at = Some(now);
        job.runner_id = Some(runner_id);
        job.runner_name = Some(name);
        let job = job.clone();
        if let Some(r) = self.runners.get_mut(&runner_id) {
            r.job = Some(job_id);
        }
        self.events.push(JobEvent {
            action: "in_progress",
            job: job.clone(),
        });
        Ok(Some(Message::Job(Box::new(job))))
    }

    /// Marks a session's runner as seen (the end of a long poll).
    pub fn poll_touch(&mut self, session: &str, now: DateTime<Utc>) {
        if let Ok(runner) = self.runner_of_session(session) {
            runner.last_poll = Some(now);
        }
    }

    pub fn renew_job(
        &mut self,
        session: &str,
        job_id: u64,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let runner = self.runner_of_session(session)?;
        if runner.job != Some(job_id) {
            return Err(Refusal::NotFound(format!(
                "Job {job_id} is not this runner's"
            )));
        }
        runner.last_poll = Some(now);
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.renewed_at = Some(now);
        }
        Ok(())
    }

    /// The runner reports a job's end. `shutdown` marks a job the runner was stopped in.
    pub fn finish_job(
        &mut self,
        session: &str,
        job_id: u64,
        succeeded: bool,
        shutdown: bool,
        message: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let runner = self.runner_of_session(session)?;
        if runner.job != Some(job_id) {
            return Err(Refusal::NotFound(format!(
                "Job {job_id} is not this runner's"
            )));
        }
        runner.job = None;
        // GitHub deletes an ephemeral runner once its one job is done.
        if runner.ephemeral {
            let id = runner.id;
            self.runners.remove(&id);
        }
        let outcome = match (succeeded, shutdown) {
            (_, true) => Outcome::Killed,
            (true, false) => Outcome::Succeeded,
            (false, false) => Outcome::Failed,
        };
        self.end_job(job_id, outcome, message, now);
        Ok(())
    }

    fn end_job(
        &mut self,
        job_id: u64,
        outcome: Outcome,
        message: Option<String>,
        now: DateTime<Utc>,
    ) {
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.outcome = outcome;
            job.finished_at = Some(now);
            job.message = message;
            let job = job.clone();
            self.events.push(JobEvent {
                action: "completed",
                job,
            });
        }
    }

    pub fn enqueue_job(
        &mut self,
        scope: &str,
        name: Option<String>,
        labels: Vec<String>,
        duration_secs: f64,
        fail: bool,
        now: DateTime<Utc>,
    ) -> JobRec {
        let id = self.id();
        let mut job = JobRec::queued(id, scope, labels, now);
        job.name = name.unwrap_or(job.name);
        job.duration_secs = duration_secs;
        job.fail = fail;
        self.jobs.insert(id, job.clone());
        self.events.push(JobEvent {
            action: "queued",
            job: job.clone(),
        });
        job
    }

    /// Housekeeping GitHub does on its own: jobs whose runner went silent fail, long-offline
    /// runners are deleted. Returns the ids of deleted runners.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<u64> {
        let lock_timeout = self.settings.job_lock_timeout;
        let lost: Vec<(u64, u64)> = self
            .runners
            .values()
            .filter_map(|r| {
                let job = self.jobs.get(&r.job?)?;
                let renewed = job.renewed_at.unwrap_or(job.queued_at);
                (now - renewed > lock_timeout).then_some((r.id, job.id))
            })
            .collect();
        for (runner_id, job_id) in lost {
            if let Some(r) = self.runners.get_mut(&runner_id) {
                r.job = None;
            }
            self.end_job(
                job_id,
                Outcome::Killed,
                Some("The runner has lost communication with the server.".into()),
                now,
            );
        }
        let settings = self.settings.clone();
        let gone: Vec<u64> = self
            .runners
            .values()
            .filter(|r| !r.online(now, &settings) && !r.busy())
            .filter(|r| {
                let max_age = if r.ephemeral {
                    settings.ephemeral_offline_max_age
                } else {
                    settings.offline_max_age
                };
                now - r.last_seen() > max_age
            })
            .map(|r| r.id)
            .collect();
        for id in &gone {
            self.runners.remove(id);
        }
        gone
    }
}

/// Whether runners of `runner_scope` can take jobs of `job_scope`: the same scope, or an
/// organisation's runners for a job of one of its repositories.
fn scope_serves(runner_scope: &str, job_scope: &str) -> bool {
    if runner_scope == job_scope {
        return true;
    }
    match (
        runner_scope.strip_prefix("orgs/"),
        job_scope.strip_prefix("repos/"),
    ) {
        (Some(org), Some(repo)) => repo.split('/').next() == Some(org),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> (World, DateTime<Utc>) {
        (World::new(Settings::default()), Utc::now())
    }

    fn reg(token: &str, name: &str) -> Registration {
        Registration {
            scope: "orgs/acme".into(),
            token: token.into(),
            name: name.into(),
            labels: vec!["warmfleet".into(), "gpu".into()],
            runner_group_id: 1,
            replace: false,
            ephemeral: false,
            no_default_labels: true,
        }
    }

    #[test]
    fn tokens_are_bound_to_purpose_scope_and_time() {
        let (mut w, now) = world();
        let (reg_token, _) = w.mint_token("orgs/acme", Purpose::Registration, now);
        let (rm_token, _) = w.mint_token("orgs/acme", Purpose::Remove, now);
        assert!(matches!(
            w.register(reg(&rm_token, "a"), now),
            Err(Refusal::Unauthorized(_))
        ));
        let mut other = reg(&reg_token, "a");
        other.scope = "orgs/other".into();
        assert!(matches!(
            w.register(other, now),
            Err(Refusal::Unauthorized(_))
        ));
        let later = now + Duration::hours(1);
        assert!(matches!(
            w.register(reg(&reg_token, "a"), later),
            Err(Refusal::Unauthorized(_))
        ));
        // Like GitHub's, a registration token registers several runners within its hour.
        assert!(w.register(reg(&reg_token, "a"), now).is_ok());
        assert!(w.register(reg(&reg_token, "b"), now).is_ok());
    }

    #[test]
    fn a_name_clash_needs_replace() {
        let (mut w, now) = world();
        let (t, _) = w.mint_token("orgs/acme", Purpose::Registration, now);
        let first = w.register(reg(&t, "i-1"), now).unwrap();
        assert!(matches!(
            w.register(reg(&t, "i-1"), now),
            Err(Refusal::Conflict(_))
        ));
        let mut again = reg(&t, "i-1");
        again.replace = true;
        let second = w.register(again, now).unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(w.runners.len(), 1);
    }

    #[test]
    fn jobs_go_to_matching_idle_runners_and_busy_runners_cannot_be_deleted() {
        let (mut w, now) = world();
        let (t, _) = w.mint_token("orgs/acme", Purpose::Registration, now);
        let r = w.register(reg(&t, "i-1"), now).unwrap();
        let s = w.open_session(r.id, &r.credential, now).unwrap();
        w.enqueue_job("orgs/acme", None, vec!["arm64".into()], 1.0, false, now);
        let job = w.enqueue_job("repos/acme/app", None, vec!["GPU".into()], 1.0, false, now);
        assert!(matches!(w.poll(&s, now), Ok(Some(Message::Job(j))) if j.id == job.id));
        assert!(matches!(
            w.delete_runner("orgs/acme", r.id),
            Err(Refusal::Unprocessable(_))
        ));
        // Removing custom labels while busy is allowed and leaves nothing to match.
        assert!(w
            .remove_custom_labels("orgs/acme", r.id)
            .unwrap()
            .is_empty());
        w.finish_job(&s, job.id, true, false, None, now).unwrap();
        assert_eq!(w.jobs[&job.id].outcome, Outcome::Succeeded);
        w.enqueue_job("orgs/acme", None, vec!["gpu".into()], 1.0, false, now);
        assert_eq!(w.poll(&s, now), Ok(None));
        assert!(w.delete_runner("orgs/acme", r.id).is_ok());
        assert!(matches!(
            w.delete_runner("orgs/acme", r.id),
            Err(Refusal::NotFound(_))
        ));
    }

    #[test]
    fn silent_runners_lose_their_job_and_old_offline_runners_vanish() {
        let (mut w, now) = world();
        let (t, _) = w.mint_token("orgs/acme", Purpose::Registration, now);
        let r = w.register(reg(&t, "i-1"), now).unwrap();
        let s = w.open_session(r.id, &r.credential, now).unwrap();
        let job = w.enqueue_job("orgs/acme", None, vec![], 600.0, false, now);
        w.poll(&s, now).unwrap();
        assert!(w.tick(now + Duration::seconds(59)).is_empty());
        assert_eq!(w.jobs[&job.id].outcome, Outcome::Running);
        w.tick(now + Duration::seconds(61));
        assert_eq!(w.jobs[&job.id].outcome, Outcome::Killed);
        assert!(w.tick(now + Duration::days(13)).is_empty());
        assert_eq!(w.tick(now + Duration::days(15)), vec![r.id]);
    }

    #[test]
    fn a_jit_config_opens_one_session_only() {
        let (mut w, now) = world();
        let r = w
            .register_jit("orgs/acme", "i-9", &["x".into()], 1, now)
            .unwrap();
        assert!(r.ephemeral);
        let s = w.open_session(r.id, &r.credential, now).unwrap();
        w.close_session(&s).unwrap();
        assert!(matches!(
            w.open_session(r.id, &r.credential, now),
            Err(Refusal::Forbidden(_))
        ));
        assert!(matches!(
            w.register_jit("orgs/acme", "i-9", &["x".into()], 1, now),
            Err(Refusal::Conflict(_))
        ));
    }
}
