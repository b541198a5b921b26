//! A `warmfleet-testbed aws` process and an aws-sdk client for it.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use super::TESTBED;
use aws_sdk_autoscaling::types::LifecycleHookSpecification;
use aws_sdk_autoscaling::Client;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// A `warmfleet-testbed aws` process and an SDK client for it.
pub struct Aws {
    pub url: String,
    child: Child,
    pub asg: Client,
    /// For further aws-sdk clients of this world.
    pub config: aws_config::SdkConfig,
}

impl Drop for Aws {
    fn drop(&mut self) {
        // SIGTERM: the world stops its instance processes before it exits.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Aws {
    /// Starts the world; `instance_command` runs in every instance.
    pub async fn start(instance_command: Option<&str>, time_scale: &str) -> Aws {
        Aws::start_with(instance_command, time_scale, &[]).await
    }

    /// Starts the world with more arguments (`--world FILE`...).
    pub async fn start_with(
        instance_command: Option<&str>,
        time_scale: &str,
        args: &[&str],
    ) -> Aws {
        Aws::start_world(instance_command, time_scale, args, false).await
    }

    /// Starts the world; with `moto`, Secrets Manager too (moto_server from PATH, as
    /// `make test` sets it, or the testbed's own venv).
    pub async fn start_world(
        instance_command: Option<&str>,
        time_scale: &str,
        args: &[&str],
        moto: bool,
    ) -> Aws {
        let mut command = Command::new(TESTBED);
        command.args(["aws", "--listen", "127.0.0.1:0", "--time-scale", time_scale]);
        command.args(args);
        if !moto {
            command.arg("--no-moto");
        }
        command.args(["--resume-delay", "0s", "--hibernate-delay", "0s"]);
        command.arg("--boot-delay");
        match instance_command {
            // Time for the command to set itself up before hooks fire or it hibernates.
            Some(c) => command.args(["1s", "--instance-command", c]),
            None => command.arg("0s"),
        };
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(
            url.starts_with("http://"),
            "the AWS world did not start (its error is above): {line:?}"
        );
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_autoscaling::config::Credentials::new(
                "testbed", "testbed", None, None, "test",
            ))
            .endpoint_url(&url)
            .load()
            .await;
        Aws {
            url,
            child,
            asg: Client::new(&config),
            config,
        }
    }

    pub async fn create(
        &self,
        name: &str,
        min: i32,
        max: i32,
        desired: i32,
        hooks: Vec<LifecycleHookSpecification>,
    ) {
        self.asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(min)
            .max_size(max)
            .desired_capacity(desired)
            .set_lifecycle_hook_specification_list(Some(hooks))
            .send()
            .await
            .unwrap();
    }

    /// (instance id, lifecycle state) of the group's instances outside the warm pool.
    pub async fn instances(&self, group: &str) -> Vec<(String, String)> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .unwrap();
        let g = &out.auto_scaling_groups()[0];
        g.instances()
            .iter()
            .map(|i| {
                (
                    i.instance_id().unwrap().to_owned(),
                    i.lifecycle_state().unwrap().as_str().to_owned(),
                )
            })
            .collect()
    }

    pub async fn warm(&self, group: &str) -> Vec<(String, String)> {
        let out = self
            .asg
            .describe_warm_pool()
            .auto_scaling_group_name(group)
            .send()
            .await
            .unwrap();
        out.instances()
            .iter()
            .map(|i| {
                (
                    i.instance_id().unwrap().to_owned(),
                    i.lifecycle_state().unwrap().as_str().to_owned(),
                )
            })
            .collect()
    }

    /// Polls until `check` holds for the group's instances (or warm instances).
    pub async fn until<F>(
        &self,
        group: &str,
        warm: bool,
        what: &str,
        check: F,
    ) -> Vec<(String, String)>
    where
        F: Fn(&[(String, String)]) -> bool,
    {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let now = if warm {
                self.warm(group).await
            } else {
                self.instances(group).await
            };
            if check(&now) {
                return now;
            }
            assert!(Instant::now() < until, "never {what}: {now:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the group holds exactly one instance, in service; its id.
    pub async fn sole_in_service(&self, group: &str) -> String {
        let running = self
            .until(group, false, "one instance in service", |i| {
                i.len() == 1 && i[0].1 == "InService"
            })
            .await;
        running[0].0.clone()
    }

    pub async fn set_desired(&self, group: &str, desired: i32) {
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(desired)
            .send()
            .await
            .unwrap();
    }

    pub async fn complete(&self, group: &str, hook: &str, instance: &str) {
        self.asg
            .complete_lifecycle_action()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(hook)
            .instance_id(instance)
            .lifecycle_action_result("CONTINUE")
            .send()
            .await
            .unwrap();
    }

    /// The instance's process record (root, IMDS URL, pid, running/hibernated/stopped).
    /// The world starts an instance's process just after the instance enters its state, so
    /// the record may take a moment to appear.
    pub async fn instance(&self, id: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let all: Vec<Value> = reqwest::get(format!("{}/_testbed/aws/instances", self.url))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(found) = all.into_iter().find(|i| i["id"] == id) {
                return found;
            }
            assert!(Instant::now() < until, "no process record for {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn effects(&self) -> Vec<Value> {
        self.control("effects").await
    }

    /// The first effect (its `effect` object) that `pred` accepts, waiting up to a minute.
    pub async fn until_effect(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let effects = self.effects().await;
            if let Some(e) = effects.iter().map(|e| &e["effect"]).find(|e| pred(e)) {
                return e.clone();
            }
            assert!(Instant::now() < until, "no such effect: {effects:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The world's calls so far, by `service:Operation`.
    pub async fn calls(&self) -> std::collections::BTreeMap<String, u64> {
        reqwest::get(format!("{}/_testbed/aws/calls", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A list from the world's control API (`/_testbed/aws/<what>`).
    pub async fn control(&self, what: &str) -> Vec<Value> {
        reqwest::get(format!("{}/_testbed/aws/{what}", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls a control list until `check` holds.
    pub async fn control_until<F>(&self, what: &str, check: F) -> Vec<Value>
    where
        F: Fn(&[Value]) -> bool,
    {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.control(what).await;
            if check(&now) {
                return now;
            }
            assert!(
                Instant::now() < until,
                "never as expected: {what}: {now:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
