//! `Commands` on SSM Run Command (`AWS-RunShellScript`).

use super::sdk_error;
use crate::ports::{CommandState, Commands, PortError};
use async_trait::async_trait;
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::types::CommandInvocationStatus;
use std::time::Duration;

const SERVICE: &str = "SSM";

pub struct Ssm {
    client: aws_sdk_ssm::Client,
}

impl Ssm {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Ssm {
            client: aws_sdk_ssm::Client::new(config),
        }
    }
}

/// The port's view of an invocation's status and details.
fn state(status: Option<&CommandInvocationStatus>, details: Option<&str>) -> CommandState {
    let detail = details.unwrap_or_default().to_owned();
    match status {
        Some(CommandInvocationStatus::Pending | CommandInvocationStatus::Delayed) | None => {
            CommandState::Pending
        }
        Some(CommandInvocationStatus::InProgress | CommandInvocationStatus::Cancelling) => {
            CommandState::Running
        }
        Some(CommandInvocationStatus::Success) => CommandState::Succeeded,
        _ if matches!(
            detail.as_str(),
            "Undeliverable" | "Delivery Timed Out" | "Terminated"
        ) =>
        {
            CommandState::Undelivered { detail }
        }
        _ => CommandState::Failed { detail },
    }
}

#[async_trait]
impl Commands for Ssm {
    async fn run(
        &self,
        instance_id: &str,
        lines: &[String],
        comment: &str,
        execution: Duration,
        delivery: Duration,
    ) -> Result<Option<String>, PortError> {
        let sent = self
            .client
            .send_command()
            .document_name("AWS-RunShellScript")
            .instance_ids(instance_id)
            .comment(comment)
            .parameters("commands", lines.to_vec())
            .parameters(
                "executionTimeout",
                vec![execution.as_secs().max(1).to_string()],
            )
            // SSM's bounds: 30 s to 30 days.
            .timeout_seconds(delivery.as_secs().clamp(30, 2_592_000) as i32)
            .send()
            .await;
        match sent {
            Ok(out) => Ok(out
                .command()
                .and_then(|c| c.command_id())
                .map(str::to_owned)),
            Err(SdkError::ServiceError(e)) if e.err().is_invalid_instance_id() => Ok(None),
            Err(e) => Err(sdk_error(
                SERVICE,
                "SendCommand",
                instance_id.to_owned(),
                &e,
            )),
        }
    }

    async fn state(&self, command_id: &str, instance_id: &str) -> Result<CommandState, PortError> {
        match self
            .client
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await
        {
            Ok(out) => Ok(state(out.status(), out.status_details())),
            // AWS answers this for a moment after SendCommand.
            Err(SdkError::ServiceError(e)) if e.err().is_invocation_does_not_exist() => {
                Ok(CommandState::Pending)
            }
            Err(e) => Err(sdk_error(
                SERVICE,
                "GetCommandInvocation",
                format!("{command_id}/{instance_id}"),
                &e,
            )),
        }
    }
}
