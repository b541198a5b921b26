//! The whole local world in this process: the GitHub fake, the AWS world (with moto) and
//! the Lambda binaries in it (the webhook receiver behind its function URL too), the
//! EventBridge rules a deployment creates, the GitHub credential in Secrets Manager and,
//! with the webhook, the organisation's hook. Used by the demo and the benchmarks.

use crate::aws;
use crate::github::{self, state::Settings};
use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warmfleet_core::naming;
use warmfleet_core::ports::SecretStore;

/// The organisation runners register with, and the PAT the Lambdas use.
pub const ORG: &str = "acme";
pub(crate) const PAT: &str = "ghp_worldworldworldworldworldworldworld";

/// Where the GitHub credential secret lives.
const CREDENTIAL_SECRET: &str = "warmfleet/github";
/// The job table and the webhook function URL's path, as the module creates them (the
/// webhook's secret is named for the first group, as the module names it for its group).
pub const JOB_TABLE: &str = "warmfleet-jobs";
/// The runner table, where agents record their jobs (`Spec::runner_table`).
pub const RUNNER_TABLE: &str = "warmfleet-runners";
/// The group's custom termination policy, with the runner table.
pub const TERMINATION_POLICY_FUNCTION: &str = "termination-policy";
pub const WEBHOOK_FUNCTION: &str = "webhook";

/// What to start.
pub struct Spec {
    /// Where the Lambda binaries are.
    pub lambdas: PathBuf,
    /// The groups the Lambdas look after.
    pub groups: Vec<String>,
    /// More environment, per function (`registration`, `deregistration`, `record-metric`,
    /// `webhook`),
    /// over the GitHub settings and `WARMFLEET_GROUPS` every function gets.
    pub function_env: Vec<(&'static str, String, String)>,
    /// Route lifecycle events to the Lambdas (registration and deregistration rules).
    pub lifecycle_rules: bool,
    /// `record-metric` every minute and the sweep every 5 minutes, as the module schedules.
    pub schedules: bool,
    /// The webhook receiver behind its function URL, its secret and job table, and the
    /// organisation's webhook pointing at it.
    pub webhook: bool,
    /// Run in every instance.
    pub instance_command: Option<String>,
    pub time_scale: f64,
    pub boot_delay: Duration,
    pub resume_delay: Duration,
    pub hibernate_delay: Duration,
    /// Each function's timeout (world seconds).
    pub function_timeout: f64,
    pub seed: Option<u64>,
    pub github: Settings,
    /// Keep the world's files (instance roots, Lambda logs) here; a temporary directory,
    /// removed at the end, when absent.
    pub keep_dir: Option<PathBuf>,
    /// The functions' `RUST_LOG`.
    pub function_log: &'static str,
    /// Instances are records only (no root, IMDS or process): the scale benchmark's.
    pub bare_instances: bool,
    /// record_metric notes the idle runners for the webhook receiver to claim.
    pub claim_idle: bool,
    /// The runner table exists, record_metric and deregistration read it, and the
    /// termination-policy function answers from it (the module's `use_runner_table`; the
    /// agents' setting and the group's termination policies are the caller's).
    pub runner_table: bool,
}

impl Spec {
    /// The Lambdas alone: no instances, no rules, real time.
    pub fn lambdas(lambdas: PathBuf, groups: &[&str]) -> Spec {
        Spec {
            lambdas,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            function_env: vec![],
            lifecycle_rules: false,
            schedules: false,
            webhook: false,
            instance_command: None,
            time_scale: 1.0,
            boot_delay: Duration::ZERO,
            resume_delay: Duration::ZERO,
            hibernate_delay: Duration::ZERO,
            function_timeout: 60.0,
            seed: Some(1),
            github: Settings::default(),
            keep_dir: None,
            function_log: "warn",
            bare_instances: false,
            claim_idle: false,
            runner_table: false,
        }
    }

    /// The webhook receiver's secret, where the module puts it: next to the first group's
    /// instance secrets (which the sweep must tell apart from it).
    pub fn webhook_secret(&self) -> String {
        naming::webhook_secret_id(self.groups.first().map_or("warmfleet", |g| g.as_str()))
    }

