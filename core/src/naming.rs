//! Every name warmfleet gives to something outside itself, defined once.
//!
//! Runner names, labels, secret ids, tag keys, hook names and metric names are read by
//! several programs (agent, Lambdas, Terraform, the testbed); they must agree, so they live
//! here and nowhere else.

/// Label carried by every runner warmfleet registers.
pub const FLEET_LABEL: &str = "warmfleet";

/// A deployment: what tells one installation's runners from another's in the same GitHub
/// organisation (staging and production accounts, two regions) that may use the same group
/// names. Its runners carry `warmfleet-<id>`, and every listing of the deployment filters
/// on that label; without an id, on `warmfleet` alone (one deployment per organisation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployment(Option<String>);

impl Deployment {
    /// A deployment id: 1 to 40 lowercase letters, digits and hyphens (it becomes part of a
    /// label); empty: none.
    pub fn parse(id: &str) -> Result<Deployment, String> {
        let id = id.trim();
        if id.is_empty() {
            return Ok(Deployment(None));
        }
        let fits = id.len() <= 40
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !fits {
            return Err(format!(
                "{id:?} is not a deployment id (1 to 40 lowercase letters, digits and hyphens)"
            ));
        }
        Ok(Deployment(Some(id.to_owned())))
    }

    /// The label every listing of this deployment's runners filters on.
    pub fn label(&self) -> String {
        match &self.0 {
            Some(id) => format!("{FLEET_LABEL}-{id}"),
            None => FLEET_LABEL.to_owned(),
        }
    }
}

/// Prefix of every per-instance secret: `warmfleet/<asg>/<instance-id>`.
pub const SECRET_PREFIX: &str = "warmfleet";

/// Tag on a per-instance secret naming the instance it belongs to (its id).
pub const TAG_INSTANCE_ID: &str = "warmfleet:instance-id";
/// Tag on a per-instance secret with the instance's ARN. The instance role's IAM policy
/// compares it with `ec2:SourceInstanceARN`, so an instance reads only its own secret.
pub const TAG_INSTANCE_ARN: &str = "warmfleet:instance-arn";
/// Tag on a per-instance secret naming its Auto Scaling group.
pub const TAG_ASG_NAME: &str = "warmfleet:asg-name";

/// Launch hook completed by the registration Lambda.
pub const HOOK_REGISTRATION: &str = "registration";
/// Launch hook completed by the agent once the runner listens.
pub const HOOK_BOOTSTRAP: &str = "bootstrap";
/// Terminate hook completed after the drain.
pub const HOOK_DEREGISTRATION: &str = "deregistration";

/// The step scaling policy of each group that the webhook receiver runs once per queued
/// job: one step, +1 from a breach of 0 up, no warm-up.
pub const POLICY_JOB_QUEUED: &str = "warmfleet-job-queued";

/// The SSM comment on every drain command, by which the sweep finds the one sent last.
pub const DRAIN_COMMENT: &str = "warmfleet drain";

/// CloudWatch namespace of the fleet's metrics.
pub const METRIC_NAMESPACE: &str = "Warmfleet";
pub const METRIC_IDLE_RUNNERS: &str = "IdleRunners";
pub const METRIC_BUSY_RUNNERS: &str = "BusyRunners";
pub const METRIC_OFFLINE_RUNNERS: &str = "OfflineRunners";
/// 1 when no runner of the group is idle and at least one is busy, else 0: the scale-out
/// signal of an idle-runner target of 0 (`IdleRunners < 0` can never alarm).
pub const METRIC_ALL_RUNNERS_BUSY: &str = "AllRunnersBusy";
pub const METRIC_GITHUB_API_CALLS: &str = "GitHubApiCalls";
pub const METRIC_GITHUB_RATE_LIMIT_REMAINING: &str = "GitHubRateLimitRemaining";
/// The same, in per cent of the hourly limit (what the budget alarm watches).
pub const METRIC_GITHUB_RATE_LIMIT_PERCENT: &str = "GitHubRateLimitRemainingPercent";
/// The deployment's GitHub requests in the rate limit's current window, every function's
/// (the sweep's figure from the account in the job table).
pub const METRIC_GITHUB_REQUESTS_THIS_WINDOW: &str = "GitHubRequestsThisWindow";
/// Runners registered for the group without an instance in it (found by the sweep).
pub const METRIC_ORPHAN_RUNNERS: &str = "OrphanRunners";
/// Seconds each job waited from queued to started (from the `workflow_job` webhooks).
pub const METRIC_JOB_QUEUE_TIME: &str = "JobQueueTime";
/// Instances the agent gave up on (1 each): a bootstrap hook abandoned, or an instance in
/// service marked unhealthy because its runner could not run. Published by the agent.
pub const METRIC_FAILED_INSTANCES: &str = "FailedInstances";
/// The one dimension of every metric.
pub const METRIC_DIMENSION_ASG: &str = "AutoScalingGroupName";

/// The runner's name: the EC2 instance id, so that GitHub, AWS and logs share one key.
pub fn runner_name(instance_id: &str) -> String {
    instance_id.to_owned()
}

