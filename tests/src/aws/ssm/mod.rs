//! SSM Run Command over awsJson1.1 (`AmazonSSM.SendCommand`, `GetCommandInvocation`,
//! `ListCommandInvocations`, `ListCommands`, `CancelCommand`), for `AWS-RunShellScript` on
//! the instances named, and only those.
//!
//! This module is the model: commands, their invocations and how their status moves. The
//! world runs the scripts in the instances' environments and reports how they ended.
//!
//! An instance's SSM agent is up while its process runs (booted, not hibernated). Sending to
//! an instance whose agent never came up, or that is gone, fails with `InvalidInstanceId`.
//! An instance whose agent was up but is not now (hibernated, resuming) gets the command
//! when it is back; it ends `TimedOut` ("Delivery Timed Out") if that takes longer than the
//! command's `TimeoutSeconds`, and `Failed` ("Undeliverable") if the instance goes away.

use crate::aws::protocol::json::{required, strings, JsonError};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What the world knows of an instance's SSM agent right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Up,
    /// Booting, hibernated or resuming.
    Down,
    /// Terminated, or never existed.
    Gone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    InProgress,
    Success,
    Failed,
    TimedOut,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::InProgress => "InProgress",
            Status::Success => "Success",
            Status::Failed => "Failed",
            Status::TimedOut => "TimedOut",
            Status::Cancelled => "Cancelled",
        }
    }

    fn done(self) -> bool {
        !matches!(self, Status::Pending | Status::InProgress)
    }
}

#[derive(Debug, Clone)]
struct Invocation {
    status: Status,
    details: &'static str,
    code: i32,
    stdout: String,
    stderr: String,
    started: Option<Duration>,
    ended: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Command {
    id: String,
    comment: String,
    script: Vec<String>,
    instances: Vec<String>,
    requested: Duration,
    execution_timeout: Duration,
    delivery_timeout: Duration,
    invocations: BTreeMap<String, Invocation>,
}

/// A script to start now in an instance.
#[derive(Debug, Clone)]
pub struct Start {
    pub command_id: String,
    pub instance: String,
    pub script: String,
    /// World time it may run.
    pub timeout: Duration,
}

/// How a script run ended.
#[derive(Debug, Clone)]
pub enum Ended {
    Exited {
        code: i32,
        stdout: String,
        stderr: String,
    },
    TimedOut {
        stdout: String,
        stderr: String,
    },
    Cancelled,
}

#[derive(Default)]
pub struct Ssm {
    commands: Vec<Command>,
    /// Instances whose agent has been up (registered with SSM).
    registered: BTreeSet<String>,
    serial: u64,
}

/// AWS keeps this much of a script's output in `GetCommandInvocation`.
const OUTPUT_MAX: usize = 24_000;
/// And this much in `ListCommandInvocations` with details.
const PLUGIN_OUTPUT_MAX: usize = 2_500;
const PLUGIN: &str = "aws:runShellScript";
const DOCUMENT: &str = "AWS-RunShellScript";

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn seconds_param(
    input: &Value,
    name: &str,
    default: u64,
    range: (u64, u64),
) -> Result<Duration, JsonError> {
    let v = match input.get("Parameters").and_then(|p| p.get(name)) {
        None => return Ok(Duration::from_secs(default)),
        Some(Value::Array(v)) if v.len() == 1 => v[0].as_str().and_then(|s| s.parse::<u64>().ok()),
        Some(_) => None,
    };
    match v {
        Some(n) if (range.0..=range.1).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(JsonError::new(
            "InvalidParameters",
            format!(
                "Parameter \"{name}\" must be one number of seconds from {} to {}",
                range.0, range.1
            ),
        )),
    }
}

impl Ssm {
    /// What the agent's state means to SSM; remembers agents that have come up.
    fn reach(&mut self, instance: &str, agent: Agent) -> Agent {
        match agent {
            Agent::Up => {
                self.registered.insert(instance.to_owned());
                Agent::Up
            }
            Agent::Down if self.registered.contains(instance) => Agent::Down,
            // An agent that never registered is unknown to SSM.
            _ => Agent::Gone,
        }
    }

