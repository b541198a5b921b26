//! Auto Scaling's API over awsQuery: each action read from the form, applied to the model,
//! answered in AWS's XML shapes.

use super::model::{
    ActionRef, Asg, AsgError, Group, Hook, HookResult, Instance, LaunchTemplate, PoolState,
    Transition, WarmPool,
};
use super::policy::{policy_arn, AdjustmentType, Kind, Policy, Step};
use super::refresh::{Preferences, Protected, Refresh};
use crate::aws::protocol::query::{Params, QueryError, Xml};
use chrono::{DateTime, Utc};
use std::time::Duration;

pub const NAMESPACE: &str = "http://autoscaling.amazonaws.com/doc/2011-01-01/";
use crate::aws::{ACCOUNT, REGION, ZONE};

impl From<AsgError> for QueryError {
    fn from(e: AsgError) -> Self {
        let code = match e {
            AsgError::Validation(_) => "ValidationError",
            AsgError::AlreadyExists(_) => "AlreadyExists",
            AsgError::RefreshInProgress(_) => "InstanceRefreshInProgress",
            AsgError::NoActiveRefresh(_) => "ActiveInstanceRefreshNotFound",
        };
        QueryError {
            status: axum::http::StatusCode::BAD_REQUEST,
            code,
            message: e.to_string(),
        }
    }
}

/// Converts world time to the wall-clock timestamps AWS prints.
pub struct Timestamps {
    pub started: DateTime<Utc>,
}

impl Timestamps {
    /// Seconds since the epoch, as the JSON protocols print timestamps.
    pub fn epoch(&self, t: Duration) -> f64 {
        let at = self.started + chrono::Duration::from_std(t).unwrap_or_default();
        at.timestamp_millis() as f64 / 1000.0
    }

    pub fn at(&self, t: Duration) -> String {
        let at = self.started + chrono::Duration::from_std(t).unwrap_or_default();
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

pub fn group_arn(name: &str) -> String {
    format!("arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:00000000-0000-0000-0000-000000000000:autoScalingGroupName/{name}")
}

fn secs(p: &Params, name: &str) -> Result<Option<Duration>, QueryError> {
    Ok(p.u32(name)?.map(|s| Duration::from_secs(u64::from(s))))
}

/// `DefaultInstanceWarmup`: `None` when not given, `Some(None)` for -1 (none).
fn default_warmup(p: &Params) -> Result<Option<Option<Duration>>, QueryError> {
    match p.get("DefaultInstanceWarmup") {
        None => Ok(None),
        Some("-1") => Ok(Some(None)),
        Some(_) => Ok(Some(secs(p, "DefaultInstanceWarmup")?)),
    }
}

fn hook_from(fields: impl Fn(&str) -> Option<String>) -> Result<Hook, QueryError> {
    let name = fields("LifecycleHookName")
        .ok_or_else(|| QueryError::validation("LifecycleHookName is required"))?;
    let transition = fields("LifecycleTransition")
        .ok_or_else(|| QueryError::validation("LifecycleTransition is required"))?;
    let transition = Transition::parse(&transition).ok_or_else(|| {
        QueryError::validation(format!("Invalid Lifecycle Transition {transition}: must be autoscaling:EC2_INSTANCE_LAUNCHING or autoscaling:EC2_INSTANCE_TERMINATING"))
    })?;
    let heartbeat = match fields("HeartbeatTimeout") {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| QueryError::validation(format!("Invalid HeartbeatTimeout {v}")))?,
        None => 3600,
    };
    let default_result = match fields("DefaultResult") {
        Some(v) => HookResult::parse(&v).ok_or_else(|| {
            QueryError::validation(format!(
                "Invalid DefaultResult {v}: must be CONTINUE or ABANDON"
            ))
        })?,
        None => HookResult::Abandon,
    };
    Ok(Hook {
        name,
        transition,
        heartbeat_timeout: Duration::from_secs(heartbeat),
        default_result,
        metadata: fields("NotificationMetadata"),
    })
}

fn which<'a>(p: &'a Params) -> Result<ActionRef<'a>, QueryError> {
    match (p.get("LifecycleActionToken"), p.get("InstanceId")) {
        (Some(t), _) => Ok(ActionRef::Token(t)),
        (None, Some(i)) => Ok(ActionRef::Instance(i)),
        (None, None) => Err(QueryError::validation(
            "Either LifecycleActionToken or InstanceId must be specified",
        )),
    }
}

