# The runners: launch template, Auto Scaling group with its hooks and warm pool.

resource "aws_launch_template" "runner" {
  name_prefix   = "${var.name}-"
  image_id      = var.ami_id
  instance_type = var.instance_types[0]
  key_name      = var.key_name != "" ? var.key_name : null
  user_data = base64encode(templatefile("${path.module}/../cloud-init/user-data.yaml.tftpl", {
    github_url           = var.github_url
    deployment           = local.deployment
    runner_mode          = var.runner_mode
    runner_labels        = local.runner_labels
    runner_group         = var.runner_mode == "persistent" ? var.runner_group : ""
    runner_table         = var.use_runner_table ? aws_dynamodb_table.runners[0].name : ""
    agent_package_url    = var.agent_package_url
    agent_package_sha256 = var.agent_package_sha256
    extra_files          = var.extra_files
    extra_packages       = var.extra_packages
    extra_commands       = var.extra_commands
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.runner.arn
  }
  vpc_security_group_ids = [aws_security_group.runner.id]

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = var.imds_hop_limit
    instance_metadata_tags      = "enabled"
  }

  hibernation_options {
    configured = local.warm_pool
  }

  block_device_mappings {
    device_name = data.aws_ami.runner.root_device_name
    ebs {
      volume_size           = var.root_volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.root_volume_kms_key_arn != "" ? var.root_volume_kms_key_arn : null
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = var.name })
  }
  tag_specifications {
    resource_type = "volume"
    tags          = local.tags
  }
  tags = local.tags

  lifecycle {
    precondition {
      condition     = !local.warm_pool || var.root_volume_size_gb >= local.ram_gib + 8
      error_message = "Hibernation writes RAM to the root volume: ${var.instance_types[0]} has ${local.ram_gib} GiB, so root_volume_size_gb must be at least ${local.ram_gib + 8}."
    }
  }
}

resource "aws_autoscaling_group" "runners" {
  name                  = var.name
  min_size              = var.min_size
  max_size              = var.max_size
  vpc_zone_identifier   = var.subnet_ids
  max_instance_lifetime = var.max_instance_lifetime_days > 0 ? var.max_instance_lifetime_days * 86400 : 0
  health_check_type     = "EC2"
  # The alerts watch pending instances and the warm pool's size.
  metrics_granularity = "1Minute"
  enabled_metrics     = ["GroupPendingInstances", "GroupInServiceInstances", "GroupDesiredCapacity", "WarmPoolWarmedCapacity", "WarmPoolPendingCapacity"]
  # Scale-in protection is the agent's, per job; the group starts every instance without.
  protect_from_scale_in = false
  # With the runner table, the termination-policy function chooses which instances a
  # scale-in takes (idle runners only); the default policy otherwise.
  termination_policies = concat(
    [for name, f in aws_lambda_function.this : f.arn if name == "termination-policy"],
    ["Default"],
  )
  # While an instance that just entered service warms up, AWS blocks dynamic scale-in: the
  # idle-runner alarm, acting on a count from just before a burst, cannot take the
  # instances the burst's queued jobs brought in. Also the refresh's and the step policies'
  # warm-up.
  default_instance_warmup = var.instance_warmup_seconds
  # Its scale-ins need the termination policy's function, permission and role policy (the
  # destroy too: it empties the group first).
  depends_on = [aws_lambda_permission.termination_policy, aws_iam_role_policy.lambda]

  dynamic "launch_template" {
    for_each = local.mixed ? [] : [1]
    content {
      id      = aws_launch_template.runner.id
      version = aws_launch_template.runner.latest_version
    }
  }

  dynamic "mixed_instances_policy" {
    for_each = local.mixed ? [1] : []
    content {
      launch_template {
        launch_template_specification {
          launch_template_id = aws_launch_template.runner.id
          version            = aws_launch_template.runner.latest_version
        }
        dynamic "override" {
          for_each = var.instance_types
          content {
            instance_type = override.value
          }
        }
      }
      instances_distribution {
        on_demand_base_capacity                  = 0
        on_demand_percentage_above_base_capacity = var.spot ? 0 : 100
        spot_allocation_strategy                 = "price-capacity-optimized"
      }
    }
  }

  # The hooks exist before the first instance launches.
  initial_lifecycle_hook {
    name                 = local.hooks.registration
    lifecycle_transition = "autoscaling:EC2_INSTANCE_LAUNCHING"
    heartbeat_timeout    = 600
    default_result       = "ABANDON"
  }
  initial_lifecycle_hook {
    name                 = local.hooks.bootstrap
    lifecycle_transition = "autoscaling:EC2_INSTANCE_LAUNCHING"
    heartbeat_timeout    = 900
    default_result       = "ABANDON"
  }
  initial_lifecycle_hook {
    name                 = local.hooks.deregistration
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    # The agent heartbeats it while a job finishes (timeouts.heartbeat, 10 min).
    heartbeat_timeout = 1800
    default_result    = "ABANDON"
  }

  dynamic "warm_pool" {
    for_each = local.warm_pool ? [1] : []
    content {
      pool_state                  = "Hibernated"
      min_size                    = var.warm_pool_min_size
      max_group_prepared_capacity = coalesce(var.warm_pool_max_prepared, var.max_size + var.warm_pool_min_size)
      instance_reuse_policy {
        reuse_on_scale_in = var.warm_pool_reuse_on_scale_in
      }
    }
  }

  # A new launch template version (a new AMI, agent or setting) rolls through the group:
  # each replacement launches before an old instance goes (min 100 %), in-service
  # instances first, then the warm pool. A busy instance is replaced too ("Refresh"): it
  # enters the terminate hook, whose drain lets its job finish (heartbeated) before it
  # goes; "Wait" would fail the whole refresh after an hour of any longer job, "Ignore"
  # would leave busy instances on the old version.
  dynamic "instance_refresh" {
    for_each = var.instance_refresh ? [1] : []
    content {
      strategy = "Rolling"
      preferences {
        min_healthy_percentage       = 100
        max_healthy_percentage       = var.instance_refresh_max_healthy_percentage
        instance_warmup              = var.instance_warmup_seconds
        skip_matching                = true
        scale_in_protected_instances = "Refresh"
        standby_instances            = "Ignore"
        auto_rollback                = false
      }
    }
  }

  dynamic "tag" {
    for_each = local.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    # Desired capacity is the scaling policies' to set.
    ignore_changes = [desired_capacity]
  }
}

# Where agents record their jobs (use_runner_table): one item per instance, kept a month
# after its last record (TTL).
resource "aws_dynamodb_table" "runners" {
  #checkov:skip=CKV_AWS_119:encrypted at rest with DynamoDB's own key; the items are instance ids and whether each runs a job, nothing secret
  #checkov:skip=CKV_AWS_28:rebuilt by the agents at their next job; no backup needed
  count        = var.use_runner_table ? 1 : 0
  name         = "${var.name}-runners"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "instance_id"
  attribute {
    name = "instance_id"
    type = "S"
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

# Auto Scaling invokes the custom termination policy with the group's service-linked role.
resource "aws_lambda_permission" "termination_policy" {
  for_each      = { for name, f in aws_lambda_function.this : name => f if name == "termination-policy" }
  statement_id  = "AutoScalingTerminationPolicy"
  action        = "lambda:InvokeFunction"
  function_name = each.value.function_name
  principal     = "arn:${local.partition}:iam::${local.account}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
}
