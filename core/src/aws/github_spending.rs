//! `GithubSpending` on the job table: one item per GitHub rate-limit window, keyed by the
//! window's reset time negated (GitHub's job ids, the table's other keys, are positive),
//! its `github_requests` added to atomically by every function; it expires (the table's TTL
//! attribute `expires_at`) an hour after its window.

use super::dynamodb::{JobTable, SERVICE};
use super::sdk_error;
use crate::ports::{GithubSpending, PortError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

/// How long a window's item outlives the window.
const KEEP_SECS: i64 = 3600;

fn window_key(reset: i64) -> AttributeValue {
    AttributeValue::N((-reset).to_string())
}

#[async_trait]
impl GithubSpending for JobTable {
    async fn spend(&self, reset: i64, requests: u64) -> Result<(), PortError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("job_id", window_key(reset))
            .update_expression("ADD github_requests :n SET expires_at = :expires")
            .expression_attribute_values(":n", AttributeValue::N(requests.to_string()))
            .expression_attribute_values(
                ":expires",
                AttributeValue::N((reset + KEEP_SECS).to_string()),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                sdk_error(
                    SERVICE,
                    "UpdateItem",
                    format!("{}/github window {reset}", self.table),
                    &e,
                )
            })
    }

    async fn spent(&self, reset: i64) -> Result<u64, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("job_id", window_key(reset))
            .projection_expression("github_requests")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                sdk_error(
                    SERVICE,
                    "GetItem",
                    format!("{}/github window {reset}", self.table),
                    &e,
                )
            })?;
        Ok(out
            .item()
            .and_then(|i| i.get("github_requests"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}