    /// The world file: the functions and the rules.
    fn world_file(&self, github: &str) -> anyhow::Result<String> {
        let common = [
            ("WARMFLEET_GITHUB_URL".to_owned(), format!("{github}/{ORG}")),
            (
                "WARMFLEET_GITHUB_CREDENTIAL_SECRET".to_owned(),
                CREDENTIAL_SECRET.to_owned(),
            ),
            ("WARMFLEET_GROUPS".to_owned(), self.groups.join(",")),
            ("RUST_LOG".to_owned(), self.function_log.to_owned()),
        ];
        let mut world = String::new();
        let mut functions = vec![
            ("registration", "warmfleet-registration"),
            ("deregistration", "warmfleet-deregistration"),
            ("record-metric", "warmfleet-record-metric"),
        ];
        if self.webhook {
            functions.push((WEBHOOK_FUNCTION, "warmfleet-webhook"));
        }
        if self.runner_table {
            functions.push((TERMINATION_POLICY_FUNCTION, "warmfleet-termination-policy"));
        }
        let webhook_env = [
            ("WARMFLEET_WEBHOOK_SECRET".to_owned(), self.webhook_secret()),
            ("WARMFLEET_JOB_TABLE".to_owned(), JOB_TABLE.to_owned()),
        ];
        for (name, binary) in functions {
            let path = self.lambdas.join(binary);
            if !path.exists() {
                bail!(
                    "{} is missing: build the control plane first (cargo build --workspace --bins)",
                    path.display()
                );
            }
            let mine = self.function_env.iter().filter(|(f, _, _)| *f == name);
            // record_metric notes the idle runners where the receiver claims them; the
            // functions that talk to GitHub account its requests in the table (as the
            // module).
            let own = webhook_env.iter().filter(|(k, _)| {
                name == WEBHOOK_FUNCTION
                    || (k == "WARMFLEET_JOB_TABLE"
                        && (matches!(name, "registration" | "deregistration")
                            || (self.claim_idle && name == "record-metric")))
            });
            // With the runner table, record_metric counts from it and deregistration answers
            // the group's termination policy from it.
            let runner_table = [("WARMFLEET_RUNNER_TABLE".to_owned(), RUNNER_TABLE.to_owned())];
            let reads_runners = self.runner_table
                && matches!(
                    name,
                    "record-metric" | "deregistration" | TERMINATION_POLICY_FUNCTION
                );
            let vars: toml::Table = common
                .iter()
                .chain(own)
                .chain(runner_table.iter().filter(|_| reads_runners))
                .map(|(k, v)| (k, v))
                .chain(mine.map(|(_, k, v)| (k, v)))
                .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
                .collect();
            world.push_str(&format!(
                "[[function]]\nname = \"{name}\"\ncommand = {}\ntimeout_seconds = {}\n\
                 url = {}\nenvironment = {}\n",
                toml::Value::String(path.display().to_string()),
                self.function_timeout,
                name == WEBHOOK_FUNCTION,
                toml::Value::Table(vars),
            ));
        }
        if self.lifecycle_rules {
            world.push_str(crate::agent_setup::REGISTRATION_RULE);
            world.push_str(crate::agent_setup::DEREGISTRATION_RULE);
        }
        if self.schedules {
            world.push_str(
                "[[rule]]\nname = \"record-metric\"\nschedule_expression = \"rate(1 minute)\"\n\
                 targets = [\"record-metric\"]\n\
                 [[rule]]\nname = \"sweep\"\nschedule_expression = \"rate(5 minutes)\"\n\
                 targets = [\"deregistration\"]\n",
            );
        }
        Ok(world)
    }
}

/// The GitHub fake and the AWS world (with moto) in this process.
pub struct World {
    pub github: String,
    /// The webhook receiver's secret.
    pub webhook_secret: String,
    pub aws: String,
    pub http: reqwest::Client,
    /// An SDK configuration whose endpoint is the AWS world.
    pub sdk: aws_config::SdkConfig,
    /// The same for moto's Secrets Manager.
    pub secrets_sdk: aws_config::SdkConfig,
    pub state_dir: PathBuf,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_autoscaling::config::Credentials::new(
            "testbed", "testbed", None, None, "testbed",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// What the module creates for every deployment: the job table `name` (partition key
/// `job_id`, a number; TTL on `expires_at`), where the webhook receiver keeps its jobs and
/// the functions that talk to GitHub account its requests.
pub async fn create_job_table(moto: &aws_config::SdkConfig, name: &str) -> anyhow::Result<()> {
    create_table(
        moto,
        name,
        "job_id",
        aws_sdk_dynamodb::types::ScalarAttributeType::N,
    )
    .await
}

/// The runner table `name`, as the module creates it (partition key `instance_id`, a
/// string; TTL on `expires_at`), where agents record their jobs.
pub async fn create_runner_table(moto: &aws_config::SdkConfig, name: &str) -> anyhow::Result<()> {
    create_table(
        moto,
        name,
        "instance_id",
        aws_sdk_dynamodb::types::ScalarAttributeType::S,
    )
    .await
}

/// An on-demand table keyed by `key`, its items expiring by `expires_at`.
async fn create_table(
    moto: &aws_config::SdkConfig,
    name: &str,
    key: &str,
    key_type: aws_sdk_dynamodb::types::ScalarAttributeType,
) -> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, TimeToLiveSpecification,
    };
    let dynamodb = aws_sdk_dynamodb::Client::new(moto);
    dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(key_type)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()?,
        )
        .send()
        .await
        .with_context(|| format!("creating the table {name}"))?;
    dynamodb
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()?,
        )
        .send()
        .await
        .with_context(|| format!("turning on the TTL of the table {name}"))?;
    Ok(())
}

