//! `SecretStore` on Secrets Manager.

use super::sdk_error;
use crate::ports::{PortError, SecretStore};
use async_trait::async_trait;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueError;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use secrecy::{ExposeSecret, SecretString};

const SERVICE: &str = "Secrets Manager";

#[derive(Clone)]
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManager {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        SecretsManager {
            client: aws_sdk_secretsmanager::Client::new(config),
        }
    }

    /// A new current version of an existing secret.
    async fn put_version(
        &self,
        id: &str,
        value: &SecretString,
    ) -> Result<(), SdkError<PutSecretValueError, HttpResponse>> {
        self.client
            .put_secret_value()
            .secret_id(id)
            .secret_string(value.expose_secret())
            .send()
            .await
            .map(|_| ())
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
            Err(err) => Err(sdk_error(SERVICE, "GetSecretValue", id.to_owned(), &err)),
        }
    }

    async fn get_previous(&self, id: &str) -> Result<Option<SecretString>, PortError> {
        let asked = self
            .client
            .get_secret_value()
            .secret_id(id)
            .version_stage("AWSPREVIOUS")
            .send()
            .await;
        match asked {
            Ok(out) => Ok(out
                .secret_string()
                .map(|s| SecretString::from(s.to_owned()))),
            // No such secret, or no version in that stage (a secret never rotated).
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => Ok(None),
            Err(err) => Err(sdk_error(SERVICE, "GetSecretValue", id.to_owned(), &err)),
        }
    }

    async fn put(
        &self,
        id: &str,
        value: &SecretString,
        tags: &[(&str, &str)],
    ) -> Result<(), PortError> {
        // A resume, the path that must be fast, finds the secret there: one call.
        match self.put_version(id, value).await {
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {}
            other => {
                return other
                    .map_err(|err| sdk_error(SERVICE, "PutSecretValue", id.to_owned(), &err))
            }
        }
        let created = self
            .client
            .create_secret()
            .name(id)
            .secret_string(value.expose_secret())
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // Created meanwhile (a repeated event): then this is its new version.
            Err(SdkError::ServiceError(e)) if e.err().is_resource_exists_exception() => self
                .put_version(id, value)
                .await
                .map_err(|err| sdk_error(SERVICE, "PutSecretValue", id.to_owned(), &err)),
            Err(err) => Err(sdk_error(SERVICE, "CreateSecret", id.to_owned(), &err)),
        }
    }

    async fn update(&self, id: &str, value: &SecretString) -> Result<bool, PortError> {
        match self.put_version(id, value).await {
            Ok(()) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {
                Ok(false)
            }
            Err(err) => Err(sdk_error(SERVICE, "PutSecretValue", id.to_owned(), &err)),
        }
    }

    async fn delete(&self, id: &str) -> Result<(), PortError> {
        match self
            .client
            .delete_secret()
            .secret_id(id)
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => Ok(()),
            Err(err) => Err(sdk_error(SERVICE, "DeleteSecret", id.to_owned(), &err)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        let mut ids = Vec::new();
        let mut pages = self
            .client
            .list_secrets()
            .filters(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values(prefix)
                    .build(),
            )
            .max_results(100)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|err| sdk_error(SERVICE, "ListSecrets", prefix.to_owned(), &err))?;
            // The name filter matches prefixes of words; keep true prefixes only.
            ids.extend(
                page.secret_list()
                    .iter()
                    .filter_map(|s| s.name())
                    .filter(|n| n.starts_with(prefix))
                    .map(str::to_owned),
            );
        }
        Ok(ids)
    }
}
