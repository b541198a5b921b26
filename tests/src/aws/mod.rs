//! `warmfleet-testbed aws`: the testbed's AWS world, on one port, for the real aws-sdk
//! clients (pointed here with `AWS_ENDPOINT_URL_<SERVICE>`; any credentials are accepted).
//!
//! It serves Auto Scaling (awsQuery), EventBridge (awsJson1.1) and Lambda functions run as
//! processes behind the Lambda Runtime API; Secrets Manager comes from moto. One folder per
//! service; this file holds the world's state, `router.rs` its one port. Each instance is
//! a process with its own root directory and IMDSv2 endpoint (`ec2/`); every
//! effect the model asks for (start, hibernate, resume, stop, lifecycle events) is recorded,
//! readable at `GET /_testbed/aws/effects`, and instances at `GET /_testbed/aws/instances`.
//! Lifecycle events go onto the event bus, where rules send them to functions.

pub mod autoscaling;
pub mod calls;
pub mod cloudwatch;
pub mod ec2;
pub mod eventbridge;
pub mod lambda;
pub mod protocol;
mod router;
pub mod secretsmanager;
pub mod ssm;
pub mod world_file;

use crate::lock;
use anyhow::Context;
use autoscaling::api::{self, Timestamps};
use autoscaling::model::{Asg, Effect, Place, PoolState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use ec2::instances::{Driver, InstanceInfo};
use eventbridge::{Dispatch, Events};
use lambda::{FunctionSpec, Lambda};
use protocol::json::JsonError;
use protocol::query::{Params, QueryError};
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// World seconds per real second.
    pub time_scale: f64,
    /// Run in every instance (as cloud-init would start the agent), by `sh -c`.
    pub instance_command: Option<String>,
    /// Where instance roots live; a temporary directory when absent.
    pub state_dir: Option<PathBuf>,
    /// World time a new instance boots before its launch hooks fire.
    pub boot_delay: Duration,
    /// World time a warm instance takes to resume.
    pub resume_delay: Duration,
    /// World time an instance takes to hibernate before it counts as warm.
    pub hibernate_delay: Duration,
    pub moto: MotoMode,
    /// Functions and rules to create at start.
    pub world_file: Option<PathBuf>,
    /// Seeds the world's randomness (event faults, ids) for repeatable runs.
    pub seed: Option<u64>,
    /// Instances are records only: no root directory, IMDS or process each (the scale
    /// benchmark's tens of thousands; a port each would run out of file descriptors).
    pub bare_instances: bool,
}

/// Where Secrets Manager comes from.
#[derive(Debug, Clone)]
pub enum MotoMode {
    /// No Secrets Manager.
    Off,
    /// `moto_server` from PATH, else a venv installed on first use.
    Auto,
    /// This `moto_server`.
    Path(PathBuf),
}

/// The one region, zone and account of this world, as every service prints them.
pub const REGION: &str = "us-east-1";
pub const ZONE: &str = "us-east-1a";
pub const ACCOUNT: &str = "123456789012";

/// World time: real time since start, times the scale.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    scale: f64,
}

impl Clock {
    pub fn now(&self) -> Duration {
        self.start.elapsed().mul_f64(self.scale)
    }

    /// Real time that `world` world time takes.
    pub fn real(&self, world: Duration) -> Duration {
        world.div_f64(self.scale)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// World seconds since the simulator started.
    pub at: f64,
    pub effect: Effect,
}

struct World {
    asg: Mutex<Asg>,
    clock: Clock,
    stamps: Timestamps,
    effects: Mutex<Vec<Recorded>>,
    requests: AtomicU64,
    /// API calls by operation, and throttling asked for.
    calls: calls::Calls,
    driver: mpsc::UnboundedSender<Effect>,
    instances: Arc<Mutex<BTreeMap<String, InstanceInfo>>>,
    endpoints: Endpoints,
    events: Mutex<Events>,
    lambda: Arc<Lambda>,
    deliveries: Mutex<Vec<Dispatch>>,
    ssm: Mutex<ssm::Ssm>,
    cloudwatch: Mutex<cloudwatch::CloudWatch>,
    /// Running SSM scripts by (command, instance), to cancel them.
    scripts: Mutex<BTreeMap<(String, String), CancellationToken>>,
    /// The environment of every process in an instance.
    instance_env: Vec<(String, String)>,
    shutdown: CancellationToken,
}

/// Where each service of this world is served.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    /// Auto Scaling, EventBridge, SSM and CloudWatch.
    pub autoscaling: String,
    /// moto: Secrets Manager and DynamoDB.
    pub secretsmanager: Option<String>,
}

