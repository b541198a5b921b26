# Least privilege: each Lambda and the instance role get only the actions their code calls
# (infra/tests checks this against the Rust sources), on the narrowest resources.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "lambda" {
  for_each           = local.functions
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

# What every function needs: its log group and its network interfaces in the VPC (the
# Lambda service makes them with the function's role).
data "aws_iam_policy_document" "lambda_common" {
  #checkov:skip=CKV_AWS_111:the only unconstrained writes are the network interfaces the Lambda service makes in the VPC, which EC2 cannot narrow by resource
  #checkov:skip=CKV_AWS_356:the same: ec2:CreateNetworkInterface and its kin take no narrower resource for Lambda's VPC attachment
  for_each = local.functions
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda[each.key].arn}:*"]
  }
  statement {
    sid = "VpcNetworkInterfaces"
    actions = [
      "ec2:CreateNetworkInterface",
      "ec2:DescribeNetworkInterfaces",
      "ec2:DeleteNetworkInterface",
      "ec2:AssignPrivateIpAddresses",
      "ec2:UnassignPrivateIpAddresses",
    ]
    resources = ["*"] # the Lambda service's own calls: EC2 offers no narrower resource here
  }
}

# The GitHub credential, for the functions that talk to GitHub: registration, and
# deregistration (drains and the sweep). record_metric counts from Auto Scaling alone, and
# the webhook receiver reads only its own secret.
data "aws_iam_policy_document" "github_credential" {
  statement {
    sid       = "GitHubCredential"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.github_secret]
  }
  dynamic "statement" {
    for_each = var.github_credential_kms_key_arn != "" ? [1] : []
    content {
      sid       = "GitHubCredentialKey"
      actions   = ["kms:Decrypt"]
      resources = [var.github_credential_kms_key_arn]
    }
  }
}

data "aws_iam_policy_document" "registration" {
  statement {
    sid = "InstanceSecrets"
    actions = [
      "secretsmanager:GetSecretValue",
      "secretsmanager:CreateSecret",
      "secretsmanager:PutSecretValue",
      "secretsmanager:TagResource",
    ]
    resources = [local.instance_secrets]
  }
  # Completes the launch; heartbeats it while GitHub asks to wait (a rate limit).
  statement {
    sid       = "RegistrationHook"
    actions   = ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"]
    resources = [local.group_arn]
  }
  # Adds its GitHub requests to the deployment's account (control/src/spending.rs).
  statement {
    sid       = "GitHubAccount"
    actions   = ["dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }
}

data "aws_iam_policy_document" "deregistration" {
  statement {
    sid = "InstanceSecrets"
    actions = [
      "secretsmanager:GetSecretValue",
      "secretsmanager:PutSecretValue",
      "secretsmanager:DeleteSecret",
    ]
    resources = [local.instance_secrets]
  }
  statement {
    sid       = "FindInstanceSecrets"
    actions   = ["secretsmanager:ListSecrets"]
    resources = ["*"] # ListSecrets takes no resource
  }
  statement {
    sid = "Hooks"
    actions = [
      "autoscaling:CompleteLifecycleAction",
      "autoscaling:RecordLifecycleActionHeartbeat",
      "autoscaling:SetInstanceHealth",
    ]
    resources = [local.group_arn]
  }
  statement {
    sid = "DescribeGroup"
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeWarmPool",
    ]
    resources = ["*"] # Describe calls take no resource
  }
  statement {
    sid     = "DrainOverSsm"
    actions = ["ssm:SendCommand"]
    resources = [
      "arn:${local.partition}:ssm:${local.region}::document/AWS-RunShellScript",
    ]
  }
  statement {
    sid       = "DrainOnTheGroupsInstances"
    actions   = ["ssm:SendCommand"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ssm:resourceTag/aws:autoscaling:groupName"
      values   = [var.name]
    }
  }
  statement {
    sid       = "FollowDrains"
    actions   = ["ssm:GetCommandInvocation"]
    resources = ["*"] # GetCommandInvocation takes no resource
  }
  # Adds its GitHub requests to the deployment's account; the sweep reads it before it
  # lists (control/src/spending.rs, control/src/budget.rs).
  statement {
    sid       = "GitHubAccount"
    actions   = ["dynamodb:UpdateItem", "dynamodb:GetItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }
  # With use_runner_table: whether a runner leaving service was busy (claims), and the
  # sweep deletes the records of instances gone.
  dynamic "statement" {
    for_each = var.use_runner_table ? [1] : []
    content {
      sid       = "RunnerRecords"
      actions   = ["dynamodb:BatchGetItem", "dynamodb:Scan", "dynamodb:DeleteItem"]
      resources = [aws_dynamodb_table.runners[0].arn]
    }
  }
  # The sweep's findings (offline and orphan runners) and GitHub's rate limit.
  statement {
    sid       = "Metrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData takes no resource: the namespace is the condition
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.metric_namespace]
    }
  }
}

data "aws_iam_policy_document" "record_metric" {
  statement {
    sid       = "Metrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData takes no resource: the namespace is the condition
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.metric_namespace]
    }
  }
  statement {
    sid       = "ProtectedInstances"
    actions   = ["autoscaling:DescribeAutoScalingGroups"]
    resources = ["*"] # Describe calls take no resource
  }
  # The idle runners, for the webhook receiver to claim before adding instances.
  dynamic "statement" {
    for_each = var.webhook_claims_idle_runners ? [1] : []
    content {
      sid       = "IdleRunners"
      actions   = ["dynamodb:UpdateItem"]
      resources = [aws_dynamodb_table.jobs.arn]
    }
  }
  # The runners recorded busy (use_runner_table).
  dynamic "statement" {
    for_each = var.use_runner_table ? [1] : []
    content {
      sid       = "BusyRunners"
      actions   = ["dynamodb:Scan"]
      resources = [aws_dynamodb_table.runners[0].arn]
    }
  }
}

