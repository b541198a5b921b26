//! `warmfleet-webhook`: GitHub's `workflow_job` deliveries, through a Lambda function URL,
//! turned into capacity at once.

use anyhow::Context;
use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use base64::Engine;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use warmfleet_control::config::{ProcessEnv, WebhookSettings};
use warmfleet_control::runtime;
use warmfleet_control::webhook::{Request, Response, Webhook};
use warmfleet_core::aws::{AutoScaling, CloudWatch, JobTable, SecretsManager};

type Handler = Webhook<SecretsManager, AutoScaling, JobTable, CloudWatch>;

/// The function URL's request (payload format 2.0) as the receiver reads it: the body's
/// bytes exactly as GitHub signed them.
fn request(event: LambdaFunctionUrlRequest) -> Request {
    let raw = event.body.unwrap_or_default();
    let body = if event.is_base64_encoded {
        // Not base64 after all: the signature check refuses whatever this is.
        base64::engine::general_purpose::STANDARD
            .decode(raw.as_bytes())
            .unwrap_or_else(|_| raw.into_bytes())
    } else {
        raw.into_bytes()
    };
    Request {
        method: event.request_context.http.method.unwrap_or_default(),
        headers: event
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body,
    }
}

fn response(answer: Response) -> LambdaFunctionUrlResponse {
    let mut out = LambdaFunctionUrlResponse::default();
    out.status_code = i64::from(answer.status);
    out.body = Some(answer.body.to_string());
    out.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    out
}

async fn handle(
    handler: &Handler,
    event: LambdaEvent<LambdaFunctionUrlRequest>,
) -> Result<LambdaFunctionUrlResponse, Error> {
    let deadline = runtime::deadline(event.context.deadline);
    Ok(response(
        handler.handle(&request(event.payload), deadline).await,
    ))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let handler = runtime::init(async {
        let settings = WebhookSettings::from_env(&ProcessEnv).context("configuration")?;
        let aws = warmfleet_core::aws::load_config().await;
        anyhow::Ok(Webhook::new(
            SecretsManager::new(&aws),
            AutoScaling::new(&aws),
            JobTable::new(&aws, &settings.job_table),
            CloudWatch::new(&aws),
            settings,
        ))
    })
    .await?;
    lambda_runtime::run(service_fn(|event| handle(&handler, event))).await
}
