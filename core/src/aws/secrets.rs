//! `SecretStore` on Secrets Manager.

use crate::ports::{PortError, SecretStore};
use async_trait::async_trait;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use secrecy::SecretString;

pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManager {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        SecretsManager {
            client: aws_sdk_secretsmanager::Client::new(config),
        }
    }
}

/// Whether trying again later can help: throttling, service-side failures and the network.
fn retryable<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(e) => matches!(
            e.err().code(),
            Some("ThrottlingException" | "InternalServiceError" | "RequestLimitExceeded")
        ),
        _ => false,
    }
}

#[async_trait]
impl SecretStore for SecretsManager {
    async fn get(&self, id: &str) -> Result<Option<SecretString>, PortError> {
        match self.client.get_secret_value().secret_id(id).send().await {
            Ok(out) => Ok(out
                .secret_string()
                .map(|s| SecretString::from(s.to_owned()))),
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => Ok(None),
            Err(err) => Err(PortError {
                service: "Secrets Manager",
                operation: "GetSecretValue",
                resource: id.to_owned(),
                retryable: retryable(&err),
                message: aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string(),
            }),
        }
    }
}
