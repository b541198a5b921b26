//! `warmfleet-termination-policy`: the group's custom termination policy with the runner
//! table: which of the instances Auto Scaling proposes a scale-in takes. A function of its
//! own, with nothing to set up but a DynamoDB client and no GitHub credential: Auto
//! Scaling waits at most 2 s for the answer, a cold start included.

use anyhow::Context;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use warmfleet_control::config::{ProcessEnv, TerminationPolicySettings};
use warmfleet_control::runtime;
use warmfleet_control::scale_in::{ScaleIn, TerminationRequest, ANSWER_WITHIN};
use warmfleet_control::Error as HandlerError;
use warmfleet_core::aws::RunnerTable;

async fn handle(table: &RunnerTable, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let request = TerminationRequest::parse(event.payload)?;
    let until =
        runtime::deadline(event.context.deadline).min(tokio::time::Instant::now() + ANSWER_WITHIN);
    let answer = ScaleIn { occupancy: table }.answer(&request, until).await;
    // A list of strings: serialising cannot fail.
    Ok(serde_json::to_value(answer).unwrap_or_default())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let table = runtime::init(async {
        let settings = TerminationPolicySettings::from_env(&ProcessEnv).context("configuration")?;
        let aws = warmfleet_core::aws::load_config().await;
        anyhow::Ok(RunnerTable::new(&aws, &settings.runner_table))
    })
    .await?;
    lambda_runtime::run(service_fn(|event| handle(&table, event))).await
}