/// What the module and an operator do for the webhook: its secret, then the organisation's
/// webhook (`workflow_job`, JSON) pointing at the receiver's function URL.
async fn webhook(
    github: &str,
    aws: &str,
    secret_id: &str,
    moto: &aws_config::SdkConfig,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    let secret = github::state::random_token("whsec_", 32);
    warmfleet_core::aws::SecretsManager::new(moto)
        .put(secret_id, &secret.clone().into(), &[])
        .await?;
    let created = http
        .post(format!("{github}/orgs/{ORG}/hooks"))
        .bearer_auth(PAT)
        .json(&serde_json::json!({
            "name": "web",
            "active": true,
            "events": ["workflow_job"],
            "config": {
                "url": format!("{aws}/_function_url/{WEBHOOK_FUNCTION}/"),
                "content_type": "json",
                "secret": secret,
                "insecure_ssl": "0",
            },
        }))
        .send()
        .await?;
    if !created.status().is_success() {
        bail!(
            "creating the organisation's webhook: {} {}",
            created.status(),
            created.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

impl World {
    pub async fn start(spec: &Spec) -> anyhow::Result<World> {
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let config = github::Config {
            listen: "127.0.0.1:0".parse()?,
            orgs: vec![ORG.into()],
            repos: vec![],
            enterprises: vec![],
            pats: vec![PAT.into()],
            apps: vec![],
            settings: spec.github.clone(),
            poll_wait: Duration::from_secs(2),
            webhook: None,
        };
        let gh = tokio::spawn(github::serve(config, shutdown.clone(), move |a| {
            let _ = tx.send(a);
        }));
        let github = format!(
            "http://{}",
            rx.await.context("the GitHub fake did not start")?
        );
        let dir = tempfile::tempdir()?;
        let world_file = dir.path().join("world.toml");
        std::fs::write(&world_file, spec.world_file(&github)?)?;
        let state_dir = match &spec.keep_dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                std::fs::canonicalize(d)?
            }
            None => dir.path().join("state"),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let config = aws::Config {
            listen: "127.0.0.1:0".parse()?,
            time_scale: spec.time_scale,
            instance_command: spec.instance_command.clone(),
            state_dir: Some(state_dir.clone()),
            boot_delay: spec.boot_delay,
            resume_delay: spec.resume_delay,
            hibernate_delay: spec.hibernate_delay,
            moto: aws::MotoMode::Auto,
            world_file: Some(world_file),
            seed: spec.seed,
            bare_instances: spec.bare_instances,
        };
        let aws_task = tokio::spawn(aws::serve(config, shutdown.clone(), move |a| {
            let _ = tx.send(a);
        }));
        let started = rx.await;
        let mut tasks = vec![gh, aws_task];
        let Ok(addr) = started else {
            shutdown.cancel();
            let why = match tasks.pop() {
                Some(t) => match t.await {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => "no reason given".to_owned(),
                },
                None => String::new(),
            };
            bail!("the AWS world did not start: {why}");
        };
        let aws = format!("http://{addr}");
        let http = reqwest::Client::new();
        let endpoints: Value = http
            .get(format!("{aws}/_testbed/aws/endpoints"))
            .send()
            .await?
            .json()
            .await?;
        let moto = endpoints["secretsmanager"].as_str().context("no moto")?;
        let secrets_sdk = sdk_config(moto).await;
        warmfleet_core::aws::SecretsManager::new(&secrets_sdk)
            .put(
                CREDENTIAL_SECRET,
                &format!("{{\"token\": \"{PAT}\"}}").into(),
                &[],
            )
            .await?;
        // As the module: each group's shared token secrets, created without a value (the
        // functions put the first).
        let secrets = aws_sdk_secretsmanager::Client::new(&secrets_sdk);
        for group in &spec.groups {
            for kind in ["registration", "remove"] {
                secrets
                    .create_secret()
                    .name(naming::shared_token_secret_id(group, kind))
                    .send()
                    .await
                    .with_context(|| format!("creating {group}'s shared {kind} token secret"))?;
            }
        }
        create_job_table(&secrets_sdk, JOB_TABLE).await?;
        if spec.runner_table {
            create_runner_table(&secrets_sdk, RUNNER_TABLE).await?;
        }
        if spec.webhook {
            webhook(&github, &aws, &spec.webhook_secret(), &secrets_sdk, &http).await?;
        }
        Ok(World {
            github,
            webhook_secret: spec.webhook_secret(),
            sdk: sdk_config(&aws).await,
            secrets_sdk,
            aws,
            http,
            state_dir,
            shutdown,
            tasks,
            _dir: dir,
        })
    }

    /// A control endpoint of the AWS world (`instances`, `effects`, `invocations`...).
    pub async fn aws_control<T: DeserializeOwned>(&self, what: &str) -> anyhow::Result<T> {
        self.control(format!("{}/_testbed/aws/{what}", self.aws))
            .await
    }

    /// A control endpoint of the GitHub fake (`jobs`, `runners`, `requests`).
    pub async fn github_control<T: DeserializeOwned>(&self, what: &str) -> anyhow::Result<T> {
        self.control(format!("{}/_testbed/{what}", self.github))
            .await
    }

    async fn control<T: DeserializeOwned>(&self, url: String) -> anyhow::Result<T> {
        let resp = self.http.get(&url).send().await?.error_for_status()?;
        resp.json().await.with_context(|| format!("reading {url}"))
    }

    /// Stops both worlds: every instance and function process, and moto, end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