    /// Notes which agents are up (called on every world tick).
    pub fn observe(&mut self, instance: &str, agent: Agent) {
        self.reach(instance, agent);
    }

    pub fn handle(
        &mut self,
        op: &str,
        input: &Value,
        now: Duration,
        agent: impl Fn(&str) -> Agent,
        epoch: impl Fn(Duration) -> f64,
        iso: impl Fn(Duration) -> String,
    ) -> Result<Value, JsonError> {
        match op {
            "SendCommand" => self.send(input, now, agent, &epoch),
            "GetCommandInvocation" => {
                let id = required(input, "CommandId")?;
                let instance = required(input, "InstanceId")?;
                if let Some(p) = input.get("PluginName").and_then(Value::as_str) {
                    if p != PLUGIN {
                        return Err(JsonError::new(
                            "InvalidPluginName",
                            format!("plugin {p} is not in the document"),
                        ));
                    }
                }
                let command = self.commands.iter().find(|c| c.id == id);
                let inv = command.and_then(|c| c.invocations.get(instance).map(|i| (c, i)));
                let Some((c, inv)) = inv else {
                    return Err(JsonError::new("InvocationDoesNotExist", ""));
                };
                let stamp = |t: Option<Duration>| t.map(&iso).unwrap_or_default();
                let elapsed = match (inv.started, inv.ended) {
                    (Some(s), Some(e)) => format!("PT{:.3}S", (e - s).as_secs_f64()),
                    _ => String::new(),
                };
                Ok(json!({
                    "CommandId": c.id,
                    "InstanceId": instance,
                    "Comment": c.comment,
                    "DocumentName": DOCUMENT,
                    "DocumentVersion": "$DEFAULT",
                    "PluginName": PLUGIN,
                    "ResponseCode": inv.code,
                    "ExecutionStartDateTime": stamp(inv.started),
                    "ExecutionElapsedTime": elapsed,
                    "ExecutionEndDateTime": stamp(inv.ended),
                    "Status": inv.status.as_str(),
                    "StatusDetails": inv.details,
                    "StandardOutputContent": truncate(&inv.stdout, OUTPUT_MAX),
                    "StandardOutputUrl": "",
                    "StandardErrorContent": truncate(&inv.stderr, OUTPUT_MAX),
                    "StandardErrorUrl": "",
                }))
            }
            "ListCommandInvocations" => {
                let details = input
                    .get("Details")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let rows: Vec<Value> = self
                    .matching(input)
                    .flat_map(|c| {
                        c.invocations
                            .iter()
                            .filter(|(i, _)| {
                                input
                                    .get("InstanceId")
                                    .and_then(Value::as_str)
                                    .is_none_or(|want| want == *i)
                            })
                            .map(move |(i, inv)| (c, i, inv))
                    })
                    .map(|(c, instance, inv)| {
                        let mut row = json!({
                            "CommandId": c.id,
                            "InstanceId": instance,
                            "InstanceName": "",
                            "Comment": c.comment,
                            "DocumentName": DOCUMENT,
                            "DocumentVersion": "$DEFAULT",
                            "RequestedDateTime": epoch(c.requested),
                            "Status": inv.status.as_str(),
                            "StatusDetails": inv.details,
                            "TraceOutput": "",
                            "StandardOutputUrl": "",
                            "StandardErrorUrl": "",
                            "CommandPlugins": [],
                        });
                        if details {
                            let mut plugin = json!({
                                "Name": PLUGIN,
                                "Status": inv.status.as_str(),
                                "StatusDetails": inv.details,
                                "ResponseCode": inv.code,
                                "Output": truncate(&inv.stdout, PLUGIN_OUTPUT_MAX),
                            });
                            if let Some(s) = inv.started {
                                plugin["ResponseStartDateTime"] = json!(epoch(s));
                            }
                            if let Some(e) = inv.ended {
                                plugin["ResponseFinishDateTime"] = json!(epoch(e));
                            }
                            row["CommandPlugins"] = json!([plugin]);
                        }
                        row
                    })
                    .collect();
                Ok(json!({ "CommandInvocations": rows }))
            }
            "ListCommands" => {
                let rows: Vec<Value> = self.matching(input).map(|c| describe(c, &epoch)).collect();
                Ok(json!({ "Commands": rows }))
            }
            "CancelCommand" => {
                let id = required(input, "CommandId")?;
                let only = strings(input, "InstanceIds")?;
                let c = self
                    .commands
                    .iter_mut()
                    .find(|c| c.id == id)
                    .ok_or_else(|| JsonError::new("InvalidCommandId", ""))?;
                for (instance, inv) in c.invocations.iter_mut() {
                    if (only.is_empty() || only.contains(instance)) && inv.status == Status::Pending
                    {
                        inv.status = Status::Cancelled;
                        inv.details = "Cancelled";
                        inv.ended = Some(now);
                    }
                }
                Ok(json!({}))
            }
            other => Err(JsonError::new(
                "UnknownOperationException",
                format!("SSM operation {other} is not modelled by the testbed"),
            )),
        }
    }

