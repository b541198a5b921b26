//! `Lifecycle` on Auto Scaling.

use super::sdk_error;
use crate::ports::{Capacity, Completion, HookResult, InstanceStatus, Lifecycle, PortError};
use async_trait::async_trait;
use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};

#[derive(Clone)]
pub struct AutoScaling {
    client: aws_sdk_autoscaling::Client,
}

impl AutoScaling {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        AutoScaling {
            client: aws_sdk_autoscaling::Client::new(config),
        }
    }
}

/// Auto Scaling answers a completion or heartbeat for a hook that is not waiting with a
/// `ValidationError` saying so.
fn not_pending<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    match err {
        SdkError::ServiceError(e) => {
            e.err().code() == Some("ValidationError")
                && e.err()
                    .message()
                    .is_some_and(|m| m.contains("No active Lifecycle Action found"))
        }
        _ => false,
    }
}

const SERVICE: &str = "Auto Scaling";

/// An instance of a group (in it or in its warm pool) as the port shows it.
fn status(
    group: &str,
    id: Option<&str>,
    state: Option<&aws_sdk_autoscaling::types::LifecycleState>,
    protected: Option<bool>,
) -> InstanceStatus {
    InstanceStatus {
        instance_id: id.unwrap_or_default().to_owned(),
        group: group.to_owned(),
        lifecycle_state: state.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        protected_from_scale_in: protected.unwrap_or(false),
    }
}

/// A hook action's outcome: done, not waiting (not an error), or a port error.
fn completion<T, E, R>(
    sent: Result<T, SdkError<E, R>>,
    operation: &'static str,
    resource: impl FnOnce() -> String,
) -> Result<Completion, PortError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match sent {
        Ok(_) => Ok(Completion::Done),
        Err(e) if not_pending(&e) => Ok(Completion::NotPending),
        Err(e) => Err(sdk_error(SERVICE, operation, resource(), &e)),
    }
}

#[async_trait]
impl Lifecycle for AutoScaling {
    async fn complete(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
        result: HookResult,
    ) -> Result<Completion, PortError> {
        let sent = self
            .client
            .complete_lifecycle_action()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(hook)
            .instance_id(instance_id)
            .lifecycle_action_result(result.as_str())
            .send()
            .await;
        completion(sent, "CompleteLifecycleAction", || {
            format!("{group}/{hook}/{instance_id}")
        })
    }

    async fn heartbeat(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
    ) -> Result<Completion, PortError> {
        let sent = self
            .client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(hook)
            .instance_id(instance_id)
            .send()
            .await;
        completion(sent, "RecordLifecycleActionHeartbeat", || {
            format!("{group}/{hook}/{instance_id}")
        })
    }

    async fn set_protection(
        &self,
        group: &str,
        instance_id: &str,
        protected: bool,
    ) -> Result<(), PortError> {
        self.client
            .set_instance_protection()
            .auto_scaling_group_name(group)
            .instance_ids(instance_id)
            .protected_from_scale_in(protected)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                sdk_error(
                    SERVICE,
                    "SetInstanceProtection",
                    format!("{group}/{instance_id}"),
                    &e,
                )
            })
    }

    async fn instance(&self, instance_id: &str) -> Result<Option<InstanceStatus>, PortError> {
        let out = self
            .client
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| {
                sdk_error(
                    SERVICE,
                    "DescribeAutoScalingInstances",
                    instance_id.to_owned(),
                    &e,
                )
            })?;
        Ok(out
            .auto_scaling_instances()
            .first()
            .map(|i| InstanceStatus {
                instance_id: i.instance_id().unwrap_or(instance_id).to_owned(),
                group: i.auto_scaling_group_name().unwrap_or_default().to_owned(),
                lifecycle_state: i.lifecycle_state().unwrap_or_default().to_owned(),
                protected_from_scale_in: i.protected_from_scale_in().unwrap_or(false),
            }))
    }

    async fn instances(&self, groups: &[String]) -> Result<Vec<InstanceStatus>, PortError> {
        let mut all = Vec::new();
        let mut pages = self
            .client
            .describe_auto_scaling_groups()
            .set_auto_scaling_group_names(Some(groups.to_vec()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                sdk_error(SERVICE, "DescribeAutoScalingGroups", groups.join(","), &e)
            })?;
            for g in page.auto_scaling_groups() {
                let name = g.auto_scaling_group_name().unwrap_or_default();
                all.extend(g.instances().iter().map(|i| {
                    status(
                        name,
                        i.instance_id(),
                        i.lifecycle_state(),
                        i.protected_from_scale_in(),
                    )
                }));
            }
        }
        Ok(all)
    }

    async fn warm_pool(&self, group: &str) -> Result<Vec<InstanceStatus>, PortError> {
        let mut all = Vec::new();
        let mut pages = self
            .client
            .describe_warm_pool()
            .auto_scaling_group_name(group)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| sdk_error(SERVICE, "DescribeWarmPool", group.to_owned(), &e))?;
            all.extend(page.instances().iter().map(|i| {
                status(
                    group,
                    i.instance_id(),
                    i.lifecycle_state(),
                    i.protected_from_scale_in(),
                )
            }));
        }
        Ok(all)
    }

    async fn set_unhealthy(&self, instance_id: &str) -> Result<(), PortError> {
        self.client
            .set_instance_health()
            .instance_id(instance_id)
            .health_status("Unhealthy")
            .should_respect_grace_period(false)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(SERVICE, "SetInstanceHealth", instance_id.to_owned(), &e))
    }

    async fn replace(&self, instance_id: &str) -> Result<(), PortError> {
        self.client
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                sdk_error(
                    SERVICE,
                    "TerminateInstanceInAutoScalingGroup",
                    instance_id.to_owned(),
                    &e,
                )
            })
    }
}

#[async_trait]
impl Capacity for AutoScaling {
    async fn add_one(&self, group: &str, policy: &str) -> Result<(), PortError> {
        // The job policy is a simple one (+1): no metric value or threshold, which AWS
        // accepts for step policies only; its cooldown not honoured, said explicitly (the
        // API reference gives no default), so that every run adds its instance.
        self.client
            .execute_policy()
            .auto_scaling_group_name(group)
            .policy_name(policy)
            .honor_cooldown(false)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(SERVICE, "ExecutePolicy", format!("{group}/{policy}"), &e))
    }
}
