# Scaling on the idle-runner count record_metric publishes every minute: idle runners
# below the target scale out, above it scale in. With a target of 0, "below" can never
# happen, so AllRunnersBusy (1 when none is idle and some are busy) scales out instead.

locals {
  dimensions = { AutoScalingGroupName = var.name }
}

resource "aws_autoscaling_policy" "scale_out" {
  name                      = "${var.name}-scale-out"
  autoscaling_group_name    = aws_autoscaling_group.runners.name
  policy_type               = "StepScaling"
  adjustment_type           = "ChangeInCapacity"
  estimated_instance_warmup = 120
  step_adjustment {
    metric_interval_lower_bound = 0
    scaling_adjustment          = var.scale_out_step
  }
}

resource "aws_autoscaling_policy" "scale_in" {
  name                   = "${var.name}-scale-in"
  autoscaling_group_name = aws_autoscaling_group.runners.name
  policy_type            = "StepScaling"
  adjustment_type        = "ChangeInCapacity"
  step_adjustment {
    metric_interval_lower_bound = 0
    scaling_adjustment          = -var.scale_in_step
  }
}

resource "aws_cloudwatch_metric_alarm" "idle_runners_low" {
  alarm_name          = "${var.name}-idle-runners-low"
  alarm_description   = var.idle_runners_target > 0 ? "Fewer than ${var.idle_runners_target} idle runners: scale out" : "Every runner busy: scale out"
  namespace           = local.metric_namespace
  metric_name         = var.idle_runners_target > 0 ? local.metrics.idle : local.metrics.all_busy
  dimensions          = local.dimensions
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = var.scale_out_evaluation_periods
  comparison_operator = var.idle_runners_target > 0 ? "LessThanThreshold" : "GreaterThanOrEqualToThreshold"
  threshold           = var.idle_runners_target > 0 ? var.idle_runners_target : 1
  # No data (record_metric not running): do not scale on it; the alert below says so.
  treat_missing_data = "notBreaching"
  alarm_actions      = [aws_autoscaling_policy.scale_out.arn]
  tags               = local.tags
}

resource "aws_cloudwatch_metric_alarm" "idle_runners_high" {
  alarm_name          = "${var.name}-idle-runners-high"
  alarm_description   = "More than ${var.idle_runners_target} idle runners: scale in"
  namespace           = local.metric_namespace
  metric_name         = local.metrics.idle
  dimensions          = local.dimensions
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = var.scale_in_evaluation_periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.idle_runners_target
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_autoscaling_policy.scale_in.arn]
  tags                = local.tags
}