impl Endpoints {
    /// What a process (instance or function) needs to find this world with the aws-sdk.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("AWS_REGION".to_owned(), REGION.to_owned())];
        for service in ["AUTO_SCALING", "EVENTBRIDGE", "SSM", "CLOUDWATCH"] {
            env.push((
                format!("AWS_ENDPOINT_URL_{service}"),
                self.autoscaling.clone(),
            ));
        }
        if let Some(url) = &self.secretsmanager {
            // moto serves DynamoDB too, on the same address.
            env.push(("AWS_ENDPOINT_URL_SECRETS_MANAGER".to_owned(), url.clone()));
            env.push(("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), url.clone()));
        }
        env
    }
}

/// What an instance's IMDS reads of the world.
struct Metadata(std::sync::Weak<World>);

impl ec2::imds::MetadataSource for Metadata {
    fn now(&self) -> Duration {
        self.0.upgrade().map(|w| w.clock.now()).unwrap_or_default()
    }

    fn target_lifecycle_state(&self, instance: &str) -> Option<String> {
        let world = self.0.upgrade()?;
        let asg = lock(&world.asg);
        let i = asg.instances.get(instance)?;
        Some(match i.destination {
            Place::AutoScalingGroup => "InService".to_owned(),
            Place::EC2 => "Terminated".to_owned(),
            Place::WarmPool => {
                let state = asg
                    .groups
                    .get(&i.group)
                    .and_then(|g| g.warm_pool.as_ref())
                    .map(|p| p.state);
                match state.unwrap_or(PoolState::Stopped) {
                    PoolState::Hibernated => "Warmed:Hibernated",
                    PoolState::Stopped => "Warmed:Stopped",
                    PoolState::Running => "Warmed:Running",
                }
                .to_owned()
            }
        })
    }

    fn tags(&self, instance: &str) -> Vec<(String, String)> {
        let Some(world) = self.0.upgrade() else {
            return vec![];
        };
        let asg = lock(&world.asg);
        let Some(i) = asg.instances.get(instance) else {
            return vec![];
        };
        let mut tags = vec![("aws:autoscaling:groupName".to_owned(), i.group.clone())];
        if let Some(g) = asg.groups.get(&i.group) {
            tags.extend(g.tags.iter().cloned());
        }
        tags
    }
}

impl World {
    /// Moves the model to now, records what it asked for, and delivers the events that
    /// are due.
    fn tick(self: &Arc<Self>) {
        let now = self.clock.now();
        let effects = lock(&self.asg).tick(now);
        let mut sends = vec![];
        if !effects.is_empty() {
            let mut log = lock(&self.effects);
            for effect in effects {
                tracing::debug!(?effect, "auto scaling");
                let _ = self.driver.send(effect.clone());
                self.ask_termination_policy(&effect);
                if let Some(event) = self.lifecycle_event(&effect, now) {
                    sends.extend(lock(&self.events).route(&event));
                }
                log.push(Recorded {
                    at: now.as_secs_f64(),
                    effect,
                });
            }
        }
        sends.extend(lock(&self.events).due(now, |t| self.stamps.at(t)));
        self.send(sends);
        self.tick_ssm(now);
        let runs = lock(&self.cloudwatch).evaluate(self.stamps.epoch(now));
        self.run_actions(runs, now);
    }

    /// Runs alarm actions: Auto Scaling policies are executed; other targets (SNS topics)
    /// are recorded in the alarm's history only.
    fn run_actions(&self, runs: Vec<cloudwatch::ActionRun>, now: Duration) {
        for run in runs {
            let outcome = match policy_of(&run.arn) {
                Some((group, policy)) => {
                    let cause = format!(
                        "At {} a monitor alarm {} in state {}",
                        self.stamps.at(now),
                        run.alarm,
                        run.state
                    );
                    let breach = run.metric_value.map(|m| (m, run.threshold));
                    lock(&self.asg)
                        .execute_policy(group, policy, breach, true, &cause, now)
                        .map(|o| format!("{o:?}"))
                        .map_err(|e| e.to_string())
                }
                None => Ok("recorded (the testbed has no SNS)".to_owned()),
            };
            tracing::info!(alarm = %run.alarm, arn = %run.arn, ?outcome, "alarm action");
            lock(&self.cloudwatch).action_done(&run, outcome, self.stamps.epoch(now));
        }
    }

    /// What SSM sees of an instance's agent.
    fn agent(&self, id: &str) -> ssm::Agent {
        use autoscaling::model::State;
        let state = lock(&self.asg).instances.get(id).map(|i| i.state);
        let process = lock(&self.instances).get(id).map(|i| i.process);
        match (state, process) {
            (None, _) | (_, Some("stopped")) => ssm::Agent::Gone,
            (Some(s), _) if s.is_gone() => ssm::Agent::Gone,
            (Some(State::Pending | State::WarmedPending), _) => ssm::Agent::Down,
            (_, Some("running")) => ssm::Agent::Up,
            _ => ssm::Agent::Down,
        }
    }