/// `LaunchTemplate.*` of CreateAutoScalingGroup and UpdateAutoScalingGroup, if given.
fn launch_template_from(p: &Params) -> Result<Option<LaunchTemplate>, QueryError> {
    let id = p.get("LaunchTemplate.LaunchTemplateId").map(str::to_owned);
    let name = p
        .get("LaunchTemplate.LaunchTemplateName")
        .map(str::to_owned);
    let version = p.get("LaunchTemplate.Version");
    match (&id, &name) {
        (None, None) if version.is_none() => Ok(None),
        (None, None) => Err(QueryError::validation(
            "Valid requests must contain either LaunchTemplateId or LaunchTemplateName",
        )),
        (Some(_), Some(_)) => Err(QueryError::validation(
            "Valid requests must contain either LaunchTemplateId or LaunchTemplateName, not both",
        )),
        _ => Ok(Some(LaunchTemplate {
            id,
            name,
            version: version.unwrap_or("$Default").to_owned(),
        })),
    }
}

fn launch_template_xml(x: &mut Xml, t: Option<&LaunchTemplate>) {
    if let Some(t) = t {
        x.open("LaunchTemplate")
            .opt("LaunchTemplateId", t.id.as_ref())
            .opt("LaunchTemplateName", t.name.as_ref())
            .field("Version", &t.version)
            .close("LaunchTemplate");
    }
}

/// StartInstanceRefresh's `Preferences.*`, with AWS's defaults for what is left out (for
/// the warm-up, the group's default instance warm-up, else its health check grace period,
/// 300 s here).
fn preferences_from(
    p: &Params,
    default_warmup: Option<Duration>,
) -> Result<Preferences, QueryError> {
    let protected = |name: &str| -> Result<Protected, QueryError> {
        let value = p.get(name).unwrap_or("Wait");
        Protected::parse(value).ok_or_else(|| {
            QueryError::validation(format!(
                "Invalid {name} {value}: must be Refresh, Ignore or Wait"
            ))
        })
    };
    let standby = p.get("Preferences.StandbyInstances").unwrap_or("Wait");
    if !["Terminate", "Ignore", "Wait"].contains(&standby) {
        return Err(QueryError::validation(format!(
            "Invalid Preferences.StandbyInstances {standby}: must be Terminate, Ignore or Wait"
        )));
    }
    let max = p.u32("Preferences.MaxHealthyPercentage")?;
    let min = p.u32("Preferences.MinHealthyPercentage")?;
    if max.is_some() && min.is_none() {
        return Err(QueryError::validation(
            "If you specify MaxHealthyPercentage, you must also specify MinHealthyPercentage",
        ));
    }
    Ok(Preferences {
        min_healthy: min.unwrap_or(90),
        max_healthy: max.unwrap_or(100),
        warmup: secs(p, "Preferences.InstanceWarmup")?
            .or(default_warmup)
            .unwrap_or(Duration::from_secs(300)),
        skip_matching: p.bool("Preferences.SkipMatching")?.unwrap_or(false),
        protected: protected("Preferences.ScaleInProtectedInstances")?,
        standby: standby.to_owned(),
    })
}

