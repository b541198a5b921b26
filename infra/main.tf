# The names code and module share come from core/src/naming.rs and control/src/config.rs
# (infra/tests keeps them in step): the hooks, the metrics, the secrets and their tags, the
# Lambdas' environment.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

data "aws_subnet" "first" {
  id = var.subnet_ids[0]
}

data "aws_ec2_instance_type" "runner" {
  instance_type = var.instance_types[0]
}

# The AMI's root device, for the launch template's root volume; its architecture, for the
# runners' default labels.
data "aws_ami" "runner" {
  filter {
    name   = "image-id"
    values = [var.ami_id]
  }
}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name
  vpc_id    = data.aws_subnet.first.vpc_id

  hooks = {
    registration   = "registration"
    bootstrap      = "bootstrap"
    deregistration = "deregistration"
  }
  metric_namespace = "Warmfleet"
  metrics = {
    idle       = "IdleRunners"
    busy       = "BusyRunners"
    offline    = "OfflineRunners"
    orphans    = "OrphanRunners"
    all_busy   = "AllRunnersBusy"
    api_calls  = "GitHubApiCalls"
    rate_left  = "GitHubRateLimitRemainingPercent"
    queue_time = "JobQueueTime"
    failed     = "FailedInstances"
  }
  # The functions that hold the GitHub credential.
  github_functions = ["registration", "deregistration"]
  # The step policy the webhook receiver runs once per queued job.
  job_policy       = "warmfleet-job-queued"
  secret_prefix    = "warmfleet"
  tag_instance_arn = "warmfleet:instance-arn"

  # Hibernation needs one instance type, on-demand capacity.
  mixed     = var.spot || length(var.instance_types) > 1
  warm_pool = var.warm_pool && !local.mixed

  ram_gib          = ceil(data.aws_ec2_instance_type.runner.memory_size / 1024)
  zip_dir          = var.lambda_zip_dir != "" ? var.lambda_zip_dir : "${path.module}/../target/lambda"
  lambda_subnets   = length(var.lambda_subnet_ids) > 0 ? var.lambda_subnet_ids : var.subnet_ids
  group_arn        = "arn:${local.partition}:autoscaling:${local.region}:${local.account}:autoScalingGroup:*:autoScalingGroupName/${var.name}"
  instance_secrets = "arn:${local.partition}:secretsmanager:${local.region}:${local.account}:secret:${local.secret_prefix}/${var.name}/*"
  github_secret    = data.aws_secretsmanager_secret.github.arn

  runner_labels = module.labels.labels
  # What tells this deployment's runners from another's in the same organisation: the
  # account and region (a group's name is unique in both) unless given.
  deployment = var.deployment_id != "" ? var.deployment_id : substr(sha256("${local.account}/${local.region}"), 0, 8)

  tags = merge(var.tags, { "warmfleet:group" = var.name })
}

module "labels" {
  source         = "./modules/labels"
  architecture   = data.aws_ami.runner.architecture
  default_labels = var.runner_default_labels
  labels         = var.runner_labels
}

data "aws_secretsmanager_secret" "github" {
  arn  = startswith(var.github_credential_secret, "arn:") ? var.github_credential_secret : null
  name = startswith(var.github_credential_secret, "arn:") ? null : var.github_credential_secret
}

check "warm_pool_needs_hibernation" {
  assert {
    condition     = !var.warm_pool || !local.mixed
    error_message = "The warm pool is off: hibernation needs on-demand capacity of one instance type (spot or several instance_types were asked for)."
  }
}
