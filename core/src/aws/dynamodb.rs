//! `JobLedger` on a DynamoDB table: one item per job (partition key `job_id`, a number), each
//! stage as attributes set by conditional updates (when, by which delivery, whether its
//! action was done), so that of two deliveries of the same news, in whichever function
//! instance, one acts, and a delivery repeated before its action was done acts again. Items
//! expire (the table's TTL attribute `expires_at`) a week after they were recorded.

use super::{epoch_seconds, sdk_error};
use crate::ports::{JobLedger, JobStage, PortError};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use std::time::{Duration, SystemTime};

pub(super) const SERVICE: &str = "DynamoDB";
/// The item holding each group's idle runners (`idle_<group>`): GitHub's job ids start at 1.
const FLEET_ITEM: u64 = 0;
/// How long a job's record is kept: far longer than any redelivery or job.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone)]
pub struct JobTable {
    pub(super) client: aws_sdk_dynamodb::Client,
    pub(super) table: String,
}

impl JobTable {
    pub fn new(config: &aws_config::SdkConfig, table: &str) -> Self {
        JobTable {
            client: aws_sdk_dynamodb::Client::new(config),
            table: table.to_owned(),
        }
    }
}

/// The attributes of a stage: when it was recorded, by which delivery, and whether its
/// action was carried out.
impl JobTable {
    /// An update of a job's item that exists (an update would create a missing one: one
    /// that is not there has nothing to mark or forget), with `:yes` bound to `yes`.
    async fn update_existing(
        &self,
        job_id: u64,
        expression: String,
        yes: Option<AttributeValue>,
    ) -> Result<(), PortError> {
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", AttributeValue::N(job_id.to_string()))
            .update_expression(expression)
            .condition_expression("attribute_exists(job_id)")
            .set_expression_attribute_values(yes.map(|v| [(":yes".to_owned(), v)].into()))
            .send()
            .await;
        applied(sent, format!("{}/{job_id}", self.table)).map(|_| ())
    }
}

fn attributes(stage: JobStage) -> (&'static str, &'static str, &'static str) {
    match stage {
        JobStage::Queued => ("queued_at", "queued_by", "queued_done"),
        JobStage::Started => ("started_at", "started_by", "started_done"),
    }
}

/// The condition under which recording `stage` for delivery `:delivery` acts: the first
/// time (a `queued` after the job was seen started is not), or the same delivery again
/// before its action was done.
fn acts(stage: JobStage) -> &'static str {
    match stage {
        JobStage::Queued => {
            "(attribute_not_exists(queued_at) AND attribute_not_exists(started_at)) \
             OR (queued_by = :delivery AND attribute_not_exists(queued_done))"
        }
        JobStage::Started => {
            "attribute_not_exists(started_at) \
             OR (started_by = :delivery AND attribute_not_exists(started_done))"
        }
    }
}

/// An `UpdateItem` with a condition: `true` when it was applied, `false` when its condition
/// did not hold; any other failure names `item`.
fn applied<T, R: std::fmt::Debug>(
    sent: Result<T, SdkError<UpdateItemError, R>>,
    item: String,
) -> Result<bool, PortError> {
    match sent {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
            Ok(false)
        }
        Err(e) => Err(sdk_error(SERVICE, "UpdateItem", item, &e)),
    }
}

#[async_trait]
impl JobLedger for JobTable {
    async fn record(
        &self,
        job_id: u64,
        stage: JobStage,
        delivery: &str,
    ) -> Result<bool, PortError> {
        let (at, by, _) = attributes(stage);
        let now = SystemTime::now();
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", AttributeValue::N(job_id.to_string()))
            .update_expression(format!(
                "SET {at} = :now, {by} = :delivery, expires_at = :expires"
            ))
            .condition_expression(acts(stage))
            .expression_attribute_values(":now", AttributeValue::N(epoch_seconds(now)))
            .expression_attribute_values(":delivery", AttributeValue::S(delivery.to_owned()))
            .expression_attribute_values(":expires", AttributeValue::N(epoch_seconds(now + KEEP)))
            .send()
            .await;
        applied(sent, format!("{}/{job_id}", self.table))
    }

    async fn done(&self, job_id: u64, stage: JobStage) -> Result<(), PortError> {
        let (_, _, done) = attributes(stage);
        self.update_existing(
            job_id,
            format!("SET {done} = :yes"),
            Some(AttributeValue::Bool(true)),
        )
        .await
    }

    async fn forget(&self, job_id: u64, stage: JobStage) -> Result<(), PortError> {
        let (at, by, _) = attributes(stage);
        self.update_existing(job_id, format!("REMOVE {at}, {by}"), None)
            .await
    }

    async fn set_idle(&self, group: &str, idle: u32) -> Result<(), PortError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("job_id", AttributeValue::N(FLEET_ITEM.to_string()))
            .update_expression("SET #idle = :idle")
            .expression_attribute_names("#idle", format!("idle_{group}"))
            .expression_attribute_values(":idle", AttributeValue::N(idle.to_string()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                sdk_error(
                    SERVICE,
                    "UpdateItem",
                    format!("{}/idle_{group}", self.table),
                    &e,
                )
            })
    }

    async fn claim_idle(&self, group: &str) -> Result<bool, PortError> {
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", AttributeValue::N(FLEET_ITEM.to_string()))
            .update_expression("SET #idle = #idle - :one")
            .condition_expression("#idle > :none")
            .expression_attribute_names("#idle", format!("idle_{group}"))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":none", AttributeValue::N("0".into()))
            .send()
            .await;
        applied(sent, format!("{}/idle_{group}", self.table))
    }
}
