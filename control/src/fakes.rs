//! In-memory ports for the handlers' unit tests: they record what was asked and answer from
//! plain state. Integration tests use the testbed's real servers instead.

#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use chrono::Utc;
use secrecy::SecretString;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_core::github::{GithubError, JitConfig, JitRequest, RateLimit, Runner, RunnerToken};
use warmfleet_core::ports::{
    Capacity, CommandState, Commands, Completion, GithubSpending, HookResult, InstanceStatus,
    JobLedger, JobStage, Lifecycle, Metrics, Occupancy, PortError, RunnerRegistry, SecretStore,
};

/// A stored secret: its value and tags.
pub type Stored = (SecretString, Vec<(String, String)>);
/// One PutMetricData: the group and its values.
pub type Published = (String, Vec<(String, f64)>);

#[derive(Default)]
pub struct Secrets {
    pub values: Mutex<BTreeMap<String, Stored>>,
    /// Values in the `AWSPREVIOUS` stage.
    pub previous: Mutex<BTreeMap<String, SecretString>>,
    pub puts: Mutex<u32>,
    /// Every read fails as throttling would.
    pub unreadable: Mutex<bool>,
}

#[async_trait]
impl SecretStore for Secrets {
    async fn get(&self, id: &str) -> Result<Option<SecretString>, PortError> {
        if *self.unreadable.lock().unwrap() {
            return Err(PortError {
                service: "Secrets Manager",
                operation: "GetSecretValue",
                resource: id.to_owned(),
                message: "ThrottlingException: Rate exceeded".into(),
                retryable: true,
            });
        }
        Ok(self.values.lock().unwrap().get(id).map(|v| v.0.clone()))
    }
    async fn get_previous(&self, id: &str) -> Result<Option<SecretString>, PortError> {
        Ok(self.previous.lock().unwrap().get(id).cloned())
    }
    async fn put(
        &self,
        id: &str,
        value: &SecretString,
        tags: &[(&str, &str)],
    ) -> Result<(), PortError> {
        *self.puts.lock().unwrap() += 1;
        let tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.values
            .lock()
            .unwrap()
            .insert(id.to_owned(), (value.clone(), tags));
        Ok(())
    }
    async fn update(&self, id: &str, value: &SecretString) -> Result<bool, PortError> {
        let mut values = self.values.lock().unwrap();
        let Some(stored) = values.get_mut(id) else {
            return Ok(false);
        };
        *self.puts.lock().unwrap() += 1;
        stored.0 = value.clone();
        Ok(true)
    }
    async fn delete(&self, id: &str) -> Result<(), PortError> {
        self.values.lock().unwrap().remove(id);
        Ok(())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        Ok(self
            .values
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

#[derive(Default)]
pub struct Asg {
    pub instances: Mutex<Vec<InstanceStatus>>,
    /// (hook, instance, result) of every completion.
    pub completions: Mutex<Vec<(String, String, HookResult)>>,
    pub heartbeats: Mutex<Vec<String>>,
    pub unhealthy: Mutex<Vec<String>>,
    pub describes: Mutex<u32>,
}

#[async_trait]
impl Lifecycle for Asg {
    async fn complete(
        &self,
        _: &str,
        hook: &str,
        instance: &str,
        result: HookResult,
    ) -> Result<Completion, PortError> {
        self.completions
            .lock()
            .unwrap()
            .push((hook.to_owned(), instance.to_owned(), result));
        Ok(Completion::Done)
    }
    async fn heartbeat(&self, _: &str, _: &str, instance: &str) -> Result<Completion, PortError> {
        self.heartbeats.lock().unwrap().push(instance.to_owned());
        Ok(Completion::Done)
    }
    async fn set_protection(&self, _: &str, _: &str, _: bool) -> Result<(), PortError> {
        Ok(())
    }
    async fn instance(&self, id: &str) -> Result<Option<InstanceStatus>, PortError> {
        Ok(self
            .instances
            .lock()
            .unwrap()
            .iter()
            .find(|i| i.instance_id == id)
            .cloned())
    }
    async fn instances(&self, groups: &[String]) -> Result<Vec<InstanceStatus>, PortError> {
        *self.describes.lock().unwrap() += 1;
        Ok(self
            .instances
            .lock()
            .unwrap()
            .iter()
            .filter(|i| groups.contains(&i.group) && !i.lifecycle_state.starts_with("Warmed:"))
            .cloned()
            .collect())
    }
    async fn warm_pool(&self, group: &str) -> Result<Vec<InstanceStatus>, PortError> {
        Ok(self
            .instances
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i.group == group && i.lifecycle_state.starts_with("Warmed:"))
            .cloned()
            .collect())
    }
    async fn set_unhealthy(&self, id: &str) -> Result<(), PortError> {
        self.unhealthy.lock().unwrap().push(id.to_owned());
        Ok(())
    }
    async fn replace(&self, _: &str) -> Result<(), PortError> {
        unimplemented!("the Lambdas never replace an instance")
    }
}

/// GitHub: runners in memory; `fail` makes every token call fail as a 5xx would, `wait` as
/// a rate limit lifting only after the caller's deadline would.
#[derive(Default)]
pub struct Github {
    pub runners: Mutex<Vec<Runner>>,
    /// Registration tokens minted.
    pub tokens: Mutex<u32>,
    pub remove_tokens: Mutex<u32>,
    pub deleted: Mutex<Vec<u64>>,
    pub fail: Mutex<bool>,
    pub wait: Mutex<Option<std::time::Duration>>,
    /// Runners whose deletion fails as a 5xx would.
    pub undeletable: Mutex<Vec<u64>>,
    /// Runners someone else (the sweep) deletes just before this caller does.
    pub deleted_elsewhere: Mutex<Vec<u64>>,
    /// Runners whose custom labels were removed.
    pub unlabelled: Mutex<Vec<u64>>,
    /// What `rate_limit` answers (`None`: no limit enforced).
    pub rate: Mutex<Option<RateLimit>>,
    /// How many times every runner was listed.
    pub listings: Mutex<u32>,
    /// Listings fail after their first page, as a 5xx would.
    pub unlistable: Mutex<bool>,
}

impl Github {
    /// Requests GitHub would charge: a page per listing, a token, a deletion, a label removal.
    fn charged(&self) -> u64 {
        let n = |m: &Mutex<u32>| u64::from(*m.lock().unwrap());
        n(&self.listings)
            + n(&self.tokens)
            + n(&self.remove_tokens)
            + self.deleted.lock().unwrap().len() as u64
            + self.unlabelled.lock().unwrap().len() as u64
    }
}

fn server_error() -> GithubError {
    GithubError::Server {
        method: http::Method::POST,
        path: "/orgs/acme/actions/runners/registration-token".into(),
        status: http::StatusCode::BAD_GATEWAY,
        attempts: 3,
        message: "bad gateway".into(),
    }
}

#[async_trait]
impl RunnerRegistry for Github {
    async fn registration_token(&self, _: Instant) -> Result<RunnerToken, GithubError> {
        if *self.fail.lock().unwrap() {
            return Err(server_error());
        }
        if let Some(wait) = *self.wait.lock().unwrap() {
            return Err(GithubError::RateLimited {
                method: http::Method::POST,
                path: "/orgs/acme/actions/runners/registration-token".into(),
                wait,
            });
        }
        let mut n = self.tokens.lock().unwrap();
        *n += 1;
        Ok(RunnerToken {
            token: format!("REG{n}").into(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
        })
    }
    async fn remove_token(&self, _: Instant) -> Result<RunnerToken, GithubError> {
        let mut n = self.remove_tokens.lock().unwrap();
        *n += 1;
        Ok(RunnerToken {
            token: format!("REMOVE{n}").into(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
        })
    }
    async fn jit_config(&self, request: &JitRequest, _: Instant) -> Result<JitConfig, GithubError> {
        if *self.fail.lock().unwrap() {
            return Err(server_error());
        }
        let mut runners = self.runners.lock().unwrap();
        if runners.iter().any(|r| r.name == request.name) {
            return Err(GithubError::Rejected {
                method: http::Method::POST,
                path: "generate-jitconfig".into(),
                status: http::StatusCode::CONFLICT,
                message: "Already exists".into(),
            });
        }
        let runner: Runner = serde_json::from_value(serde_json::json!({
            "id": 100 + (runners.len() + self.deleted.lock().unwrap().len()) as u64, "name": request.name, "os": "Linux",
            "status": "offline", "busy": false,
            "labels": request.labels.iter().map(|l| serde_json::json!({"name": l, "type": "custom"})).collect::<Vec<_>>(),
        }))
        .unwrap();
        runners.push(runner.clone());
        Ok(JitConfig {
            runner,
            encoded_jit_config: "JIT".to_owned().into(),
        })
    }
    async fn runners(&self, label: Option<&str>, _: Instant) -> Result<Vec<Runner>, GithubError> {
        *self.listings.lock().unwrap() += 1;
        if *self.unlistable.lock().unwrap() {
            return Err(server_error());
        }
        Ok(self
            .runners
            .lock()
            .unwrap()
            .iter()
            .filter(|r| label.is_none_or(|l| r.has_label(l)))
            .cloned()
            .collect())
    }
    async fn runner_named(&self, name: &str, _: Instant) -> Result<Option<Runner>, GithubError> {
        Ok(self
            .runners
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.name == name)
            .cloned())
    }
    async fn delete_runner(&self, id: u64, _: Instant) -> Result<(), GithubError> {
        if self.undeletable.lock().unwrap().contains(&id) {
            return Err(server_error());
        }
        let mut runners = self.runners.lock().unwrap();
        if self.deleted_elsewhere.lock().unwrap().contains(&id) {
            runners.retain(|r| r.id != id);
        }
        if runners.iter().any(|r| r.id == id && r.busy) {
            return Err(GithubError::RunnerBusy { runner_id: id });
        }
        // As GitHub: a runner that is not there (any more) is 404.
        if !runners.iter().any(|r| r.id == id) {
            return Err(GithubError::NotFound {
                path: format!("/orgs/acme/actions/runners/{id}"),
                message: "Not Found".into(),
            });
        }
        runners.retain(|r| r.id != id);
        self.deleted.lock().unwrap().push(id);
        Ok(())
    }
    async fn remove_labels(&self, id: u64, _: Instant) -> Result<(), GithubError> {
        self.unlabelled.lock().unwrap().push(id);
        Ok(())
    }
    fn api_calls(&self) -> u64 {
        self.charged()
    }
    fn rate_limit_seen(&self) -> Option<RateLimit> {
        *self.rate.lock().unwrap()
    }
    async fn rate_limit(&self, _: Instant) -> Result<Option<RateLimit>, GithubError> {
        Ok(*self.rate.lock().unwrap())
    }
}

#[derive(Default)]
pub struct Ssm {
    /// Instances whose agent answers.
    pub reachable: Mutex<Vec<String>>,
    pub sent: Mutex<Vec<(String, Vec<String>)>>,
    /// Commands' states by id (Running when not set).
    pub states: Mutex<BTreeMap<String, CommandState>>,
    /// The delivery timeout of the last command sent.
    pub delivery: Mutex<Option<Duration>>,
}

#[async_trait]
impl Commands for Ssm {
    async fn run(
        &self,
        instance: &str,
        lines: &[String],
        _: &str,
        _: Duration,
        delivery: Duration,
    ) -> Result<Option<String>, PortError> {
        *self.delivery.lock().unwrap() = Some(delivery);
        if !self.reachable.lock().unwrap().iter().any(|i| i == instance) {
            return Ok(None);
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push((instance.to_owned(), lines.to_vec()));
        Ok(Some(format!("cmd-{}", sent.len())))
    }
    async fn state(&self, command: &str, _: &str) -> Result<CommandState, PortError> {
        let states = self.states.lock().unwrap();
        Ok(states
            .get(command)
            .cloned()
            .unwrap_or(CommandState::Running))
    }
}

#[derive(Default)]
pub struct Cloudwatch {
    pub published: Mutex<Vec<Published>>,
    /// (group, metric, values) of every duration published.
    pub durations: Mutex<Vec<(String, String, Vec<f64>)>>,
}

#[async_trait]
impl Metrics for Cloudwatch {
    async fn publish(&self, group: &str, values: &[(&str, f64)]) -> Result<(), PortError> {
        self.published.lock().unwrap().push((
            group.to_owned(),
            values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ));
        Ok(())
    }
    async fn publish_seconds(
        &self,
        group: &str,
        metric: &str,
        seconds: &[f64],
    ) -> Result<(), PortError> {
        self.durations.lock().unwrap().push((
            group.to_owned(),
            metric.to_owned(),
            seconds.to_vec(),
        ));
        Ok(())
    }
}

/// A group's desired capacity, raised one at a time up to its maximum.
#[derive(Default)]
pub struct Policies {
    /// (group, policy) of every execution.
    pub executed: Mutex<Vec<(String, String)>>,
    /// Every execution fails as throttling would.
    pub throttled: Mutex<bool>,
}

#[async_trait]
impl Capacity for Policies {
    async fn add_one(&self, group: &str, policy: &str) -> Result<(), PortError> {
        if *self.throttled.lock().unwrap() {
            return Err(PortError {
                service: "Auto Scaling",
                operation: "ExecutePolicy",
                resource: format!("{group}/{policy}"),
                message: "Throttling: Rate exceeded".into(),
                retryable: true,
            });
        }
        self.executed
            .lock()
            .unwrap()
            .push((group.to_owned(), policy.to_owned()));
        Ok(())
    }
}

/// A stage of a job as the ledger holds it: the stage, the delivery, whether done.
pub type Recorded = (JobStage, String, bool);

/// The job ledger's rules over a map of job id to its stages; clones share it.
#[derive(Default, Clone)]
pub struct Ledger {
    pub jobs: Arc<Mutex<BTreeMap<u64, Vec<Recorded>>>>,
    /// Each group's idle runners left to claim.
    pub idle: Arc<Mutex<BTreeMap<String, u32>>>,
}

#[async_trait]
impl JobLedger for Ledger {
    async fn record(
        &self,
        job_id: u64,
        stage: JobStage,
        delivery: &str,
    ) -> Result<bool, PortError> {
        let mut jobs = self.jobs.lock().unwrap();
        let seen = jobs.entry(job_id).or_default();
        let mine = seen.iter().find(|(s, _, _)| *s == stage);
        let acts = match mine {
            Some((_, by, done)) => by == delivery && !done,
            None => stage == JobStage::Started || seen.is_empty(),
        };
        if acts && mine.is_none() {
            seen.push((stage, delivery.to_owned(), false));
        }
        Ok(acts)
    }
    async fn done(&self, job_id: u64, stage: JobStage) -> Result<(), PortError> {
        if let Some(seen) = self.jobs.lock().unwrap().get_mut(&job_id) {
            for s in seen.iter_mut().filter(|s| s.0 == stage) {
                s.2 = true;
            }
        }
        Ok(())
    }
    async fn forget(&self, job_id: u64, stage: JobStage) -> Result<(), PortError> {
        if let Some(seen) = self.jobs.lock().unwrap().get_mut(&job_id) {
            seen.retain(|s| s.0 != stage);
        }
        Ok(())
    }
    async fn set_idle(&self, group: &str, idle: u32) -> Result<(), PortError> {
        self.idle.lock().unwrap().insert(group.to_owned(), idle);
        Ok(())
    }
    async fn claim_idle(&self, group: &str) -> Result<bool, PortError> {
        let mut idle = self.idle.lock().unwrap();
        match idle.get_mut(group) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// The deployment's account of GitHub requests per window; clones share it.
#[derive(Default, Clone)]
pub struct Spending {
    pub windows: Arc<Mutex<BTreeMap<i64, u64>>>,
}

#[async_trait]
impl GithubSpending for Spending {
    async fn spend(&self, reset: i64, requests: u64) -> Result<(), PortError> {
        *self.windows.lock().unwrap().entry(reset).or_default() += requests;
        Ok(())
    }
    async fn spent(&self, reset: i64) -> Result<u64, PortError> {
        Ok(self
            .windows
            .lock()
            .unwrap()
            .get(&reset)
            .copied()
            .unwrap_or(0))
    }
}

/// The runner table: what agents recorded (`true`: busy), counting the instances each read
/// asks for.
#[derive(Default)]
pub struct Runners {
    pub busy: BTreeMap<String, bool>,
    /// Each recorded instance's group (what `recorded` lists).
    pub groups: BTreeMap<String, String>,
    /// The records deleted.
    pub forgotten: Mutex<Vec<String>>,
    /// Every read fails as throttling would.
    pub fail: bool,
    pub asked: Mutex<Vec<usize>>,
}

impl Runners {
    fn read(&self, operation: &'static str) -> Result<(), PortError> {
        if self.fail {
            return Err(PortError {
                service: "DynamoDB",
                operation,
                resource: "runners".into(),
                message: "Throttling".into(),
                retryable: true,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Occupancy for Runners {
    async fn record(&self, _: &str, _: &str, _: bool) -> Result<(), PortError> {
        unreachable!("agents record, the control plane only reads")
    }

    async fn busy(&self) -> Result<BTreeSet<String>, PortError> {
        self.read("Scan")?;
        Ok(self
            .busy
            .iter()
            .filter(|(_, b)| **b)
            .map(|(i, _)| i.clone())
            .collect())
    }

    async fn of(&self, ids: &[String]) -> Result<BTreeMap<String, bool>, PortError> {
        self.asked.lock().unwrap().push(ids.len());
        self.read("BatchGetItem")?;
        Ok(ids
            .iter()
            .filter_map(|i| self.busy.get(i).map(|b| (i.clone(), *b)))
            .collect())
    }

    async fn recorded(&self) -> Result<Vec<(String, String)>, PortError> {
        self.read("Scan")?;
        Ok(self
            .groups
            .iter()
            .filter(|(i, _)| !self.forgotten.lock().unwrap().contains(*i))
            .map(|(i, g)| (i.clone(), g.clone()))
            .collect())
    }

    async fn forget(&self, id: &str) -> Result<(), PortError> {
        self.forgotten.lock().unwrap().push(id.to_owned());
        Ok(())
    }
}
