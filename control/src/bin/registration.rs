//! `warmfleet-registration`: mints the credential of an instance going into service.

use anyhow::Context;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use warmfleet_control::config::{ProcessEnv, RegistrationSettings};
use warmfleet_control::event::Event;
use warmfleet_control::registration::Registration;
use warmfleet_control::runtime;
use warmfleet_control::Error as HandlerError;
use warmfleet_core::aws::{AutoScaling, JobTable, SecretsManager};
use warmfleet_core::github::Reloading;
use warmfleet_core::ports::GithubSpending;

type Handler = Registration<SecretsManager, AutoScaling, Reloading<SecretsManager>>;

async fn handle(handler: &Handler, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let deadline = runtime::deadline(event.context.deadline);
    let outcome = handler
        .handle(Event::parse(event.payload)?, deadline)
        .await?;
    Ok(json!({ "outcome": format!("{outcome:?}") }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let handler = runtime::init(async {
        let settings = RegistrationSettings::from_env(&ProcessEnv).context("configuration")?;
        let aws = warmfleet_core::aws::load_config().await;
        let secrets = SecretsManager::new(&aws);
        let github = runtime::github(&settings.common, secrets.clone()).await?;
        anyhow::Ok(Registration {
            secrets,
            lifecycle: AutoScaling::new(&aws),
            github,
            // The deployment's account of GitHub requests, in its job table.
            spending: settings
                .common
                .job_table
                .as_deref()
                .map(|table| Box::new(JobTable::new(&aws, table)) as Box<dyn GithubSpending>),
            settings,
        })
    })
    .await?;
    lambda_runtime::run(service_fn(|event| handle(&handler, event))).await
}
