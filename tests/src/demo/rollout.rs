//! The fleet file's `[refresh]`: a new launch template version rolled out while the workload
//! runs, as `terraform apply` with a new AMI does it with the module's `instance_refresh`:
//! the group takes version 2, and an instance refresh starts with the module's preferences
//! (infra/runners.tf). The demo watches it to its end and reports what it replaced.

use super::settings::Fleet;
use super::Demo;
use anyhow::Context;
use aws_sdk_autoscaling::types::{
    InstanceRefreshStatus, LaunchTemplateSpecification, RefreshPreferences,
    ScaleInProtectedInstances, StandbyInstances,
};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The launch template the demo's group launches from (the module's, by name here).
pub const TEMPLATE: &str = "warmfleet-runners";
const OLD: &str = "1";
const NEW: &str = "2";

pub fn launch_template(version: &str) -> LaunchTemplateSpecification {
    LaunchTemplateSpecification::builder()
        .launch_template_name(TEMPLATE)
        .version(version)
        .build()
}

/// The group's first version.
pub fn first() -> LaunchTemplateSpecification {
    launch_template(OLD)
}

#[derive(Debug, Default, Serialize)]
pub struct RefreshReport {
    /// World seconds after the start when version 2 was applied.
    pub started_at: f64,
    /// The refresh's last status (`Successful` when it replaced everything), or
    /// `not started` when the workload ended first.
    pub status: String,
    /// World seconds from the start of the refresh to its end.
    pub seconds: f64,
    /// Instances it had to replace when it started (in service and warm).
    pub instances_to_update: i32,
    /// Instances still on version 1 when it ended (in service or warm).
    pub old_instances_at_end: usize,
    /// Jobs running when version 2 was applied, and jobs that ran at any time during the
    /// refresh.
    pub jobs_running_at_start: usize,
    pub jobs_during: usize,
}

pub struct Rollout {
    at: f64,
    refresh: bool,
    max_healthy: i32,
    warmup: i32,
    id: Option<String>,
    percent: Option<i32>,
    /// Wall-clock time of the start (the GitHub fake's jobs carry wall-clock times).
    since: Option<DateTime<Utc>>,
    pub report: RefreshReport,
    done: bool,
}

impl Rollout {
    /// `None` when the fleet file asks for no rollout.
    pub fn new(fleet: &Fleet) -> Option<Rollout> {
        Some(Rollout {
            at: fleet.refresh.at?.as_secs_f64(),
            refresh: fleet.refresh.instance_refresh,
            max_healthy: fleet.refresh.max_healthy_percentage as i32,
            warmup: fleet.instance_warmup.as_secs() as i32,
            id: None,
            percent: None,
            since: None,
            report: RefreshReport {
                status: "not started".into(),
                ..RefreshReport::default()
            },
            done: false,
        })
    }

    /// Until the refresh has ended, the demo does not wind down.
    pub fn finished(&self) -> bool {
        self.done
    }

    /// Applies version 2 when it is time, then follows the refresh; says what happened.
    pub(crate) async fn act(&mut self, demo: &Demo) -> anyhow::Result<Option<String>> {
        if self.done || demo.world_now() < self.at {
            return Ok(None);
        }
        let group = &demo.fleet.group;
        let Some(id) = self.id.clone() else {
            self.report.started_at = super::report::tenths(demo.world_now());
            let now = Utc::now();
            self.since = Some(now);
            self.report.jobs_running_at_start = demo
                .jobs()
                .await?
                .iter()
                .filter(|j| j.started_at.is_some() && j.finished_at.is_none())
                .count();
            demo.asg
                .update_auto_scaling_group()
                .auto_scaling_group_name(group)
                .launch_template(launch_template(NEW))
                .send()
                .await
                .context("applying launch template version 2")?;
            if !self.refresh {
                // The module without instance_refresh: new instances only.
                self.done = true;
                self.report.status = "off".into();
                return Ok(Some(
                    "launch template version 2 applied (instance_refresh off: no refresh)".into(),
                ));
            }
            let started = demo
                .asg
                .start_instance_refresh()
                .auto_scaling_group_name(group)
                .preferences(
                    RefreshPreferences::builder()
                        .min_healthy_percentage(100)
                        .max_healthy_percentage(self.max_healthy)
                        .instance_warmup(self.warmup)
                        .skip_matching(true)
                        .scale_in_protected_instances(ScaleInProtectedInstances::Refresh)
                        .standby_instances(StandbyInstances::Ignore)
                        .auto_rollback(false)
                        .build(),
                )
                .send()
                .await
                .context("starting the instance refresh")?;
            let id = started.instance_refresh_id().unwrap_or_default().to_owned();
            self.id = Some(id.clone());
            return Ok(Some(format!(
                "launch template version 2 applied; instance refresh {id} started"
            )));
        };
        let out = demo
            .asg
            .describe_instance_refreshes()
            .auto_scaling_group_name(group)
            .instance_refresh_ids(&id)
            .send()
            .await
            .context("describing the instance refresh")?;
        let Some(r) = out.instance_refreshes().first() else {
            anyhow::bail!("instance refresh {id} is gone");
        };
        let status = r
            .status()
            .cloned()
            .unwrap_or(InstanceRefreshStatus::Pending);
        let percent = r.percentage_complete().unwrap_or_default();
        if self.percent.is_none() {
            self.report.instances_to_update = r.instances_to_update().unwrap_or_default();
        }
        let ended = matches!(
            status,
            InstanceRefreshStatus::Successful
                | InstanceRefreshStatus::Failed
                | InstanceRefreshStatus::Cancelled
        );
        if ended {
            self.done = true;
            self.report.status = status.as_str().to_owned();
            self.report.seconds = super::report::tenths(demo.world_now() - self.report.started_at);
            self.report.old_instances_at_end = old_instances(demo).await?;
            let since = self.since.unwrap_or_else(Utc::now);
            self.report.jobs_during = demo
                .jobs()
                .await?
                .iter()
                .filter(|j| j.started_at.is_some() && j.finished_at.is_none_or(|f| f >= since))
                .count();
            let reason = r
                .status_reason()
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            return Ok(Some(format!(
                "instance refresh {}{reason} after {:.0} s",
                status.as_str(),
                self.report.seconds
            )));
        }
        if self.percent.replace(percent) != Some(percent) {
            return Ok(Some(format!(
                "instance refresh {}: {percent}% done, {} to update",
                status.as_str(),
                r.instances_to_update().unwrap_or_default()
            )));
        }
        Ok(None)
    }
}

/// Instances of the group and its warm pool still launched from version 1.
async fn old_instances(demo: &Demo) -> anyhow::Result<usize> {
    let (all, _) = super::members(demo).await?;
    Ok(all
        .iter()
        .filter(|i| {
            !i.lifecycle_state()
                .is_some_and(|s| s.as_str().contains("Terminat"))
        })
        .filter(|i| i.launch_template().and_then(|t| t.version()) == Some(OLD))
        .count())
}
