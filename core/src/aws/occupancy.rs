//! `Occupancy` on a DynamoDB table of its own (the runner table): one item per instance
//! (partition key `instance_id`, a string), with `busy`, the `group` and `since` when it
//! was last recorded; items expire (the table's TTL attribute `expires_at`) a month after
//! their last record, so that the items of instances long gone do not pile up.

use super::{epoch_seconds, sdk_error};
use crate::ports::{Occupancy, PortError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

const SERVICE: &str = "DynamoDB";
/// How long an instance's record outlives its last change: longer than any instance stays
/// idle in service.
const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// `BatchGetItem` takes at most 100 keys.
const BATCH: usize = 100;
/// Rounds of asking again for the keys DynamoDB left unprocessed (throttled) before giving
/// up on an answer.
const ROUNDS: usize = 3;

#[derive(Clone)]
pub struct RunnerTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl RunnerTable {
    pub fn new(config: &aws_config::SdkConfig, table: &str) -> Self {
        RunnerTable {
            client: aws_sdk_dynamodb::Client::new(config),
            table: table.to_owned(),
        }
    }

    fn key(id: &str) -> HashMap<String, AttributeValue> {
        [("instance_id".to_owned(), AttributeValue::S(id.to_owned()))].into()
    }

    /// One `BatchGetItem` of at most 100 keys, strongly consistent (a job recorded just
    /// before must be seen), asking again with a growing pause for those DynamoDB left
    /// unprocessed.
    async fn get_batch(
        &self,
        ids: &[String],
        out: &mut BTreeMap<String, bool>,
    ) -> Result<(), PortError> {
        let mut keys: Vec<_> = ids.iter().map(|id| Self::key(id)).collect();
        for round in 0..ROUNDS {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(50 << round)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .projection_expression("instance_id, busy")
                .build()
                .map_err(|e| self.error("BatchGetItem", e.to_string(), false))?;
            let answer = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| sdk_error(SERVICE, "BatchGetItem", self.table.clone(), &e))?;
            for item in answer
                .responses()
                .and_then(|r| r.get(&self.table))
                .into_iter()
                .flatten()
            {
                if let Some(id) = item.get("instance_id").and_then(|v| v.as_s().ok()) {
                    out.insert(id.clone(), busy(item));
                }
            }
            keys = answer
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if keys.is_empty() {
                return Ok(());
            }
        }
        Err(self.error(
            "BatchGetItem",
            format!("{} keys left unprocessed after {ROUNDS} rounds", keys.len()),
            true,
        ))
    }

    /// Every record (or only the busy ones): (instance id, group), every page.
    async fn scan(&self, only_busy: bool) -> Result<Vec<(String, String)>, PortError> {
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .set_filter_expression(only_busy.then(|| "busy = :yes".to_owned()))
            .set_expression_attribute_values(
                only_busy.then(|| [(":yes".to_owned(), AttributeValue::Bool(true))].into()),
            )
            // `group` is one of DynamoDB's reserved words.
            .projection_expression("instance_id, #group")
            .expression_attribute_names("#group", "group")
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(SERVICE, "Scan", self.table.clone(), &e))?;
            for item in page.items() {
                let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
                if let Some(id) = text("instance_id") {
                    out.push((id, text("group").unwrap_or_default()));
                }
            }
        }
        Ok(out)
    }

    fn error(&self, operation: &'static str, message: String, retryable: bool) -> PortError {
        PortError {
            service: SERVICE,
            operation,
            resource: self.table.clone(),
            message,
            retryable,
        }
    }
}

fn busy(item: &HashMap<String, AttributeValue>) -> bool {
    item.get("busy")
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false)
}

#[async_trait]
impl Occupancy for RunnerTable {
    async fn record(&self, instance_id: &str, group: &str, busy: bool) -> Result<(), PortError> {
        let now = SystemTime::now();
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(instance_id)))
            // `group` is one of DynamoDB's reserved words.
            .update_expression(
                "SET busy = :busy, #group = :group, since = :now, expires_at = :expires",
            )
            .expression_attribute_names("#group", "group")
            .expression_attribute_values(":busy", AttributeValue::Bool(busy))
            .expression_attribute_values(":group", AttributeValue::S(group.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(epoch_seconds(now)))
            .expression_attribute_values(":expires", AttributeValue::N(epoch_seconds(now + KEEP)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                sdk_error(
                    SERVICE,
                    "UpdateItem",
                    format!("{}/{instance_id}", self.table),
                    &e,
                )
            })
    }

    async fn busy(&self) -> Result<BTreeSet<String>, PortError> {
        let items = self.scan(true).await?;
        Ok(items.into_iter().map(|(id, _)| id).collect())
    }

    async fn recorded(&self) -> Result<Vec<(String, String)>, PortError> {
        self.scan(false).await
    }

    async fn forget(&self, instance_id: &str) -> Result<(), PortError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(instance_id)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                sdk_error(
                    SERVICE,
                    "DeleteItem",
                    format!("{}/{instance_id}", self.table),
                    &e,
                )
            })
    }

    async fn of(&self, instance_ids: &[String]) -> Result<BTreeMap<String, bool>, PortError> {
        let mut out = BTreeMap::new();
        let unique: BTreeSet<&String> = instance_ids.iter().collect();
        let unique: Vec<String> = unique.into_iter().cloned().collect();
        for chunk in unique.chunks(BATCH) {
            self.get_batch(chunk, &mut out).await?;
        }
        Ok(out)
    }
}
