//! `JobLedger` on a DynamoDB table: one item per job (partition key `job_id`, a number), its
//! stages as attributes set by conditional updates, so that of two deliveries of the same
//! news, in whichever function instance, exactly one acts. Items expire (the table's TTL
//! attribute `expires_at`) a week after their last write.

use super::sdk_error;
use crate::ports::{JobLedger, JobStage, PortError};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SERVICE: &str = "DynamoDB";
/// How long a job's record is kept: far longer than any redelivery or job.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct JobTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl JobTable {
    pub fn new(config: &aws_config::SdkConfig, table: &str) -> Self {
        JobTable {
            client: aws_sdk_dynamodb::Client::new(config),
            table: table.to_owned(),
        }
    }
}

fn attribute(stage: JobStage) -> &'static str {
    match stage {
        JobStage::Queued => "queued_at",
        JobStage::Started => "started_at",
    }
}

/// The condition under which recording `stage` is the first time: a `queued` that comes
/// after the job was seen started is not.
fn first_time(stage: JobStage) -> &'static str {
    match stage {
        JobStage::Queued => "attribute_not_exists(queued_at) AND attribute_not_exists(started_at)",
        JobStage::Started => "attribute_not_exists(started_at)",
    }
}

fn epoch_seconds(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string()
}

#[async_trait]
impl JobLedger for JobTable {
    async fn record(&self, job_id: u64, stage: JobStage) -> Result<bool, PortError> {
        let now = SystemTime::now();
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", AttributeValue::N(job_id.to_string()))
            .update_expression(format!(
                "SET {} = :now, expires_at = :expires",
                attribute(stage)
            ))
            .condition_expression(first_time(stage))
            .expression_attribute_values(":now", AttributeValue::N(epoch_seconds(now)))
            .expression_attribute_values(":expires", AttributeValue::N(epoch_seconds(now + KEEP)))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(false)
            }
            Err(e) => Err(sdk_error(
                SERVICE,
                "UpdateItem",
                format!("{}/{job_id}", self.table),
                &e,
            )),
        }
    }

    async fn forget(&self, job_id: u64, stage: JobStage) -> Result<(), PortError> {
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", AttributeValue::N(job_id.to_string()))
            .update_expression(format!("REMOVE {}", attribute(stage)))
            // An update creates a missing item: one that is not there has nothing to forget.
            .condition_expression("attribute_exists(job_id)")
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(())
            }
            Err(e) => Err(sdk_error(
                SERVICE,
                "UpdateItem",
                format!("{}/{job_id}", self.table),
                &e,
            )),
        }
    }
}
