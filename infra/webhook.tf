# The webhook receiver: GitHub's workflow_job deliveries reach the webhook Lambda through its
# function URL, which adds one instance to the group per queued job at once (the job policy
# below), remembers each job in a DynamoDB table so that a repeated or late delivery adds
# nothing, and publishes each job's queue time. The URL needs no IAM signature (GitHub
# cannot sign SigV4): the HMAC of each delivery, with the secret below, is its
# authentication, checked before anything else is read.

# The webhook secret: the input, or one generated here. Rotating it: put a new value in the
# secret (Secrets Manager keeps the old one as AWSPREVIOUS, still accepted), then give the
# new value to GitHub's webhook.
data "aws_secretsmanager_random_password" "webhook" {
  count               = var.webhook_secret == "" ? 1 : 0
  password_length     = 40
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "webhook" {
  #checkov:skip=CKV2_AWS_57:rotation is a change on GitHub's side too (infra/README.md says how); Secrets Manager cannot make it alone
  #checkov:skip=CKV_AWS_149:encrypted with Secrets Manager's own key unless webhook_secret_kms_key_arn is given
  name        = "${local.secret_prefix}/${var.name}/webhook"
  description = "The secret GitHub signs ${var.name}'s workflow_job deliveries with (X-Hub-Signature-256)"
  kms_key_id  = var.webhook_secret_kms_key_arn != "" ? var.webhook_secret_kms_key_arn : null
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "webhook" {
  secret_id     = aws_secretsmanager_secret.webhook.id
  secret_string = var.webhook_secret != "" ? var.webhook_secret : data.aws_secretsmanager_random_password.webhook[0].random_password
  lifecycle {
    # The generated value is read anew at each plan: keep the one stored.
    ignore_changes = [secret_string]
  }
}

# Jobs acted on: one item per job, written conditionally, kept a week (TTL).
resource "aws_dynamodb_table" "jobs" {
  #checkov:skip=CKV_AWS_119:encrypted at rest with DynamoDB's own key; the items are job ids and times, nothing secret
  #checkov:skip=CKV_AWS_28:a week of job ids whose loss costs at most one extra instance per job redelivered; no backup needed
  name         = "${var.name}-jobs"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "job_id"
  attribute {
    name = "job_id"
    type = "N"
  }
  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }
  server_side_encryption {
    enabled = true
  }
  tags = local.tags
}

# Run once per queued job by the receiver: +1. A simple policy, so that every run adds its
# instance (ExecutePolicy does not honour its cooldown, and it has no warm-up arithmetic
# to swallow an increment); capped at the group's max_size by Auto Scaling itself.
resource "aws_autoscaling_policy" "job_queued" {
  name                   = local.job_policy
  autoscaling_group_name = aws_autoscaling_group.runners.name
  policy_type            = "SimpleScaling"
  adjustment_type        = "ChangeInCapacity"
  scaling_adjustment     = 1
  cooldown               = 0
}

resource "aws_lambda_function_url" "webhook" {
  #checkov:skip=CKV_AWS_258:GitHub cannot sign SigV4; every delivery's HMAC (X-Hub-Signature-256) is verified before anything is read
  function_name      = aws_lambda_function.this["webhook"].function_name
  authorization_type = "NONE"
}

resource "aws_lambda_permission" "webhook_url" {
  #checkov:skip=CKV_AWS_301:public on purpose: GitHub calls the URL from its own addresses; the delivery's HMAC is the authentication
  statement_id           = "github-webhook"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.this["webhook"].function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}

# Deliveries refused (a bad signature, a body too large) and deliveries that stopped coming.
resource "aws_cloudwatch_metric_alarm" "webhook_refused" {
  alarm_name          = "${var.name}-webhook-refused"
  alarm_description   = "The webhook receiver of ${var.name} refused deliveries (401: a signature that matches neither webhook secret, or 413): a secret out of step with GitHub's, or forged deliveries. Its log: /aws/lambda/${var.name}-webhook"
  namespace           = "AWS/Lambda"
  metric_name         = "Url4xxCount"
  dimensions          = { FunctionName = aws_lambda_function.this["webhook"].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alert_actions
  ok_actions          = local.alert_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "webhook_silent" {
  count               = var.webhook_silence_alarm_hours > 0 ? 1 : 0
  alarm_name          = "${var.name}-webhook-silent"
  alarm_description   = "No webhook delivery reached ${var.name}'s receiver for ${var.webhook_silence_alarm_hours} hours: is GitHub's webhook there, active, and pointing at the webhook_url output? Scaling falls back to the idle-runner alarms (slower)."
  namespace           = "AWS/Lambda"
  metric_name         = "UrlRequestCount"
  dimensions          = { FunctionName = aws_lambda_function.this["webhook"].function_name }
  statistic           = "Sum"
  period              = 3600
  evaluation_periods  = var.webhook_silence_alarm_hours
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alert_actions
  ok_actions          = local.alert_actions
  tags                = local.tags
}

# What an operator watches: queue time, the runners, the group and its warm pool.
resource "aws_cloudwatch_dashboard" "fleet" {
  dashboard_name = var.name
  dashboard_body = jsonencode({
    widgets = [
      {
        type = "metric", x = 0, y = 0, width = 12, height = 6
        properties = {
          title  = "Job queue time (s)"
          region = local.region
          stat   = "p50"
          period = 300
          metrics = [
            [local.metric_namespace, local.metrics.queue_time, "AutoScalingGroupName", var.name, { stat = "p50", label = "p50" }],
            [local.metric_namespace, local.metrics.queue_time, "AutoScalingGroupName", var.name, { stat = "p95", label = "p95" }],
          ]
        }
      },
      {
        type = "metric", x = 12, y = 0, width = 12, height = 6
        properties = {
          title  = "Runners"
          region = local.region
          stat   = "Minimum"
          period = 60
          metrics = [
            [local.metric_namespace, local.metrics.idle, "AutoScalingGroupName", var.name],
            [local.metric_namespace, local.metrics.busy, "AutoScalingGroupName", var.name],
            [local.metric_namespace, local.metrics.offline, "AutoScalingGroupName", var.name],
          ]
        }
      },
      {
        type = "metric", x = 0, y = 6, width = 12, height = 6
        properties = {
          title  = "Group and warm pool"
          region = local.region
          stat   = "Maximum"
          period = 60
          metrics = [
            ["AWS/AutoScaling", "GroupDesiredCapacity", "AutoScalingGroupName", var.name],
            ["AWS/AutoScaling", "GroupInServiceInstances", "AutoScalingGroupName", var.name],
            ["AWS/AutoScaling", "WarmPoolWarmedCapacity", "AutoScalingGroupName", var.name],
          ]
        }
      },
      {
        type = "metric", x = 12, y = 6, width = 12, height = 6
        properties = {
          title  = "Webhook deliveries"
          region = local.region
          stat   = "Sum"
          period = 300
          metrics = [
            ["AWS/Lambda", "UrlRequestCount", "FunctionName", "${var.name}-webhook"],
            ["AWS/Lambda", "Url4xxCount", "FunctionName", "${var.name}-webhook"],
            ["AWS/Lambda", "Url5xxCount", "FunctionName", "${var.name}-webhook"],
          ]
        }
      },
    ]
  })
}