fn refresh_xml(x: &mut Xml, r: &Refresh, asg: &Asg, ts: &Timestamps) {
    let left = r.left(asg);
    // Nothing to update is done.
    let percent = |total: u32, left: u32| {
        (total.saturating_sub(left) * 100)
            .checked_div(total)
            .unwrap_or(100)
    };
    let p = &r.preferences;
    x.open("member")
        .field("InstanceRefreshId", &r.id)
        .field("AutoScalingGroupName", &r.group)
        .field("Status", r.status.as_str())
        .opt("StatusReason", r.reason.as_ref())
        .field("StartTime", ts.at(r.started))
        .opt("EndTime", r.ended.map(|t| ts.at(t)))
        .field(
            "PercentageComplete",
            percent(r.live_total + r.warm_total, left.live + left.warm),
        )
        .field("InstancesToUpdate", left.live + left.warm);
    // Only for a group with a warm pool, as AWS shows it.
    if asg
        .groups
        .get(&r.group)
        .is_some_and(|g| g.warm_pool.is_some())
    {
        x.open("ProgressDetails")
            .open("LivePoolProgress")
            .field("PercentageComplete", percent(r.live_total, left.live))
            .field("InstancesToUpdate", left.live)
            .close("LivePoolProgress")
            .open("WarmPoolProgress")
            .field("PercentageComplete", percent(r.warm_total, left.warm))
            .field("InstancesToUpdate", left.warm)
            .close("WarmPoolProgress")
            .close("ProgressDetails");
    }
    x.open("Preferences")
        .field("MinHealthyPercentage", p.min_healthy)
        .field("MaxHealthyPercentage", p.max_healthy)
        .field("InstanceWarmup", p.warmup.as_secs())
        .field("SkipMatching", p.skip_matching)
        .field("AutoRollback", false)
        .field("ScaleInProtectedInstances", p.protected.as_str())
        .field("StandbyInstances", &p.standby)
        .close("Preferences")
        .field("Strategy", "Rolling")
        .close("member");
}

fn instance_xml(x: &mut Xml, i: &Instance, with_group: bool) {
    x.field("InstanceId", &i.id)
        .field("InstanceType", "m7g.large");
    if with_group {
        x.field("AutoScalingGroupName", &i.group);
    }
    x.field("AvailabilityZone", ZONE)
        .field("LifecycleState", i.state.as_str())
        .field(
            "HealthStatus",
            if with_group {
                if i.healthy {
                    "HEALTHY"
                } else {
                    "UNHEALTHY"
                }
            } else if i.healthy {
                "Healthy"
            } else {
                "Unhealthy"
            },
        )
        .field("ProtectedFromScaleIn", i.protected);
    launch_template_xml(x, i.launch_template.as_ref());
}

fn warm_pool_xml(x: &mut Xml, pool: &WarmPool) {
    x.open("WarmPoolConfiguration")
        .field(
            "MaxGroupPreparedCapacity",
            pool.max_prepared.map_or(-1, i64::from),
        )
        .field("MinSize", pool.min_size)
        .field(
            "PoolState",
            match pool.state {
                PoolState::Hibernated => "Hibernated",
                PoolState::Stopped => "Stopped",
                PoolState::Running => "Running",
            },
        )
        .open("InstanceReusePolicy")
        .field("ReuseOnScaleIn", pool.reuse_on_scale_in)
        .close("InstanceReusePolicy")
        .close("WarmPoolConfiguration");
}

/// `TerminationPolicies.member.N`, checked as AWS does (`termination.rs`); `None` when
/// the request names none.
fn termination_policies(p: &Params) -> Result<Option<Vec<String>>, QueryError> {
    let policies = p.list("TerminationPolicies");
    if policies.is_empty() {
        return Ok(None);
    }
    super::termination::validate(&policies)?;
    Ok(Some(policies))
}

