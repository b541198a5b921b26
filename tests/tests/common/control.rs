//! The control plane on the testbed: the GitHub fake, the AWS world with moto, and the real
//! Lambda binaries run by the world through the Lambda Runtime API.

use super::aws::Aws;
use super::{Github, PAT, TESTBED};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_core::instance_secret::InstanceSecret;

/// A control-plane binary, built beside the testbed by `cargo test --workspace`.
pub fn lambda(name: &str) -> PathBuf {
    let path = std::path::Path::new(TESTBED).with_file_name(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo test --workspace` (or `cargo build -p warmfleet-control`)",
        path.display()
    );
    path
}

pub struct Plane {
    pub github: Github,
    pub aws: Aws,
    pub secrets: aws_sdk_secretsmanager::Client,
    _world: tempfile::NamedTempFile,
}

/// One function of the world file: name, binary, timeout (world seconds), extra env.
pub struct Function<'a> {
    pub name: &'a str,
    pub binary: &'a str,
    pub timeout: f64,
    /// Lambda's retries of a failed asynchronous invocation (0 to 2; AWS's default is 2).
    pub retries: u32,
    pub env: &'a [(&'a str, &'a str)],
}

pub const CREDENTIAL_SECRET: &str = "warmfleet/github";

impl Plane {
    /// A `Warmfleet` metric of `group` as CloudWatch holds it: each minute's `statistic`
    /// over the last hour.
    pub async fn metric(
        &self,
        group: &str,
        metric: &str,
        statistic: aws_sdk_cloudwatch::types::Statistic,
    ) -> Vec<f64> {
        use aws_sdk_cloudwatch::primitives::DateTime;
        use aws_sdk_cloudwatch::types::{Dimension, Statistic};
        let now = std::time::SystemTime::now();
        let stats = aws_sdk_cloudwatch::Client::new(&self.aws.config)
            .get_metric_statistics()
            .namespace("Warmfleet")
            .metric_name(metric)
            .dimensions(
                Dimension::builder()
                    .name("AutoScalingGroupName")
                    .value(group)
                    .build(),
            )
            .start_time(DateTime::from(now - Duration::from_secs(3600)))
            .end_time(DateTime::from(now + Duration::from_secs(3600)))
            .period(60)
            .statistics(statistic.clone())
            .send()
            .await
            .unwrap();
        stats
            .datapoints()
            .iter()
            .filter_map(|d| match statistic {
                Statistic::Minimum => d.minimum(),
                _ => d.maximum(),
            })
            .collect()
    }

    /// GitHub's rate limit of the functions' credential (the PAT), as `GET /rate_limit`
    /// tells it (free): its `core` resource.
    pub async fn github_rate_limit(&self) -> Value {
        let rate: Value = reqwest::Client::new()
            .get(format!("{}/rate_limit", self.github.url))
            .bearer_auth(PAT)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        rate["resources"]["core"].clone()
    }

    /// The job table `name` in moto's DynamoDB, as the module creates it, and a client
    /// for it.
    pub async fn job_table(&self, name: &str) -> aws_sdk_dynamodb::Client {
        let config = self.moto().await;
        warmfleet_testbed::world::create_job_table(&config, name)
            .await
            .unwrap();
        aws_sdk_dynamodb::Client::new(&config)
    }

    /// Creates the runner table `name` in moto, as the module does.
    pub async fn runner_table(&self, name: &str) -> warmfleet_core::aws::RunnerTable {
        let config = self.moto().await;
        warmfleet_testbed::world::create_runner_table(&config, name)
            .await
            .unwrap();
        warmfleet_core::aws::RunnerTable::new(&config, name)
    }

    /// The SDK configuration that reaches moto (DynamoDB, Secrets Manager).
    async fn moto(&self) -> aws_config::SdkConfig {
        let endpoints: Value = reqwest::get(format!("{}/_testbed/aws/endpoints", self.aws.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let moto = endpoints["secretsmanager"].as_str().unwrap();
        self.aws.config.to_builder().endpoint_url(moto).build()
    }

    /// Starts the world with these functions and rules; `github_args` go to the GitHub fake.
    pub async fn start(
        time_scale: &str,
        instance_command: Option<&str>,
        functions: &[Function<'_>],
        rules: &str,
        github_args: &[&str],
    ) -> Plane {
        let github = Github::start(github_args);
        let mut text = String::new();
        for f in functions {
            text.push_str(&format!(
                "[[function]]\nname = \"{}\"\ncommand = \"{}\"\ntimeout_seconds = {}\nretries = {}\n\
                 url = {}\n[function.environment]\nWARMFLEET_GITHUB_URL = \"{}\"\n\
                 WARMFLEET_GITHUB_CREDENTIAL_SECRET = \"{CREDENTIAL_SECRET}\"\n\
                 WARMFLEET_DEADLINE_MARGIN = \"1s\"\nRUST_LOG = \"info\"\n",
                f.name,
                lambda(f.binary).display(),
                f.timeout,
                f.retries,
                // As the module gives the receiver, and only it, a function URL.
                f.binary == "warmfleet-webhook",
                github.org_url()
            ));
            for (k, v) in f.env {
                let quoted = toml::Value::String(v.to_string());
                text.push_str(&format!("{k} = {quoted}\n"));
            }
        }
        text.push_str(rules);
        let world = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(world.path(), text).unwrap();
        let aws = Aws::start_world(
            instance_command,
            time_scale,
            &["--world", world.path().to_str().unwrap()],
            true,
        )
        .await;
        let endpoints: Value = reqwest::get(format!("{}/_testbed/aws/endpoints", aws.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let moto = endpoints["secretsmanager"].as_str().expect("moto is up");
        let config = aws.config.to_builder().endpoint_url(moto).build();
        let secrets = aws_sdk_secretsmanager::Client::new(&config);
        secrets
            .create_secret()
            .name(CREDENTIAL_SECRET)
            .secret_string(format!("{{\"token\": \"{PAT}\"}}"))
            .send()
            .await
            .unwrap();
        Plane {
            github,
            aws,
            secrets,
            _world: world,
        }
    }

    /// An instance's secret, parsed, if it exists.
    pub async fn instance_secret(&self, group: &str, instance: &str) -> Option<InstanceSecret> {
        self.instance_secret_at(group, instance, "AWSCURRENT").await
    }

    /// An instance's secret at a version stage (`AWSPREVIOUS`: the value before the last
    /// write), parsed, if it exists.
    pub async fn instance_secret_at(
        &self,
        group: &str,
        instance: &str,
        stage: &str,
    ) -> Option<InstanceSecret> {
        let id = warmfleet_core::naming::instance_secret_id(group, instance);
        let read = self
            .secrets
            .get_secret_value()
            .secret_id(&id)
            .version_stage(stage)
            .send()
            .await;
        match read {
            Ok(out) => Some(
                InstanceSecret::parse(&out.secret_string().unwrap().to_owned().into()).unwrap(),
            ),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                None
            }
            Err(e) => panic!("reading {id}: {e:?}"),
        }
    }

    /// How many versions an instance's secret has had.
    pub async fn versions(&self, group: &str, instance: &str) -> usize {
        let id = warmfleet_core::naming::instance_secret_id(group, instance);
        let out = self
            .secrets
            .list_secret_version_ids()
            .secret_id(&id)
            .send()
            .await
            .unwrap();
        out.versions().len()
    }

    /// Invocations of a function that have ended.
    pub async fn ended(&self, function: &str) -> Vec<Value> {
        self.aws
            .control("invocations")
            .await
            .into_iter()
            .filter(|i| i["function"] == function && i["ended_at"].is_number())
            .collect()
    }

    /// Invokes a function with a scheduled event and returns its answer (`Err` with the
    /// function's error).
    pub async fn invoke_scheduled(&self, function: &str) -> Result<Value, Value> {
        let event = serde_json::json!({"version": "0", "id": "00000000-0000-4000-8000-000000000001",
            "detail-type": "Scheduled Event", "source": "aws.events", "account": "123456789012",
            "time": "2026-11-28T12:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/test"], "detail": {}});
        self.invoke(function, &event).await
    }

    /// Invokes a function with `event` (Lambda's Invoke API) and returns its answer (`Err`
    /// with the function's error).
    pub async fn invoke(&self, function: &str, event: &Value) -> Result<Value, Value> {
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/2015-03-31/functions/{function}/invocations",
                self.aws.url
            ))
            .json(event)
            .send()
            .await
            .unwrap();
        let failed = resp.headers().contains_key("x-amz-function-error");
        let body: Value = resp.json().await.unwrap();
        if failed {
            Err(body)
        } else {
            Ok(body)
        }
    }

    /// Waits until `function` has ended `n` invocations; returns them.
    pub async fn until_ended(&self, function: &str, n: usize) -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let done = self.ended(function).await;
            if done.len() >= n {
                return done;
            }
            assert!(
                Instant::now() < until,
                "{function}: {} of {n} invocations ended: {:#?}",
                done.len(),
                self.aws.control("invocations").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
