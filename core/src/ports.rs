//! The narrow interfaces the domain talks through. The aws-sdk adapters implement them for
//! real; unit tests of pure logic may implement them in memory.

use crate::github::{GithubError, JitConfig, JitRequest, RateLimit, Runner, RunnerToken};
use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// A failure of a port's backing service, with what a caller needs to decide on a retry.
#[derive(Debug, thiserror::Error)]
#[error("{service} {operation} on {resource}: {message}")]
pub struct PortError {
    pub service: &'static str,
    pub operation: &'static str,
    pub resource: String,
    pub message: String,
    /// Whether trying again later can help (throttling, 5xx, network).
    pub retryable: bool,
}

/// Secrets Manager, as far as warmfleet uses it.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The current value of a secret, or `None` when it does not exist (or is being deleted).
    async fn get(&self, id: &str) -> Result<Option<SecretString>, PortError>;

    /// The value a secret had before its current one (Secrets Manager's `AWSPREVIOUS`
    /// stage), or `None` when it has none: what a rotation still accepts for a while.
    async fn get_previous(&self, id: &str) -> Result<Option<SecretString>, PortError>;

    /// Makes `value` the secret's current value: creates the secret with `tags`, or puts a
    /// new version when it exists.
    async fn put(
        &self,
        id: &str,
        value: &SecretString,
        tags: &[(&str, &str)],
    ) -> Result<(), PortError>;

    /// Puts a new current version of a secret that exists; `false` when it does not (then
    /// nothing is created).
    async fn update(&self, id: &str, value: &SecretString) -> Result<bool, PortError>;

    /// Deletes a secret at once, without a recovery window. One that does not exist is not
    /// an error.
    async fn delete(&self, id: &str) -> Result<(), PortError>;

    /// The ids of the secrets whose name starts with `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError>;
}

/// The result a lifecycle hook is completed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookResult {
    Continue,
    Abandon,
}

impl HookResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HookResult::Continue => "CONTINUE",
            HookResult::Abandon => "ABANDON",
        }
    }
}

/// What became of a completion or heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Done,
    /// The hook was not waiting (completed already, timed out, or never fired). Events are
    /// delivered at least once, so this is an expected outcome, not an error.
    NotPending,
}

/// An instance as its Auto Scaling group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub instance_id: String,
    pub group: String,
    /// `Pending:Wait`, `InService`, `Terminating:Wait`...
    pub lifecycle_state: String,
    pub protected_from_scale_in: bool,
}

/// Auto Scaling, as far as warmfleet uses it: lifecycle hooks and scale-in protection.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    async fn complete(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
        result: HookResult,
    ) -> Result<Completion, PortError>;

    /// Pushes the hook's timeout out by its heartbeat timeout.
    async fn heartbeat(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
    ) -> Result<Completion, PortError>;

    async fn set_protection(
        &self,
        group: &str,
        instance_id: &str,
        protected: bool,
    ) -> Result<(), PortError>;

    /// The instance's group, lifecycle state and protection; `None` once it left its group.
    async fn instance(&self, instance_id: &str) -> Result<Option<InstanceStatus>, PortError>;

    /// The instances of these groups (launching, in service, terminating), in one request.
    async fn instances(&self, groups: &[String]) -> Result<Vec<InstanceStatus>, PortError>;

    /// The instances in a group's warm pool.
    async fn warm_pool(&self, group: &str) -> Result<Vec<InstanceStatus>, PortError>;

    /// Marks an instance unhealthy, so that its group replaces it.
    async fn set_unhealthy(&self, instance_id: &str) -> Result<(), PortError>;

    /// Terminates an instance without lowering its group's desired capacity, so that the
    /// group launches (or resumes) a replacement at once.
    async fn replace(&self, instance_id: &str) -> Result<(), PortError>;
}

/// Auto Scaling's scaling policies, as the webhook receiver runs them.
#[async_trait]
pub trait Capacity: Send + Sync {
    /// Adds one instance to a group's desired capacity by running its job policy (a step
    /// scaling policy whose one step adds 1 from a breach of 0 up, with no warm-up): Auto
    /// Scaling computes the new capacity itself, capped at the group's maximum, so that
    /// concurrent calls never lose an increment as a read-modify-write of the desired
    /// capacity would.
    async fn add_one(&self, group: &str, policy: &str) -> Result<(), PortError>;
}

/// How far a job has got, as the webhook receiver records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStage {
    Queued,
    Started,
}

impl JobStage {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStage::Queued => "queued",
            JobStage::Started => "started",
        }
    }
}

/// What the webhook receiver has acted on, per job, where every instance of the function
/// sees it (a DynamoDB table, written conditionally): GitHub may deliver an event twice, or
/// out of order, and several function instances run at once.
#[async_trait]
pub trait JobLedger: Send + Sync {
    /// Records that `delivery` (GitHub's `X-GitHub-Delivery`) says a job reached `stage`.
    /// `true` when it is the first to, or when it is the same delivery again (GitHub's
    /// "Redeliver" keeps the GUID, and an SDK retry repeats the write) and its action was
    /// never marked [`done`](JobLedger::done). For `Queued`, only while the job has not been
    /// seen started: a late `queued` adds nothing.
    async fn record(&self, job_id: u64, stage: JobStage, delivery: &str)
        -> Result<bool, PortError>;

    /// Marks the action of a stage carried out: from now on every delivery of it is a
    /// repeat.
    async fn done(&self, job_id: u64, stage: JobStage) -> Result<(), PortError>;

    /// Undoes a record whose action then failed, so that any later delivery acts again.
    async fn forget(&self, job_id: u64, stage: JobStage) -> Result<(), PortError>;