/// Labels of a runner: the fleet label, the deployment's, the group, the instance, then
/// the operator's own, without duplicates, in that order.
pub fn runner_labels(
    deployment: &Deployment,
    asg_name: &str,
    instance_id: &str,
    extra: &[String],
) -> Vec<String> {
    let mut labels: Vec<String> = Vec::with_capacity(4 + extra.len());
    let own = deployment.label();
    let fixed = [FLEET_LABEL, own.as_str(), asg_name, instance_id];
    for label in fixed.into_iter().chain(extra.iter().map(String::as_str)) {
        if !label.is_empty() && !labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
            labels.push(label.to_owned());
        }
    }
    labels
}

/// The id of an instance's secret in Secrets Manager.
pub fn instance_secret_id(asg_name: &str, instance_id: &str) -> String {
    prefixed_instance_secret_id(SECRET_PREFIX, asg_name, instance_id)
}

/// The same under another prefix than `warmfleet` (the agent's `secret_prefix` setting).
pub fn prefixed_instance_secret_id(prefix: &str, asg_name: &str, instance_id: &str) -> String {
    format!("{prefix}/{asg_name}/{instance_id}")
}

/// What the ids of every instance secret of a group start with.
pub fn group_secret_prefix(asg_name: &str) -> String {
    format!("{SECRET_PREFIX}/{asg_name}/")
}

/// The secret holding the registration (`kind` "registration") or remove ("remove") token
/// the group's launches or drains share while it is fresh. The module creates both; no
/// instance may read them (they carry no instance's tag), and the sweep, which looks for
/// instance ids one level under the group, passes them by.
pub fn shared_token_secret_id(asg_name: &str, kind: &str) -> String {
    format!("{SECRET_PREFIX}/{asg_name}/tokens/{kind}")
}

/// The secret the webhook receiver checks GitHub's signatures with (the module creates it
/// next to the group's instance secrets).
pub fn webhook_secret_id(asg_name: &str) -> String {
    format!("{SECRET_PREFIX}/{asg_name}/webhook")
}

/// The instance id a per-instance secret id names, if it is one of this group's: one level
/// under the group, and an EC2 instance id (`i-...`). The group's other secrets (the
/// webhook's, the shared tokens) live under the same prefix and are not instances'.
pub fn instance_of_secret<'a>(asg_name: &str, secret_id: &'a str) -> Option<&'a str> {
    let rest = secret_id.strip_prefix(SECRET_PREFIX)?.strip_prefix('/')?;
    let id = rest.strip_prefix(asg_name)?.strip_prefix('/')?;
    (id.len() > 2 && id.starts_with("i-") && !id.contains('/')).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_token_secrets_are_no_instances_secrets() {
        let id = shared_token_secret_id("runners", "registration");
        assert_eq!(id, "warmfleet/runners/tokens/registration");
        assert!(id.starts_with(&group_secret_prefix("runners")));
        assert_eq!(instance_of_secret("runners", &id), None);
        // Nor is the webhook's, which the sweep once took for a gone instance's.
        assert_eq!(
            instance_of_secret("runners", &webhook_secret_id("runners")),
            None
        );
        assert_eq!(instance_of_secret("runners", "warmfleet/runners/i-"), None);
        assert_eq!(
            instance_of_secret("runners", &instance_secret_id("runners", "i-1")),
            Some("i-1")
        );
    }

    #[test]
    fn labels_start_with_fleet_group_instance_and_skip_duplicates() {
        let extra = vec!["gpu".to_owned(), "WARMFLEET".to_owned(), String::new()];
        let none = Deployment::default();
        assert_eq!(
            runner_labels(&none, "ci-asg", "i-0abc", &extra),
            ["warmfleet", "ci-asg", "i-0abc", "gpu"]
        );
        let prod = Deployment::parse("prod-eu").unwrap();
        assert_eq!(
            runner_labels(&prod, "ci-asg", "i-0abc", &extra),
            ["warmfleet", "warmfleet-prod-eu", "ci-asg", "i-0abc", "gpu"]
        );
    }

    #[test]
    fn a_deployment_id_becomes_a_label_or_is_refused_by_name() {
        assert_eq!(Deployment::parse("").unwrap().label(), "warmfleet");
        assert_eq!(
            Deployment::parse(" 1a2b3c4d ").unwrap().label(),
            "warmfleet-1a2b3c4d"
        );
        for bad in ["Prod", "a,b", "a b", "ü", &"x".repeat(41)] {
            let e = Deployment::parse(bad).unwrap_err();
            assert!(e.contains("is not a deployment id"), "{e}");
        }
    }

    #[test]
    fn secret_ids_round_trip() {
        let id = instance_secret_id("ci-asg", "i-0abc");
        assert_eq!(id, "warmfleet/ci-asg/i-0abc");
        assert_eq!(instance_of_secret("ci-asg", &id), Some("i-0abc"));
        assert_eq!(instance_of_secret("other", &id), None);
        assert_eq!(instance_of_secret("ci-asg", "warmfleet/ci-asg/"), None);
        assert_eq!(instance_of_secret("ci-asg", "warmfleet/ci-asg/a/b"), None);
    }
}