    /// Registers agents that came up, and starts the scripts that can be delivered.
    fn tick_ssm(self: &Arc<Self>, now: Duration) {
        let ids: Vec<String> = lock(&self.asg).instances.keys().cloned().collect();
        let starts = {
            let mut ssm = lock(&self.ssm);
            for id in &ids {
                ssm.observe(id, self.agent(id));
            }
            ssm.tick(now, |i| self.agent(i))
        };
        for start in starts {
            let info = lock(&self.instances).get(&start.instance).cloned();
            let cancel = CancellationToken::new();
            let key = (start.command_id.clone(), start.instance.clone());
            lock(&self.scripts).insert(key.clone(), cancel.clone());
            let world = self.clone();
            let timeout = self.clock.real(start.timeout);
            tokio::spawn(async move {
                let how = match info {
                    Some(info) => {
                        ec2::instances::run_script(
                            &info,
                            &world.instance_env,
                            &start.script,
                            timeout,
                            cancel,
                        )
                        .await
                    }
                    None => ssm::Ended::Exited {
                        code: -1,
                        stdout: String::new(),
                        stderr: "the instance has no process".to_owned(),
                    },
                };
                lock(&world.scripts).remove(&key);
                lock(&world.ssm).ended(&start.command_id, &start.instance, how, world.clock.now());
            });
        }
    }

    /// Asks a group's custom termination policy (its function, synchronously, with the
    /// documented input) and hands the answer back to Auto Scaling.
    fn ask_termination_policy(self: &Arc<Self>, effect: &Effect) {
        let Effect::ChooseTermination {
            group,
            function,
            capacity,
            candidates,
            spot,
        } = effect
        else {
            return;
        };
        let market = if *spot { "spot" } else { "on-demand" };
        let input = json!({
            "AutoScalingGroupARN": api::group_arn(group),
            "AutoScalingGroupName": group,
            "CapacityToTerminate": [
                {"AvailabilityZone": ZONE, "Capacity": capacity, "InstanceMarketOption": market}
            ],
            "Instances": candidates.iter().map(|id| json!({
                "AvailabilityZone": ZONE,
                "InstanceId": id,
                "InstanceType": "m7g.large",
                "InstanceMarketOption": market,
            })).collect::<Vec<_>>(),
            "Cause": "SCALE_IN",
        });
        let (world, group, function) = (self.clone(), group.clone(), function.clone());
        tokio::spawn(async move {
            let answer = match lambda::function_name(&function) {
                Some(name) => world.lambda.invoke(name, input).await.ok(),
                None => None,
            };
            let chosen: Option<Vec<String>> = answer
                .filter(|i| i.outcome == "success")
                .and_then(|i| i.response)
                .and_then(|r| serde_json::from_value(r["InstanceIDs"].clone()).ok());
            tracing::info!(group, ?chosen, "custom termination policy answered");
            let now = world.clock.now();
            lock(&world.asg).termination_chosen(&group, chosen.as_deref(), now);
        });
    }

    /// The EventBridge event of a lifecycle action, as Auto Scaling sends it.
    fn lifecycle_event(&self, effect: &Effect, now: Duration) -> Option<Value> {
        let Effect::LifecycleAction {
            group,
            hook,
            token,
            instance,
            transition,
            origin,
            destination,
            metadata,
        } = effect
        else {
            return None;
        };
        let kind = match transition {
            autoscaling::model::Transition::Launching => "launch",
            autoscaling::model::Transition::Terminating => "terminate",
        };
        let mut detail = json!({
            "LifecycleActionToken": token,
            "AutoScalingGroupName": group,
            "LifecycleHookName": hook,
            "EC2InstanceId": instance,
            "LifecycleTransition": transition.as_str(),
            "Origin": origin,
            "Destination": destination,
        });
        if let Some(m) = metadata {
            detail["NotificationMetadata"] = json!(m);
        }
        Some(lock(&self.events).envelope(
            &format!("EC2 Instance-{kind} Lifecycle Action"),
            "aws.autoscaling",
            vec![api::group_arn(group)],
            detail,
            &self.stamps.at(now),
        ))
    }

    /// Hands events to their functions, each after its (fault-injected) delay.
    fn send(&self, sends: Vec<Dispatch>) {
        if sends.is_empty() {
            return;
        }
        for d in &sends {
            let lambda = self.lambda.clone();
            let wait = self.clock.real(Duration::from_secs_f64(d.delay_seconds));
            let stop = self.shutdown.clone();
            let (function, payload, source) =
                (d.function.clone(), d.payload.clone(), d.event_id.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(wait) => {
                        if let Err(e) = lambda.invoke_async(&function, payload, &source) {
                            tracing::warn!(function, error = %e, "event not delivered");
                        }
                    }
                }
            });
        }
        lock(&self.deliveries).extend(sends);
    }

    fn create_function(&self, spec: FunctionSpec) -> Result<(), String> {
        self.lambda.put(spec)
    }
}

pub use router::serve;

/// The group and policy a scaling policy ARN names.
fn policy_of(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:autoscaling:")?;
    let (_, rest) = rest.split_once(":autoScalingGroupName/")?;
    rest.split_once(":policyName/")
}
