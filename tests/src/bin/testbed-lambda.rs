//! A trivial Lambda function for the testbed's own tests, built with `lambda_runtime` as the
//! product's functions are. What it does is chosen by `TESTBED_LAMBDA`:
//!
//! - `complete-hook`: reads an Auto Scaling lifecycle event (`aws_lambda_events`) and
//!   completes its hook with CONTINUE through aws-sdk-autoscaling;
//! - `echo` (default): answers with the event;
//! - `sleep`: sleeps `TESTBED_LAMBDA_SLEEP_MS`, then answers;
//! - `fail`: answers with an error;
//! - `crash`: exits in the middle of the invocation;
//! - `init-error`: fails its initialisation, reporting it to `/runtime/init/error` as a
//!   runtime does, and exits.

use aws_lambda_events::event::autoscaling::AutoScalingEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let mode = std::env::var("TESTBED_LAMBDA").unwrap_or_else(|_| "echo".to_owned());
    let payload = event.payload;
    match mode.as_str() {
        "complete-hook" => {
            let event: AutoScalingEvent = serde_json::from_value(payload)?;
            let field = |k: &str| {
                event
                    .detail
                    .get(k)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("the event has no detail.{k}"))
            };
            let config = warmfleet_core::aws::load_config().await;
            aws_sdk_autoscaling::Client::new(&config)
                .complete_lifecycle_action()
                .auto_scaling_group_name(field("AutoScalingGroupName")?)
                .lifecycle_hook_name(field("LifecycleHookName")?)
                .lifecycle_action_token(field("LifecycleActionToken")?)
                .lifecycle_action_result("CONTINUE")
                .send()
                .await
                .map_err(|e| aws_sdk_autoscaling::error::DisplayErrorContext(e).to_string())?;
            Ok(json!({ "completed": field("EC2InstanceId")? }))
        }
        "sleep" => {
            let ms = std::env::var("TESTBED_LAMBDA_SLEEP_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(json!({ "slept_ms": ms }))
        }
        "fail" => Err("asked to fail".into()),
        "crash" => std::process::exit(3),
        _ => Ok(json!({ "pid": std::process::id(), "event": payload })),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    if std::env::var("TESTBED_LAMBDA").as_deref() == Ok("init-error") {
        let api = std::env::var("AWS_LAMBDA_RUNTIME_API")?;
        reqwest::Client::new()
            .post(format!("http://{api}/2018-06-01/runtime/init/error"))
            .header("Lambda-Runtime-Function-Error-Type", "Runtime.ConfigError")
            .json(
                &json!({"errorType": "ConfigError", "errorMessage": "WARMFLEET_GROUP is not set"}),
            )
            .send()
            .await?;
        std::process::exit(1);
    }
    lambda_runtime::run(service_fn(handle)).await
}
