# Alerts to an SNS topic (e-mails subscribed) and any topics given: launches stuck in a
# hook, runners that registered and went offline, registrations without an instance, an
# empty warm pool, GitHub's rate limit running out, Lambda errors, and metrics that stopped
# coming.

resource "aws_sns_topic" "alerts" {
  name              = "${var.name}-alerts"
  kms_master_key_id = "alias/aws/sns"
  tags              = local.tags
}

resource "aws_sns_topic_subscription" "email" {
  for_each  = toset(var.alarm_emails)
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = each.value
}

locals {
  alert_actions = concat([aws_sns_topic.alerts.arn], var.alarm_topic_arns)
}

locals {
  alert_specs = {
    # A launch hook not completed (registration Lambda, or the agent).
    stuck-launches = {
      description = "Instances of ${var.name} pending for 15 minutes: a launch hook is not being completed (the registration Lambda's log, or journalctl -u warmfleet-agent)"
      namespace   = "AWS/AutoScaling"
      metric      = "GroupPendingInstances"
      statistic   = "Minimum"
      period      = 300
      periods     = 3
      operator    = "GreaterThanThreshold"
      threshold   = 0
      missing     = "notBreaching"
      enabled     = true
    }
    # What only GitHub knows, from the sweep's listings (every 5 minutes in a small fleet,
    # less often as the rate limit share requires: 15-minute periods hold at least one up
    # to about 12,000 runners at the defaults). Runners registered but not listening while
    # in service:
    offline-runners = {
      description = "Runners of ${var.name} offline in every listing for 15 minutes: their instances are in service but their runner does not listen"
      namespace   = local.metric_namespace
      metric      = local.metrics.offline
      statistic   = "Minimum"
      period      = 900
      periods     = 1
      operator    = "GreaterThanThreshold"
      threshold   = 0
      missing     = "notBreaching"
      enabled     = true
    }
    # Registrations without an instance, found in every listing for 45 minutes (the sweep
    # deletes each it finds: something keeps registering runners no instance of the group
    # runs, or they cannot be deleted).
    orphan-runners = {
      description = "Every listing of ${var.name}'s runners for 45 minutes found runners with its labels but no instance in the group (the deregistration Lambda's log says which)"
      namespace   = local.metric_namespace
      metric      = local.metrics.orphans
      statistic   = "Minimum"
      period      = 900
      periods     = 3
      operator    = "GreaterThanThreshold"
      threshold   = 0
      missing     = "notBreaching"
      enabled     = true
    }
    github-rate-limit = {
      description = "Less than ${var.github_rate_limit_alarm_percent}% of the GitHub rate limit ${var.name} uses is left: launches may soon wait for tokens (GitHubApiCalls says who spends it)"
      namespace   = local.metric_namespace
      metric      = local.metrics.rate_left
      statistic   = "Minimum"
      period      = 300
      periods     = 1
      operator    = "LessThanThreshold"
      threshold   = var.github_rate_limit_alarm_percent
      missing     = "notBreaching"
      enabled     = var.github_rate_limit_alarm_percent > 0
    }
    # The agent gave up on instances: a bootstrap abandoned, or a runner that could not
    # run. One is a hiccup the group mends; several in a row repeat on every launch, e.g.
    # a runner version GitHub no longer accepts (docs/usage/install.md, "Upgrading the
    # runner").
    repeated-failures = {
      description = "3 or more instances of ${var.name} failed to get a runner into service within 5 minutes: the agent's journal on one says why (journalctl -u warmfleet-agent); a runner version GitHub refuses needs a new AMI"
      namespace   = local.metric_namespace
      metric      = local.metrics.failed
      statistic   = "Sum"
      period      = 300
      periods     = 1
      operator    = "GreaterThanOrEqualToThreshold"
      threshold   = 3
      missing     = "notBreaching"
      enabled     = true
    }
    no-runner-metrics = {
      description = "record_metric has published nothing for ${var.name} in 10 minutes: scaling is blind"
      namespace   = local.metric_namespace
      metric      = local.metrics.idle
      statistic   = "SampleCount"
      period      = 300
      periods     = 2
      operator    = "LessThanThreshold"
      threshold   = 1
      missing     = "breaching"
      enabled     = true
    }
    empty-warm-pool = {
      description = "${var.name}'s warm pool has been empty for 30 minutes: scale-outs launch cold"
      namespace   = "AWS/AutoScaling"
      metric      = "WarmPoolWarmedCapacity"
      statistic   = "Maximum"
      period      = 300
      periods     = 6
      operator    = "LessThanThreshold"
      threshold   = 1
      missing     = "breaching"
      enabled     = local.warm_pool && var.warm_pool_min_size > 0
    }
  }
  alerts = { for k, a in local.alert_specs : k => a if a.enabled }
}

resource "aws_cloudwatch_metric_alarm" "alert" {
  for_each            = local.alerts
  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = local.dimensions
  statistic           = each.value.statistic
  period              = each.value.period
  evaluation_periods  = each.value.periods
  comparison_operator = each.value.operator
  threshold           = each.value.threshold
  treat_missing_data  = each.value.missing
  alarm_actions       = local.alert_actions
  ok_actions          = local.alert_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "lambda_errors" {
  for_each            = local.functions
  alarm_name          = "${var.name}-${each.key}-errors"
  alarm_description   = "The ${each.key} Lambda of ${var.name} failed (its log group: /aws/lambda/${var.name}-${each.key})"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.this[each.key].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alert_actions
  tags                = local.tags
}