    /// Notes how many of `group`'s runners are idle (record_metric, every minute): the
    /// queued jobs of the coming minute claim them before any adds an instance.
    async fn set_idle(&self, group: &str, idle: u32) -> Result<(), PortError>;

    /// Claims one of `group`'s idle runners for a queued job (atomically, across function
    /// instances); `false` when none is left to claim.
    async fn claim_idle(&self, group: &str) -> Result<bool, PortError>;
}

/// Whether each instance's runner is running a job, as its agent records it in a table:
/// the busy signal that costs no Auto Scaling call per job (scale-in protection costs two:
/// on and off). What scale-in chooses from and what record_metric counts busy; an instance
/// with no record has recorded nothing yet (a new agent, or an agent that protects instead).
#[async_trait]
pub trait Occupancy: Send + Sync {
    /// Records whether `instance_id` (of `group`) runs a job.
    async fn record(&self, instance_id: &str, group: &str, busy: bool) -> Result<(), PortError>;

    /// Every instance recorded busy, of any group.
    async fn busy(&self) -> Result<BTreeSet<String>, PortError>;

    /// What is recorded of these instances: busy (`true`) or idle (`false`); an instance
    /// with no record is missing from the answer.
    async fn of(&self, instance_ids: &[String]) -> Result<BTreeMap<String, bool>, PortError>;

    /// Every instance with a record, and its group.
    async fn recorded(&self) -> Result<Vec<(String, String)>, PortError>;

    /// Deletes an instance's record (one that is not there is no error).
    async fn forget(&self, instance_id: &str) -> Result<(), PortError>;
}

/// What the whole deployment spent of GitHub's rate limit in each of its windows, where
/// every function adds its requests: GitHub charges an installation's requests to one
/// window, whichever function made them, and the sweep (which can wait) keeps the
/// deployment within its share by this total.
#[async_trait]
pub trait GithubSpending: Send + Sync {
    /// Adds `requests` to the window that resets at `reset` (seconds since the epoch, as
    /// GitHub's `x-ratelimit-reset`).
    async fn spend(&self, reset: i64, requests: u64) -> Result<(), PortError>;

    /// What the deployment spent in the window that resets at `reset` (0 when nothing was
    /// recorded).
    async fn spent(&self, reset: i64) -> Result<u64, PortError>;
}

/// Where a command sent to an instance has got to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandState {
    /// Not delivered yet (the instance may be asleep).
    Pending,
    Running,
    Succeeded,
    /// It ran and failed, timed out or was cancelled.
    Failed {
        detail: String,
    },
    /// It never ran: the instance went away or did not answer in time.
    Undelivered {
        detail: String,
    },
}

impl CommandState {
    pub fn is_over(&self) -> bool {
        !matches!(self, CommandState::Pending | CommandState::Running)
    }
}

/// SSM Run Command, as far as warmfleet uses it: shell lines on one instance.
#[async_trait]
pub trait Commands: Send + Sync {
    /// Sends shell lines to one instance, to run within `execution` once they reach it and
    /// to reach it within `delivery` (else the command ends undelivered); `Ok(None)` when
    /// its SSM agent cannot be reached at all (never registered, or gone).
    async fn run(
        &self,
        instance_id: &str,
        lines: &[String],
        comment: &str,
        execution: Duration,
        delivery: Duration,
    ) -> Result<Option<String>, PortError>;

    async fn state(&self, command_id: &str, instance_id: &str) -> Result<CommandState, PortError>;
}

/// CloudWatch metrics, as far as warmfleet publishes them: one group's values at a time.
#[async_trait]
pub trait Metrics: Send + Sync {
    /// Counts, one value per metric.
    async fn publish(&self, group: &str, values: &[(&str, f64)]) -> Result<(), PortError>;

    /// Durations in seconds, several values of one metric at once (CloudWatch keeps each,
    /// so percentiles of them can be graphed and alarmed on).
    async fn publish_seconds(
        &self,
        group: &str,
        metric: &str,
        seconds: &[f64],
    ) -> Result<(), PortError>;
}

/// GitHub's runner registry: tokens, runners, deletion. `GithubClient` implements it.
#[async_trait]
pub trait RunnerRegistry: Send + Sync {
    async fn registration_token(&self, deadline: Instant) -> Result<RunnerToken, GithubError>;
    async fn remove_token(&self, deadline: Instant) -> Result<RunnerToken, GithubError>;
    async fn jit_config(
        &self,
        request: &JitRequest,
        deadline: Instant,
    ) -> Result<JitConfig, GithubError>;
    /// Every runner carrying `label` (all of them with `None`).
    async fn runners(
        &self,
        label: Option<&str>,
        deadline: Instant,
    ) -> Result<Vec<Runner>, GithubError>;
    /// The runner called exactly `name` (GitHub's `name` filter: one page, whatever its
    /// labels; a drained runner has none left).
    async fn runner_named(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<Runner>, GithubError>;
    async fn delete_runner(&self, runner_id: u64, deadline: Instant) -> Result<(), GithubError>;
    /// Removes a runner's custom labels (allowed while it runs a job): no further job can
    /// be routed to it. The first step of a drain.
    async fn remove_labels(&self, runner_id: u64, deadline: Instant) -> Result<(), GithubError>;
    /// Requests made so far.
    fn api_calls(&self) -> u64;
    /// The rate limit as GitHub's last answer stated it (`None` before any, or where
    /// GitHub enforces none).
    fn rate_limit_seen(&self) -> Option<RateLimit>;
    /// The rate limit as GitHub states it now, at no cost (`None`: none is enforced).
    async fn rate_limit(&self, deadline: Instant) -> Result<Option<RateLimit>, GithubError>;
}
