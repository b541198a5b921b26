# Scaling on the idle-runner count record_metric publishes every minute: idle runners
# below the target scale out, above it scale in. With a target of 0, "below" can never
# happen, so AllRunnersBusy (1 when none is idle and some are busy) scales out instead.

locals {
  dimensions = { AutoScalingGroupName = var.name }
  # One instance per missing idle runner, up to scale_out_max_step at once: the alarm's
  # breach (IdleRunners - target) of [-1.5, 0) adds 1, [-2.5, -1.5) adds 2, and so on, the
  # last step open-ended. With a target of 0 (AllRunnersBusy at 1): one.
  scale_out_steps = var.idle_runners_target > 0 ? [
    for k in range(1, var.scale_out_max_step + 1) : {
      lower  = k == var.scale_out_max_step ? null : -(k + 0.5)
      upper  = k == 1 ? 0 : -(k - 0.5)
      change = k
    }
    ] : [{
      lower  = 0
      upper  = null
      change = 1
  }]
  # Mirrored for scale-in: a breach of [0, 1.5) removes 1, [1.5, 2.5) removes 2, and so on,
  # the last step open-ended (IdleRunners - target is a whole number above 0).
  scale_in_steps = [
    for k in range(1, var.scale_in_max_step + 1) : {
      lower  = k == 1 ? 0 : k - 0.5
      upper  = k == var.scale_in_max_step ? null : k + 0.5
      change = -k
    }
  ]
}

resource "aws_autoscaling_policy" "scale_out" {
  name                      = "${var.name}-scale-out"
  autoscaling_group_name    = aws_autoscaling_group.runners.name
  policy_type               = "StepScaling"
  adjustment_type           = "ChangeInCapacity"
  estimated_instance_warmup = var.instance_warmup_seconds
  dynamic "step_adjustment" {
    for_each = local.scale_out_steps
    content {
      metric_interval_lower_bound = step_adjustment.value.lower
      metric_interval_upper_bound = step_adjustment.value.upper
      scaling_adjustment          = step_adjustment.value.change
    }
  }
}

resource "aws_autoscaling_policy" "scale_in" {
  name                   = "${var.name}-scale-in"
  autoscaling_group_name = aws_autoscaling_group.runners.name
  policy_type            = "StepScaling"
  adjustment_type        = "ChangeInCapacity"
  dynamic "step_adjustment" {
    for_each = local.scale_in_steps
    content {
      metric_interval_lower_bound = step_adjustment.value.lower
      metric_interval_upper_bound = step_adjustment.value.upper
      scaling_adjustment          = step_adjustment.value.change
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "idle_runners_low" {
  alarm_name          = "${var.name}-idle-runners-low"
  alarm_description   = var.idle_runners_target > 0 ? "Fewer than ${var.idle_runners_target} idle runners: scale out" : "Every runner busy: scale out"
  namespace           = local.metric_namespace
  metric_name         = var.idle_runners_target > 0 ? local.metrics.idle : local.metrics.all_busy
  dimensions          = local.dimensions
  statistic           = var.idle_runners_target > 0 ? "Minimum" : "Maximum"
  period              = 60
  evaluation_periods  = var.scale_out_evaluation_periods
  comparison_operator = var.idle_runners_target > 0 ? "LessThanThreshold" : "GreaterThanOrEqualToThreshold"
  threshold           = var.idle_runners_target > 0 ? var.idle_runners_target : 1
  # No data (record_metric not running): do not scale on it; the alert below says so.
  treat_missing_data = "notBreaching"
  alarm_actions      = [aws_autoscaling_policy.scale_out.arn]
  tags               = local.tags
}

# One minute above the target: a 10-second period on record_metric's latest count (a
# high-resolution metric), so the scale-in acts within seconds of the count rather than
# on the minute after it. It acts once a minute at most: the periods between two counts
# hold none (not breaching; CloudWatch may instead look back to the last count), and an
# alarm that stays in ALARM repeats its Auto Scaling action once a minute. More minutes:
# that many one-minute periods.
resource "aws_cloudwatch_metric_alarm" "idle_runners_high" {
  alarm_name          = "${var.name}-idle-runners-high"
  alarm_description   = "More than ${var.idle_runners_target} idle runners: scale in"
  namespace           = local.metric_namespace
  metric_name         = local.metrics.idle
  dimensions          = local.dimensions
  statistic           = "Minimum"
  period              = var.scale_in_evaluation_periods == 1 ? 10 : 60
  evaluation_periods  = var.scale_in_evaluation_periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.idle_runners_target
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_autoscaling_policy.scale_in.arn]
  tags                = local.tags
}