fn group_xml(x: &mut Xml, g: &Group, asg: &Asg, ts: &Timestamps) {
    let members: Vec<&Instance> = asg
        .instances
        .values()
        .filter(|i| i.group == g.name && !i.state.is_gone())
        .collect();
    x.open("member")
        .field("AutoScalingGroupName", &g.name)
        .field("AutoScalingGroupARN", group_arn(&g.name))
        .field("MinSize", g.min)
        .field("MaxSize", g.max)
        .field("DesiredCapacity", g.desired)
        .field("DefaultCooldown", 300)
        .open("AvailabilityZones")
        .field("member", ZONE)
        .close("AvailabilityZones")
        .field("HealthCheckType", "EC2")
        .field("HealthCheckGracePeriod", 300)
        .field("CreatedTime", ts.at(g.created_at))
        .field(
            "NewInstancesProtectedFromScaleIn",
            g.new_instances_protected,
        )
        .opt(
            "MaxInstanceLifetime",
            g.max_instance_lifetime.map(|d| d.as_secs()),
        )
        .open("TerminationPolicies");
    if g.termination_policies.is_empty() {
        x.field("member", "Default");
    }
    for policy in &g.termination_policies {
        x.field("member", policy);
    }
    x.close("TerminationPolicies").opt(
        "DefaultInstanceWarmup",
        g.default_instance_warmup.map(|d| d.as_secs()),
    );
    launch_template_xml(x, g.launch_template.as_ref());
    x.open("Instances");
    for i in members.iter().filter(|i| !i.state.is_warmed()) {
        x.open("member");
        instance_xml(x, i, false);
        x.close("member");
    }
    x.close("Instances");
    x.open("Tags");
    for (k, v) in &g.tags {
        x.open("member")
            .field("ResourceId", &g.name)
            .field("ResourceType", "auto-scaling-group")
            .field("Key", k)
            .field("Value", v)
            .field("PropagateAtLaunch", true)
            .close("member");
    }
    x.close("Tags");
    if let Some(pool) = &g.warm_pool {
        warm_pool_xml(x, pool);
        x.field(
            "WarmPoolSize",
            members.iter().filter(|i| i.state.is_warmed()).count(),
        );
    }
    x.close("member");
}

/// Applies one Auto Scaling action; `Ok(Some(xml))` is the `...Result` element's content.
/// An alarm as Auto Scaling shows it beside a policy: name, ARN, actions.
pub struct AlarmRef {
    pub name: String,
    pub arn: String,
    pub actions: Vec<String>,
}

fn number<T: std::str::FromStr>(p: &Params, name: &str) -> Result<Option<T>, QueryError> {
    p.get(name)
        .map(|v| {
            v.parse().map_err(|_| {
                QueryError::validation(format!("Invalid value '{v}' for {name}: expected a number"))
            })
        })
        .transpose()
}

fn policy_from(p: &Params) -> Result<Policy, QueryError> {
    let group = p.required("AutoScalingGroupName")?.to_owned();
    let name = p.required("PolicyName")?.to_owned();
    let adjustment_type = match p.get("AdjustmentType") {
        Some(t) => AdjustmentType::parse(t).ok_or_else(|| {
            QueryError::validation(format!(
                "Invalid AdjustmentType {t}: ChangeInCapacity, ExactCapacity or PercentChangeInCapacity"
            ))
        })?,
        None => return Err(QueryError::validation("AdjustmentType is required")),
    };
    let kind = match p.get("PolicyType").unwrap_or("SimpleScaling") {
        "StepScaling" => {
            let mut steps = vec![];
            for s in p.structs("StepAdjustments") {
                let f = |k: &str| -> Result<Option<f64>, QueryError> {
                    s.get(k)
                        .map(|v| {
                            v.parse()
                                .map_err(|_| QueryError::validation(format!("Invalid {k} {v}")))
                        })
                        .transpose()
                };
                let adjustment = s
                    .get("ScalingAdjustment")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        QueryError::validation(
                            "every step adjustment needs a whole ScalingAdjustment",
                        )
                    })?;
                steps.push(Step {
                    lower: f("MetricIntervalLowerBound")?,
                    upper: f("MetricIntervalUpperBound")?,
                    adjustment,
                });
            }
            Kind::Step {
                steps,
                warmup: secs(p, "EstimatedInstanceWarmup")?,
                aggregation: p
                    .get("MetricAggregationType")
                    .unwrap_or("Average")
                    .to_owned(),
            }
        }
        "SimpleScaling" => Kind::Simple {
            adjustment: number(p, "ScalingAdjustment")?.ok_or_else(|| {
                QueryError::validation("ScalingAdjustment is required for a SimpleScaling policy")
            })?,
            cooldown: secs(p, "Cooldown")?,
        },
        other => {
            return Err(QueryError::validation(format!(
                "PolicyType {other} is not modelled by the testbed (StepScaling, SimpleScaling)"
            )))
        }
    };
    Ok(Policy {
        arn: policy_arn(&group, &name),
        group,
        name,
        kind,
        adjustment_type,
        min_adjustment_magnitude: number(p, "MinAdjustmentMagnitude")?,
        enabled: p.bool("Enabled")?.unwrap_or(true),
        last_scale_out: None,
    })
}

