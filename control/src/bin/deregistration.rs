//! `warmfleet-deregistration`: drains instances leaving service, and sweeps on a schedule.

use anyhow::Context;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use warmfleet_control::config::{DeregistrationSettings, ProcessEnv};
use warmfleet_control::deregistration::Deregistration;
use warmfleet_control::event::Event;
use warmfleet_control::runtime;
use warmfleet_control::Error as HandlerError;
use warmfleet_core::aws::{AutoScaling, CloudWatch, JobTable, RunnerTable, SecretsManager, Ssm};
use warmfleet_core::github::Reloading;
use warmfleet_core::ports::{GithubSpending, JobLedger, Occupancy};

type Handler =
    Deregistration<SecretsManager, AutoScaling, Ssm, Reloading<SecretsManager>, CloudWatch>;

async fn handle(handler: &Handler, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let deadline = runtime::deadline(event.context.deadline);
    match Event::parse(event.payload)? {
        Event::Scheduled => {
            let summary = handler.sweep(deadline).await?;
            // Plain counts: serialising cannot fail.
            Ok(serde_json::to_value(summary).unwrap_or_default())
        }
        lifecycle => {
            let outcome = handler.handle(lifecycle, deadline).await?;
            Ok(json!({ "outcome": format!("{outcome:?}") }))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let handler = runtime::init(async {
        let settings = DeregistrationSettings::from_env(&ProcessEnv).context("configuration")?;
        let aws = warmfleet_core::aws::load_config().await;
        let secrets = SecretsManager::new(&aws);
        let github = runtime::github(&settings.common, secrets.clone()).await?;
        // The deployment's account of GitHub requests, and the idle runners queued jobs
        // claim, in its job table.
        let table = settings
            .common
            .job_table
            .as_deref()
            .map(|table| JobTable::new(&aws, table));
        anyhow::Ok(Deregistration {
            secrets,
            lifecycle: AutoScaling::new(&aws),
            commands: Ssm::new(&aws),
            github,
            metrics: CloudWatch::new(&aws),
            spending: table
                .clone()
                .map(|t| Box::new(t) as Box<dyn GithubSpending>),
            claims: table.map(|t| Box::new(t) as Box<dyn JobLedger>),
            // Where agents record their jobs: the sweep deletes the records of instances gone.
            occupancy: settings
                .runner_table
                .as_deref()
                .map(|t| Box::new(RunnerTable::new(&aws, t)) as Box<dyn Occupancy>),
            settings,
        })
    })
    .await?;
    lambda_runtime::run(service_fn(|event| handle(&handler, event))).await
}