    /// The running invocations a `CancelCommand` asks to stop: the world ends their scripts.
    pub fn cancelling(input: &Value) -> (Option<String>, Vec<String>) {
        (
            input
                .get("CommandId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            strings(input, "InstanceIds").unwrap_or_default(),
        )
    }

    fn matching<'a>(&'a self, input: &'a Value) -> impl Iterator<Item = &'a Command> + 'a {
        let id = input.get("CommandId").and_then(Value::as_str);
        let instance = input.get("InstanceId").and_then(Value::as_str);
        self.commands.iter().rev().filter(move |c| {
            id.is_none_or(|id| id == c.id)
                && instance.is_none_or(|i| c.instances.iter().any(|x| x == i))
        })
    }

    fn send(
        &mut self,
        input: &Value,
        now: Duration,
        agent: impl Fn(&str) -> Agent,
        epoch: impl Fn(Duration) -> f64,
    ) -> Result<Value, JsonError> {
        let document = required(input, "DocumentName")?;
        if document != DOCUMENT {
            return Err(JsonError::new(
                "InvalidDocument",
                format!("Document {document} does not exist; the testbed runs only {DOCUMENT}"),
            ));
        }
        let instances = strings(input, "InstanceIds")?;
        if instances.is_empty() {
            return Err(JsonError::validation(
                "InstanceIds is required (the testbed does not model Targets)",
            ));
        }
        if instances.len() > 50 {
            return Err(JsonError::validation("at most 50 InstanceIds"));
        }
        let script = input
            .get("Parameters")
            .and_then(|p| p.get("commands"))
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                JsonError::new(
                    "InvalidParameters",
                    "Parameter \"commands\" is required: a list of shell lines",
                )
            })?;
        let execution_timeout = seconds_param(input, "executionTimeout", 3600, (1, 172_800))?;
        let delivery_timeout = match input.get("TimeoutSeconds") {
            None => Duration::from_secs(3600),
            Some(v) => match v.as_u64() {
                Some(n) if (30..=2_592_000).contains(&n) => Duration::from_secs(n),
                _ => {
                    return Err(JsonError::validation(
                        "TimeoutSeconds must be from 30 to 2592000",
                    ))
                }
            },
        };
        let unreachable: Vec<&String> = instances
            .iter()
            .filter(|i| self.reach(i, agent(i)) == Agent::Gone)
            .collect();
        if !unreachable.is_empty() {
            let list: Vec<String> = unreachable.iter().map(|i| format!("[{i}]")).collect();
            return Err(JsonError::new(
                "InvalidInstanceId",
                format!(
                    "Instances [{}] not in a valid state for account {}",
                    list.join(", "),
                    crate::aws::ACCOUNT
                ),
            ));
        }
        self.serial += 1;
        let id = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            self.serial,
            now.as_millis()
        );
        let invocations = instances
            .iter()
            .map(|i| {
                (
                    i.clone(),
                    Invocation {
                        status: Status::Pending,
                        details: "Pending",
                        code: -1,
                        stdout: String::new(),
                        stderr: String::new(),
                        started: None,
                        ended: None,
                    },
                )
            })
            .collect();
        let command = Command {
            id,
            comment: input
                .get("Comment")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            script,
            instances,
            requested: now,
            execution_timeout,
            delivery_timeout,
            invocations,
        };
        let out = describe(&command, &epoch);
        self.commands.push(command);
        Ok(json!({ "Command": out }))
    }

    /// Delivers pending invocations whose agent is up (the scripts to start now), and ends
    /// those that can no longer be delivered.
    pub fn tick(&mut self, now: Duration, agent: impl Fn(&str) -> Agent) -> Vec<Start> {
        let mut starts = vec![];
        let mut reach: BTreeMap<String, Agent> = BTreeMap::new();
        for c in &self.commands {
            for (i, inv) in &c.invocations {
                if inv.status == Status::Pending && !reach.contains_key(i) {
                    reach.insert(i.clone(), agent(i));
                }
            }
        }
        for (i, a) in &reach {
            self.observe(i, *a);
        }
        for c in &mut self.commands {
            for (instance, inv) in c.invocations.iter_mut() {
                if inv.status != Status::Pending {
                    continue;
                }
                match reach.get(instance) {
                    Some(Agent::Up) => {
                        inv.status = Status::InProgress;
                        inv.details = "InProgress";
                        inv.started = Some(now);
                        starts.push(Start {
                            command_id: c.id.clone(),
                            instance: instance.clone(),
                            script: c.script.join("\n"),
                            timeout: c.execution_timeout,
                        });
                    }
                    Some(Agent::Gone) => {
                        inv.status = Status::Failed;
                        inv.details = "Undeliverable";
                        inv.ended = Some(now);
                    }
                    _ if now >= c.requested + c.delivery_timeout => {
                        inv.status = Status::TimedOut;
                        inv.details = "Delivery Timed Out";
                        inv.ended = Some(now);
                    }
                    _ => {}
                }
            }
        }
        starts
    }

    /// Records how a script ended.
    pub fn ended(&mut self, command_id: &str, instance: &str, how: Ended, now: Duration) {
        let Some(inv) = self
            .commands
            .iter_mut()
            .find(|c| c.id == command_id)
            .and_then(|c| c.invocations.get_mut(instance))
        else {
            return;
        };
        inv.ended = Some(now);
        match how {
            Ended::Exited {
                code,
                stdout,
                stderr,
            } => {
                (inv.status, inv.details) = if code == 0 {
                    (Status::Success, "Success")
                } else {
                    (Status::Failed, "Failed")
                };
                inv.code = code;
                inv.stdout = stdout;
                inv.stderr = stderr;
            }
            Ended::TimedOut { stdout, stderr } => {
                (inv.status, inv.details) = (Status::TimedOut, "Execution Timed Out");
                inv.stdout = stdout;
                inv.stderr = stderr;
            }
            Ended::Cancelled => (inv.status, inv.details) = (Status::Cancelled, "Cancelled"),
        }
    }
}

