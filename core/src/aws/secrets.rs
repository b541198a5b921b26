//! `SecretStore` on Secrets Manager.

use super::sdk_error;
use crate::ports::{PortError, SecretStore};
use async_trait::async_trait;
use aws_sdk_secretsmanager::error::SdkError;
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

#[async_trait]
impl SecretStore for SecretsManager {
    async fn get(&self, id: &str) -> Result<Option<SecretString>, PortError> {
        match self.client.get_secret_value().secret_id(id).send().await {
            Ok(out) => Ok(out
                .secret_string()
                .map(|s| SecretString::from(s.to_owned()))),
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => Ok(None),
            Err(err) => Err(sdk_error(
                "Secrets Manager",
                "GetSecretValue",
                id.to_owned(),
                &err,
            )),
        }
    }
}