fn alarms_xml(x: &mut Xml, policy_arn: &str, alarms: &[AlarmRef]) {
    x.open("Alarms");
    for a in alarms
        .iter()
        .filter(|a| a.actions.iter().any(|x| x == policy_arn))
    {
        x.open("member")
            .field("AlarmName", &a.name)
            .field("AlarmARN", &a.arn)
            .close("member");
    }
    x.close("Alarms");
}

fn policy_xml(x: &mut Xml, policy: &Policy, alarms: &[AlarmRef]) {
    x.field("AutoScalingGroupName", &policy.group)
        .field("PolicyName", &policy.name)
        .field("PolicyARN", &policy.arn)
        .field("AdjustmentType", policy.adjustment_type.as_str())
        .opt("MinAdjustmentMagnitude", policy.min_adjustment_magnitude)
        .field("Enabled", policy.enabled);
    match &policy.kind {
        Kind::Step {
            steps,
            warmup,
            aggregation,
        } => {
            x.field("PolicyType", "StepScaling").open("StepAdjustments");
            for s in steps {
                x.open("member")
                    .opt("MetricIntervalLowerBound", s.lower)
                    .opt("MetricIntervalUpperBound", s.upper)
                    .field("ScalingAdjustment", s.adjustment)
                    .close("member");
            }
            x.close("StepAdjustments")
                .field("MetricAggregationType", aggregation)
                .opt("EstimatedInstanceWarmup", warmup.map(|w| w.as_secs()));
        }
        Kind::Simple {
            adjustment,
            cooldown,
        } => {
            x.field("PolicyType", "SimpleScaling")
                .field("ScalingAdjustment", adjustment)
                .opt("Cooldown", cooldown.map(|c| c.as_secs()));
        }
    }
    alarms_xml(x, &policy.arn, alarms);
}

