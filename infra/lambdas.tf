# The Lambdas (provided.al2023, the zips `make artifacts` builds), their logs, and
# what triggers them: lifecycle events by hook name, the schedules, and (for the webhook
# receiver) its function URL, in webhook.tf.

locals {
  common_env = merge(
    {
      WARMFLEET_GITHUB_URL               = var.github_url
      WARMFLEET_GITHUB_CREDENTIAL_SECRET = local.github_secret
      WARMFLEET_DEPLOYMENT               = local.deployment
      # Where the functions that talk to GitHub account its requests together
      # (control/src/spending.rs); the sweep keeps the deployment within its share by it.
      WARMFLEET_JOB_TABLE = aws_dynamodb_table.jobs.name
    },
    var.github_api_url != "" ? { WARMFLEET_GITHUB_API_URL = var.github_api_url } : {},
  )
  # Every function the module may deploy; `functions`: those this deployment does.
  all_functions = {
    registration = {
      zip                  = "warmfleet-registration"
      timeout              = 60
      reserved_concurrency = -1
      environment = merge(local.common_env, {
        WARMFLEET_RUNNER_MODE     = var.runner_mode
        WARMFLEET_RUNNER_GROUP_ID = tostring(var.runner_group_id)
        WARMFLEET_RUNNER_LABELS   = join(",", local.runner_labels)
      })
    }
    deregistration = {
      zip                  = "warmfleet-deregistration"
      timeout              = 900
      reserved_concurrency = -1
      environment = merge(local.common_env, {
        WARMFLEET_GROUPS        = var.name
        WARMFLEET_DRAIN_TIMEOUT = "${var.drain_timeout_seconds}s"
        WARMFLEET_SWEEP_PERIOD  = "${local.sweep_minutes}m"
        WARMFLEET_GITHUB_SHARE  = tostring(var.github_rate_limit_share)
        }, var.use_runner_table ? {
        WARMFLEET_RUNNER_TABLE = "${var.name}-runners"
      } : {})
    }
    # No GitHub credential: it counts from Auto Scaling alone (and, with
    # webhook_claims_idle_runners, notes the idle runners for the receiver to claim).
    record-metric = {
      zip                  = "warmfleet-record-metric"
      timeout              = 60
      reserved_concurrency = -1
      environment = merge(
        { WARMFLEET_GROUPS = var.name },
        var.webhook_claims_idle_runners ? { WARMFLEET_JOB_TABLE = aws_dynamodb_table.jobs.name } : {},
        var.use_runner_table ? { WARMFLEET_RUNNER_TABLE = "${var.name}-runners" } : {},
      )
    }
    # No GitHub credential: it reads only the webhook secret. GitHub waits 10 s for an
    # answer.
    webhook = {
      zip                  = "warmfleet-webhook"
      timeout              = 8
      reserved_concurrency = var.webhook_reserved_concurrency
      environment = {
        WARMFLEET_GROUPS         = var.name
        WARMFLEET_RUNNER_LABELS  = join(",", local.runner_labels)
        WARMFLEET_DEPLOYMENT     = local.deployment
        WARMFLEET_WEBHOOK_SECRET = aws_secretsmanager_secret.webhook.arn
        WARMFLEET_JOB_TABLE      = aws_dynamodb_table.jobs.name
      }
    }
    # The group's custom termination policy (use_runner_table): no GitHub credential and
    # nothing else to set up, for Auto Scaling waits 2 s for its answer, a cold start
    # included.
    termination-policy = {
      zip                  = "warmfleet-termination-policy"
      timeout              = 3
      reserved_concurrency = -1
      environment = {
        WARMFLEET_RUNNER_TABLE = "${var.name}-runners"
      }
    }
  }
  functions = {
    for name, f in local.all_functions : name => f
    if name != "termination-policy" || var.use_runner_table
  }
}

# The registration and remove tokens a group's launches and drains share while fresh
# (control/src/tokens.rs): created empty, written by the functions. No instance may read
# them (the instance role reads only secrets tagged with its own ARN).
resource "aws_secretsmanager_secret" "shared_token" {
  #checkov:skip=CKV2_AWS_57:the functions replace the token before it expires (GitHub's tokens live an hour); rotation has nothing to add
  #checkov:skip=CKV_AWS_149:encrypted with Secrets Manager's own key, as the per-instance secrets holding the same tokens
  for_each                = toset(["registration", "remove"])
  name                    = "${local.secret_prefix}/${var.name}/tokens/${each.key}"
  description             = "The ${each.key} token ${var.name}'s ${each.key == "registration" ? "launches" : "drains"} share while it has 45 minutes left"
  recovery_window_in_days = 0
  tags                    = local.tags
}

