//! `warmfleet-record-metric`: publishes idle and busy runner counts every minute, from
//! Auto Scaling alone (no GitHub request).

use anyhow::Context;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use warmfleet_control::config::{MetricSettings, ProcessEnv};
use warmfleet_control::record_metric::RecordMetric;
use warmfleet_control::runtime;
use warmfleet_control::Error as HandlerError;
use warmfleet_core::aws::{AutoScaling, CloudWatch, JobTable, RunnerTable};
use warmfleet_core::ports::Occupancy;

type Handler = RecordMetric<AutoScaling, CloudWatch, JobTable>;

async fn handle(handler: &Handler, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let counts = handler
        .handle(runtime::deadline(event.context.deadline))
        .await?;
    // Plain maps of numbers: serialising cannot fail.
    Ok(serde_json::to_value(counts).unwrap_or_default())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let handler = runtime::init(async {
        let settings = MetricSettings::from_env(&ProcessEnv).context("configuration")?;
        let aws = warmfleet_core::aws::load_config().await;
        anyhow::Ok(RecordMetric {
            lifecycle: AutoScaling::new(&aws),
            metrics: CloudWatch::new(&aws),
            ledger: settings
                .job_table
                .as_deref()
                .map(|t| JobTable::new(&aws, t)),
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
