//! The aws-sdk side of the ports: one place where warmfleet's domain meets AWS.
//!
//! Clients are configured the standard way (region, credentials and endpoints from the
//! environment, so `AWS_ENDPOINT_URL_<SERVICE>` points them at the testbed), with the HTTP
//! client set explicitly: rustls on ring, no default features in the aws-sdk crates.

mod autoscaling;
mod cloudwatch;
mod dynamodb;
mod github_spending;
mod occupancy;
mod secrets;
mod ssm;

pub use autoscaling::AutoScaling;
pub use cloudwatch::CloudWatch;
pub use dynamodb::JobTable;
pub use occupancy::RunnerTable;
pub use secrets::SecretsManager;
pub use ssm::Ssm;

use crate::ports::PortError;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// The shared AWS configuration every client is built from.
pub async fn load_config() -> aws_config::SdkConfig {
    loader().load().await
}

/// The same in a region known already (an instance's, from IMDS).
pub async fn load_config_in(region: &str) -> aws_config::SdkConfig {
    loader()
        .region(aws_config::Region::new(region.to_owned()))
        .load()
        .await
}

fn loader() -> aws_config::ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http)
}

/// A time as DynamoDB's numbers (and its TTL attribute) hold it: seconds since the epoch.
fn epoch_seconds(at: std::time::SystemTime) -> String {
    at.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string()
}

/// A port error from an aws-sdk error, saying whether trying again later can help
/// (throttling, service-side failures, the network).
fn sdk_error<E, R>(
    service: &'static str,
    operation: &'static str,
    resource: String,
    err: &SdkError<E, R>,
) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let retryable = match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(e) => matches!(
            e.err().code(),
            Some(
                "Throttling"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServiceError"
                    | "InternalFailure"
                    | "ServiceUnavailable"
                    | "ResourceContention"
                    // Auto Scaling's ExecutePolicy while another activity runs.
                    | "ScalingActivityInProgress"
                    // DynamoDB's own throttling and server errors.
                    | "ProvisionedThroughputExceededException"
                    | "InternalServerError"
            )
        ),
        _ => false,
    };
    // The service's own code and message say it best; anything else (timeouts, the
    // network) needs its whole chain of causes.
    let message = match err {
        SdkError::ServiceError(e) => format!(
            "{}: {}",
            e.err().code().unwrap_or("error"),
            e.err().message().unwrap_or("(no message)")
        ),
        other => aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
    };
    PortError {
        service,
        operation,
        resource,
        retryable,
        message,
    }
}