resource "aws_cloudwatch_log_group" "lambda" {
  #checkov:skip=CKV_AWS_158:encrypted with CloudWatch Logs' own key; the logs hold no secret (tokens never reach them)
  #checkov:skip=CKV_AWS_338:retention is the log_retention_days input (30 days by default: operational logs)
  for_each          = local.functions
  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_116:a failed lifecycle event is retried by Lambda and EventBridge, and the scheduled sweep reconciles whatever is left; a dead-letter queue would hold nothing to act on
  #checkov:skip=CKV_AWS_115:no concurrency cap but the webhook receiver's: a scale-out of many instances must not have its registrations throttled
  #checkov:skip=CKV_AWS_272:the zips come from make artifacts; code signing needs a signing profile the module does not impose
  #checkov:skip=CKV_AWS_173:the environment holds names and settings, no secret (the GitHub credential stays in Secrets Manager)
  for_each         = local.functions
  function_name    = "${var.name}-${each.key}"
  role             = aws_iam_role.lambda[each.key].arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  filename         = "${local.zip_dir}/${var.lambda_architecture}/${each.value.zip}.zip"
  source_code_hash = filebase64sha256("${local.zip_dir}/${var.lambda_architecture}/${each.value.zip}.zip")
  timeout          = each.value.timeout
  memory_size      = 128
  # -1: unreserved. The webhook receiver's reservation bounds what a flood of deliveries
  # can take from the account's concurrency (and guarantees it that much).
  reserved_concurrent_executions = each.value.reserved_concurrency

  environment {
    variables = each.value.environment
  }

  vpc_config {
    subnet_ids         = local.lambda_subnets
    security_group_ids = [aws_security_group.lambda.id]
  }

  tracing_config {
    mode = "PassThrough"
  }

  tags       = local.tags
  depends_on = [aws_cloudwatch_log_group.lambda]
}

# --- Triggers -------------------------------------------------------------------------------

locals {
  lifecycle_rules = {
    registration = {
      detail_type = "EC2 Instance-launch Lifecycle Action"
      hook        = local.hooks.registration
    }
    deregistration = {
      detail_type = "EC2 Instance-terminate Lifecycle Action"
      hook        = local.hooks.deregistration
    }
  }
  # The sweep paces its listings of runners in steps of its schedule (WARMFLEET_SWEEP_PERIOD).
  sweep_minutes = 5
  schedules = {
    record-metric  = "rate(1 minute)"
    deregistration = "rate(${local.sweep_minutes} minutes)"
  }
}

resource "aws_cloudwatch_event_rule" "lifecycle" {
  for_each    = local.lifecycle_rules
  name        = "${var.name}-${each.key}"
  description = "${each.value.detail_type}s of ${var.name}'s ${each.value.hook} hook"
  event_pattern = jsonencode({
    source      = ["aws.autoscaling"]
    detail-type = [each.value.detail_type]
    detail = {
      AutoScalingGroupName = [var.name]
      LifecycleHookName    = [each.value.hook]
    }
  })
  tags = local.tags
}

resource "aws_cloudwatch_event_target" "lifecycle" {
  for_each = local.lifecycle_rules
  rule     = aws_cloudwatch_event_rule.lifecycle[each.key].name
  arn      = aws_lambda_function.this[each.key].arn
  retry_policy {
    maximum_retry_attempts       = 3
    maximum_event_age_in_seconds = 600
  }
}

resource "aws_cloudwatch_event_rule" "schedule" {
  for_each            = local.schedules
  name                = "${var.name}-${each.key}-schedule"
  description         = each.key == "deregistration" ? "The sweep of ${var.name}" : "${var.name}'s runner metrics"
  schedule_expression = each.value
  tags                = local.tags
}

resource "aws_cloudwatch_event_target" "schedule" {
  for_each = local.schedules
  rule     = aws_cloudwatch_event_rule.schedule[each.key].name
  arn      = aws_lambda_function.this[each.key].arn
}

resource "aws_lambda_permission" "lifecycle" {
  for_each      = local.lifecycle_rules
  statement_id  = "lifecycle-events"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this[each.key].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.lifecycle[each.key].arn
}

resource "aws_lambda_permission" "schedule" {
  for_each      = local.schedules
  statement_id  = "schedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this[each.key].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.schedule[each.key].arn
}