pub fn handle(
    asg: &mut Asg,
    action: &str,
    p: &Params,
    now: Duration,
    ts: &Timestamps,
    alarms: &[AlarmRef],
) -> Result<Option<String>, QueryError> {
    let mut x = Xml::default();
    match action {
        "PutScalingPolicy" => {
            let arn = asg.put_policy(policy_from(p)?)?;
            x.field("PolicyARN", &arn);
            alarms_xml(&mut x, &arn, alarms);
            Ok(Some(x.text()))
        }
        "DescribePolicies" => {
            let group = p.get("AutoScalingGroupName");
            let names = p.list("PolicyNames");
            let types = p.list("PolicyTypes");
            x.open("ScalingPolicies");
            for policy in asg.policies.iter().filter(|q| {
                group.is_none_or(|g| g == q.group)
                    && (names.is_empty() || names.iter().any(|n| *n == q.name || *n == q.arn))
            }) {
                let kind = match policy.kind {
                    Kind::Step { .. } => "StepScaling",
                    Kind::Simple { .. } => "SimpleScaling",
                };
                if types.is_empty() || types.iter().any(|t| t == kind) {
                    x.open("member");
                    policy_xml(&mut x, policy, alarms);
                    x.close("member");
                }
            }
            x.close("ScalingPolicies");
            Ok(Some(x.text()))
        }
        "ExecutePolicy" => {
            let group = p.required("AutoScalingGroupName")?;
            let name = p.required("PolicyName")?;
            let breach = match (
                number::<f64>(p, "MetricValue")?,
                number::<f64>(p, "BreachThreshold")?,
            ) {
                (Some(m), Some(t)) => Some((m, t)),
                _ => None,
            };
            // AWS: MetricValue and BreachThreshold are for step policies only.
            let simple = asg.policies.iter().any(|q| {
                q.group == group
                    && (q.name == name || q.arn == name)
                    && matches!(q.kind, Kind::Simple { .. })
            });
            if simple && (p.get("MetricValue").is_some() || p.get("BreachThreshold").is_some()) {
                return Err(QueryError::validation(
                    "MetricValue and BreachThreshold are supported only for step scaling policies",
                ));
            }
            let honor = p.bool("HonorCooldown")?.unwrap_or(false);
            asg.execute_policy(
                group,
                name,
                breach,
                honor,
                "a user request executed policy",
                now,
            )?;
            Ok(None)
        }
        "DeletePolicy" => {
            asg.delete_policy(
                p.required("AutoScalingGroupName")?,
                p.required("PolicyName")?,
            )?;
            Ok(None)
        }
        "CreateAutoScalingGroup" => {
            let name = p.required("AutoScalingGroupName")?.to_owned();
            let min = p
                .u32("MinSize")?
                .ok_or_else(|| QueryError::validation("MinSize is required"))?;
            let max = p
                .u32("MaxSize")?
                .ok_or_else(|| QueryError::validation("MaxSize is required"))?;
            let desired = p.u32("DesiredCapacity")?.unwrap_or(min);
            let on_demand = p.get(
                "MixedInstancesPolicy.InstancesDistribution.OnDemandPercentageAboveBaseCapacity",
            );
            let spot = on_demand.is_some_and(|v| v != "100");
            let tags = p
                .structs("Tags")
                .into_iter()
                .map(|t| {
                    (
                        t.get("Key").cloned().unwrap_or_default(),
                        t.get("Value").cloned().unwrap_or_default(),
                    )
                })
                .collect();
            let mut hooks = Vec::new();
            for spec in p.structs("LifecycleHookSpecificationList") {
                hooks.push(hook_from(|f| spec.get(f).cloned())?);
            }
            asg.create_group(
                Group {
                    name: name.clone(),
                    min,
                    max,
                    desired,
                    max_instance_lifetime: secs(p, "MaxInstanceLifetime")?,
                    new_instances_protected: p
                        .bool("NewInstancesProtectedFromScaleIn")?
                        .unwrap_or(false),
                    termination_policies: termination_policies(p)?.unwrap_or_default(),
                    tags,
                    spot,
                    hooks: vec![],
                    warm_pool: None,
                    launch_template: launch_template_from(p)?,
                    default_instance_warmup: default_warmup(p)?.flatten(),
                    created_at: now,
                },
                now,
            )?;
            for hook in hooks {
                asg.put_hook(&name, hook)?;
            }
            Ok(None)
        }
        "UpdateAutoScalingGroup" => {
            asg.update_group(
                p.required("AutoScalingGroupName")?,
                p.u32("MinSize")?,
                p.u32("MaxSize")?,
                p.u32("DesiredCapacity")?,
                secs(p, "MaxInstanceLifetime")?,
                p.bool("NewInstancesProtectedFromScaleIn")?,
            )?;
            let group = p.required("AutoScalingGroupName")?;
            if let Some(template) = launch_template_from(p)? {
                asg.set_launch_template(group, template)?;
            }
            if let Some(policies) = termination_policies(p)? {
                asg.group_mut(group)?.termination_policies = policies;
            }
            if let Some(warmup) = default_warmup(p)? {
                asg.set_default_instance_warmup(group, warmup)?;
            }
            Ok(None)
        }
        "StartInstanceRefresh" => {
            let group = p.required("AutoScalingGroupName")?;
            match p.get("Strategy").unwrap_or("Rolling") {
                "Rolling" => {}
                other => {
                    return Err(QueryError::validation(format!(
                        "The testbed models only the Rolling strategy, not {other}"
                    )))
                }
            }
            // What AWS has and the testbed does not model is refused, not ignored.
            let unmodelled = [
                "DesiredConfiguration.",
                "Preferences.CheckpointPercentages",
                "Preferences.CheckpointDelay",
                "Preferences.AlarmSpecification",
                "Preferences.BakeTime",
            ];
            if let Some((key, _)) = p
                .pairs()
                .into_iter()
                .find(|(k, _)| unmodelled.iter().any(|u| k.starts_with(u)))
            {
                return Err(QueryError::validation(format!(
                    "The testbed does not model {key} in an instance refresh"
                )));
            }
            if p.bool("Preferences.AutoRollback")? == Some(true) {
                return Err(QueryError::validation(
                    "AutoRollback requires a DesiredConfiguration",
                ));
            }
            let default = asg.group(group)?.default_instance_warmup;
            let id = asg.start_refresh(group, preferences_from(p, default)?, now)?;
            x.field("InstanceRefreshId", id);
            Ok(Some(x.text()))
        }
        "DescribeInstanceRefreshes" => {
            let group = p.required("AutoScalingGroupName")?;
            asg.group(group)?;
            let ids = p.list("InstanceRefreshIds");
            x.open("InstanceRefreshes");
            for r in asg
                .refreshes
                .iter()
                .rev()
                .filter(|r| r.group == group && (ids.is_empty() || ids.contains(&r.id)))
            {
                refresh_xml(&mut x, r, asg, ts);
            }
            x.close("InstanceRefreshes");
            Ok(Some(x.text()))
        }
        "CancelInstanceRefresh" => {
            if p.bool("WaitForTransitioningInstances")? == Some(false) {
                return Err(QueryError::validation(
                    "The testbed does not model WaitForTransitioningInstances=false",
                ));
            }
            let id = asg.cancel_refresh(p.required("AutoScalingGroupName")?)?;
            x.field("InstanceRefreshId", id);
            Ok(Some(x.text()))
        }
        "SetDesiredCapacity" => {
            let desired = p
                .u32("DesiredCapacity")?
                .ok_or_else(|| QueryError::validation("DesiredCapacity is required"))?;
            asg.set_desired(p.required("AutoScalingGroupName")?, desired, now)?;
            Ok(None)
        }
        "PutLifecycleHook" => {
            let group = p.required("AutoScalingGroupName")?.to_owned();
            asg.put_hook(&group, hook_from(|f| p.get(f).map(str::to_owned))?)?;
            Ok(Some(String::new()))
        }
        "DescribeLifecycleHooks" => {
            let g = asg.group(p.required("AutoScalingGroupName")?)?;
            let names = p.list("LifecycleHookNames");
            x.open("LifecycleHooks");
            for h in g
                .hooks
                .iter()
                .filter(|h| names.is_empty() || names.contains(&h.name))
            {
                x.open("member")
                    .field("LifecycleHookName", &h.name)
                    .field("AutoScalingGroupName", &g.name)
                    .field("LifecycleTransition", h.transition.as_str())
                    .opt("NotificationMetadata", h.metadata.as_ref())
                    .field("HeartbeatTimeout", h.heartbeat_timeout.as_secs())
                    .field("GlobalTimeout", h.global_timeout().as_secs())
                    .field("DefaultResult", h.default_result.as_str())
                    .close("member");
            }
            x.close("LifecycleHooks");
            Ok(Some(x.text()))
        }
        "CompleteLifecycleAction" => {
            let result = p.required("LifecycleActionResult")?;
            let result = HookResult::parse(result).ok_or_else(|| {
                QueryError::validation(format!(
                    "Invalid LifecycleActionResult {result}: must be CONTINUE or ABANDON"
                ))
            })?;
            asg.complete(
                p.required("AutoScalingGroupName")?,
                p.required("LifecycleHookName")?,
                which(p)?,
                result,
            )?;
            Ok(Some(String::new()))
        }
        "RecordLifecycleActionHeartbeat" => {
            asg.heartbeat(
                p.required("AutoScalingGroupName")?,
                p.required("LifecycleHookName")?,
                which(p)?,
                now,
            )?;
            Ok(Some(String::new()))
        }
        "SetInstanceProtection" => {
            let protected = p
                .bool("ProtectedFromScaleIn")?
                .ok_or_else(|| QueryError::validation("ProtectedFromScaleIn is required"))?;
            asg.set_protection(
                p.required("AutoScalingGroupName")?,
                &p.list("InstanceIds"),
                protected,
            )?;
            Ok(Some(String::new()))
        }
        "SetInstanceHealth" => {
            let healthy = match p.required("HealthStatus")? {
                "Healthy" => true,
                "Unhealthy" => false,
                other => {
                    return Err(QueryError::validation(format!(
                        "Invalid HealthStatus {other}: must be Healthy or Unhealthy"
                    )))
                }
            };
            asg.set_health(p.required("InstanceId")?, healthy)?;
            Ok(None)
        }
        "TerminateInstanceInAutoScalingGroup" => {
            let decrement = p.bool("ShouldDecrementDesiredCapacity")?.ok_or_else(|| {
                QueryError::validation("ShouldDecrementDesiredCapacity is required")
            })?;
            let id = p.required("InstanceId")?;
            asg.terminate(id, decrement, now)?;
            let activity = asg.activities.last().cloned();
            if let Some(a) = activity {
                x.open("Activity");
                activity_xml(&mut x, &a, ts);
                x.close("Activity");
            }
            Ok(Some(x.text()))
        }
        "DescribeAutoScalingGroups" => {
            let names = p.list("AutoScalingGroupNames");
            x.open("AutoScalingGroups");
            for g in asg
                .groups
                .values()
                .filter(|g| names.is_empty() || names.contains(&g.name))
            {
                group_xml(&mut x, g, asg, ts);
            }
            x.close("AutoScalingGroups");
            Ok(Some(x.text()))
        }
        "DescribeAutoScalingInstances" => {
            let ids = p.list("InstanceIds");
            x.open("AutoScalingInstances");
            for i in asg.instances.values().filter(|i| {
                !i.state.is_gone()
                    && !i.state.is_warmed()
                    && (ids.is_empty() || ids.contains(&i.id))
            }) {
                x.open("member");
                instance_xml(&mut x, i, true);
                x.close("member");
            }
            x.close("AutoScalingInstances");
            Ok(Some(x.text()))
        }
        "PutWarmPool" => {
            let group = p.required("AutoScalingGroupName")?.to_owned();
            let max_prepared = match p.get("MaxGroupPreparedCapacity") {
                None | Some("-1") => None,
                Some(v) => Some(v.parse().map_err(|_| {
                    QueryError::validation(format!("Invalid MaxGroupPreparedCapacity {v}"))
                })?),
            };
            let state = match p.get("PoolState").unwrap_or("Stopped") {
                "Hibernated" => PoolState::Hibernated,
                "Stopped" => PoolState::Stopped,
                "Running" => PoolState::Running,
                other => return Err(QueryError::validation(format!("Invalid PoolState {other}"))),
            };
            asg.put_warm_pool(
                &group,
                WarmPool {
                    min_size: p.u32("MinSize")?.unwrap_or(0),
                    max_prepared,
                    state,
                    reuse_on_scale_in: p
                        .bool("InstanceReusePolicy.ReuseOnScaleIn")?
                        .unwrap_or(false),
                },
            )?;
            Ok(Some(String::new()))
        }
        "DeleteWarmPool" => {
            let force = p.bool("ForceDelete")?.unwrap_or(false);
            asg.delete_warm_pool(p.required("AutoScalingGroupName")?, force, now)?;
            Ok(Some(String::new()))
        }
        "DescribeWarmPool" => {
            let g = asg.group(p.required("AutoScalingGroupName")?)?;
            if let Some(pool) = &g.warm_pool {
                warm_pool_xml(&mut x, pool);
            }
            x.open("Instances");
            for i in asg
                .instances
                .values()
                .filter(|i| i.group == g.name && i.state.is_warmed())
            {
                x.open("member");
                instance_xml(&mut x, i, false);
                x.close("member");
            }
            x.close("Instances");
            Ok(Some(x.text()))
        }
        "DescribeScalingActivities" => {
            let group = p.get("AutoScalingGroupName");
            x.open("Activities");
            for a in asg
                .activities
                .iter()
                .rev()
                .filter(|a| group.is_none_or(|g| a.group == g))
            {
                x.open("member");
                activity_xml(&mut x, a, ts);
                x.close("member");
            }
            x.close("Activities");
            Ok(Some(x.text()))
        }
        other => Err(QueryError {
            status: axum::http::StatusCode::BAD_REQUEST,
            code: "InvalidAction",
            message: format!("The action {other} is not valid for this web service."),
        }),
    }
}

fn activity_xml(x: &mut Xml, a: &super::model::Activity, ts: &Timestamps) {
    x.field("ActivityId", &a.id)
        .field("AutoScalingGroupName", &a.group)
        .field("Description", &a.description)
        .field("Cause", &a.cause)
        .field("StartTime", ts.at(a.at))
        .field("EndTime", ts.at(a.at))
        .field("StatusCode", a.status)
        .field("Progress", 100);
}