# The group's custom termination policy: which of the instances a scale-in may take the
# runner table holds busy.
data "aws_iam_policy_document" "termination_policy" {
  dynamic "statement" {
    for_each = var.use_runner_table ? [1] : []
    content {
      sid       = "BusyRunners"
      actions   = ["dynamodb:BatchGetItem"]
      resources = [aws_dynamodb_table.runners[0].arn]
    }
  }
}

data "aws_iam_policy_document" "webhook" {
  statement {
    sid       = "WebhookSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.webhook.arn]
  }
  dynamic "statement" {
    for_each = var.webhook_secret_kms_key_arn != "" ? [1] : []
    content {
      sid       = "WebhookSecretKey"
      actions   = ["kms:Decrypt"]
      resources = [var.webhook_secret_kms_key_arn]
    }
  }
  statement {
    sid       = "JobLedger"
    actions   = ["dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }
  statement {
    sid       = "ScaleOutPerJob"
    actions   = ["autoscaling:ExecutePolicy"]
    resources = [local.group_arn]
  }
  statement {
    sid       = "QueueTime"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData takes no resource: the namespace is the condition
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.metric_namespace]
    }
  }
}

locals {
  function_policies = {
    registration   = data.aws_iam_policy_document.registration.json
    deregistration = data.aws_iam_policy_document.deregistration.json
    record-metric  = data.aws_iam_policy_document.record_metric.json
    webhook        = data.aws_iam_policy_document.webhook.json
    # Only deployed with use_runner_table.
    termination-policy = data.aws_iam_policy_document.termination_policy.json
  }
}

resource "aws_iam_role_policy" "lambda_common" {
  for_each = local.functions
  name     = "common"
  role     = aws_iam_role.lambda[each.key].id
  policy   = data.aws_iam_policy_document.lambda_common[each.key].json
}

resource "aws_iam_role_policy" "github_credential" {
  for_each = toset(local.github_functions)
  name     = "github-credential"
  role     = aws_iam_role.lambda[each.key].id
  policy   = data.aws_iam_policy_document.github_credential.json
}

resource "aws_iam_role_policy" "lambda" {
  for_each = local.functions
  name     = each.key
  role     = aws_iam_role.lambda[each.key].id
  policy   = local.function_policies[each.key]
}

# --- The runners' instance role ---------------------------------------------------------

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "runner" {
  name               = "${var.name}-runner"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = local.tags
}

resource "aws_iam_instance_profile" "runner" {
  name = "${var.name}-runner"
  role = aws_iam_role.runner.name
  tags = local.tags
}

data "aws_iam_policy_document" "agent" {
  # Its own secret only: the registration Lambda tags each with the instance's ARN, which
  # the instance's role credentials carry as ec2:SourceInstanceARN. Written once per time
  # in service, to take the credential out once the runner is registered.
  statement {
    sid       = "OwnSecret"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]
    resources = [local.instance_secrets]
    condition {
      test     = "StringEquals"
      variable = "secretsmanager:ResourceTag/${local.tag_instance_arn}"
      values   = ["$${ec2:SourceInstanceARN}"]
    }
  }
  statement {
    sid = "OwnLifecycle"
    actions = [
      "autoscaling:CompleteLifecycleAction",
      "autoscaling:RecordLifecycleActionHeartbeat",
      # Kept with use_runner_table too: agents started before it was turned on protect
      # their instances until the refresh replaces them, and must be able to lift it.
      "autoscaling:SetInstanceProtection",
      "autoscaling:SetInstanceHealth",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = [local.group_arn]
  }
  # Busy for the length of each job, with use_runner_table: a record in the runner table
  # (any instance's: its items are keyed by instance id, docs/usage/scale.md).
  dynamic "statement" {
    for_each = var.use_runner_table ? [1] : []
    content {
      sid       = "RecordJobs"
      actions   = ["dynamodb:UpdateItem"]
      resources = [aws_dynamodb_table.runners[0].arn]
    }
  }
  # Counting itself in FailedInstances when it gives up on its instance (the alarm
  # repeated-failures).
  statement {
    sid       = "CountFailure"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData takes no resource; the namespace is the condition
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.metric_namespace]
    }
  }
  statement {
    sid       = "WhereAmIGoing"
    actions   = ["autoscaling:DescribeAutoScalingInstances", "autoscaling:DescribeWarmPool"]
    resources = ["*"] # Describe calls take no resource
  }
}

resource "aws_iam_role_policy" "agent" {
  name   = "warmfleet-agent"
  role   = aws_iam_role.runner.id
  policy = data.aws_iam_policy_document.agent.json
}

# SSM Run Command (the drain) and Session Manager.
resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.runner.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_role_policy_attachment" "extra" {
  for_each   = toset(var.extra_policy_arns)
  role       = aws_iam_role.runner.name
  policy_arn = each.value
}