/// A command as `SendCommand` and `ListCommands` print it, its status summed up over its
/// invocations.
fn describe(c: &Command, epoch: &impl Fn(Duration) -> f64) -> Value {
    let all: Vec<&Invocation> = c.invocations.values().collect();
    let count = |f: &dyn Fn(&Invocation) -> bool| all.iter().filter(|i| f(i)).count();
    let completed = count(&|i| i.status.done());
    let errors = count(&|i| matches!(i.status, Status::Failed | Status::TimedOut));
    let status = if all.iter().all(|i| i.status == Status::Pending) {
        Status::Pending
    } else if completed < all.len() {
        Status::InProgress
    } else if all.iter().all(|i| i.status == Status::Success) {
        Status::Success
    } else if all.iter().any(|i| i.status == Status::Cancelled) {
        Status::Cancelled
    } else if all.iter().any(|i| i.status == Status::TimedOut) {
        Status::TimedOut
    } else {
        Status::Failed
    };
    json!({
        "CommandId": c.id,
        "DocumentName": DOCUMENT,
        "DocumentVersion": "$DEFAULT",
        "Comment": c.comment,
        "Parameters": {
            "commands": c.script,
            "executionTimeout": [c.execution_timeout.as_secs().to_string()],
        },
        "InstanceIds": c.instances,
        "RequestedDateTime": epoch(c.requested),
        "ExpiresAfter": epoch(c.requested + c.delivery_timeout),
        "TimeoutSeconds": c.delivery_timeout.as_secs(),
        "Status": status.as_str(),
        "StatusDetails": status.as_str(),
        "TargetCount": all.len(),
        "CompletedCount": completed,
        "ErrorCount": errors,
        "DeliveryTimedOutCount": count(&|i| i.details == "Delivery Timed Out"),
        "MaxConcurrency": "50",
        "MaxErrors": "0",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(ssm: &mut Ssm, agent: Agent) -> Result<Value, JsonError> {
        let input = json!({"DocumentName": "AWS-RunShellScript", "InstanceIds": ["i-1"],
            "Parameters": {"commands": ["echo hi"]}, "TimeoutSeconds": 60});
        ssm.handle(
            "SendCommand",
            &input,
            Duration::ZERO,
            |_| agent,
            |_| 0.0,
            |_| String::new(),
        )
    }

    #[test]
    fn an_agent_that_never_came_up_is_an_invalid_instance() {
        let mut ssm = Ssm::default();
        let e = send(&mut ssm, Agent::Down).unwrap_err();
        assert_eq!(e.code, "InvalidInstanceId");
        assert!(e.message.contains("i-1"));
    }

    #[test]
    fn a_hibernated_instance_gets_its_command_on_resume_or_times_out() {
        let mut ssm = Ssm::default();
        ssm.observe("i-1", Agent::Up);
        send(&mut ssm, Agent::Down).unwrap();
        assert!(ssm
            .tick(Duration::from_secs(10), |_| Agent::Down)
            .is_empty());
        let starts = ssm.tick(Duration::from_secs(20), |_| Agent::Up);
        assert_eq!(starts.len(), 1);
        assert_eq!(starts[0].script, "echo hi");

        send(&mut ssm, Agent::Down).unwrap();
        ssm.tick(Duration::from_secs(61), |_| Agent::Down);
        let out = ssm
            .handle(
                "ListCommands",
                &json!({}),
                Duration::from_secs(61),
                |_| Agent::Down,
                |_| 0.0,
                |_| String::new(),
            )
            .unwrap();
        assert_eq!(out["Commands"][0]["Status"], "TimedOut");
        assert_eq!(out["Commands"][0]["DeliveryTimedOutCount"], 1);
    }

    #[test]
    fn a_pending_command_to_an_instance_that_goes_away_is_undeliverable() {
        let mut ssm = Ssm::default();
        ssm.observe("i-1", Agent::Up);
        let sent = send(&mut ssm, Agent::Down).unwrap();
        let id = sent["Command"]["CommandId"].as_str().unwrap().to_owned();
        ssm.tick(Duration::from_secs(1), |_| Agent::Gone);
        let out = ssm
            .handle(
                "GetCommandInvocation",
                &json!({"CommandId": id, "InstanceId": "i-1"}),
                Duration::from_secs(1),
                |_| Agent::Gone,
                |_| 0.0,
                |_| String::new(),
            )
            .unwrap();
        assert_eq!(out["Status"], "Failed");
        assert_eq!(out["StatusDetails"], "Undeliverable");
    }
}
