output "autoscaling_group_name" {
  description = "The runners' Auto Scaling group."
  value       = aws_autoscaling_group.runners.name
}

output "autoscaling_group_arn" {
  description = "The group's ARN."
  value       = aws_autoscaling_group.runners.arn
}

output "warm_pool_enabled" {
  description = "Whether the group has a hibernated warm pool (false with spot or several instance types)."
  value       = local.warm_pool
}

output "launch_template_id" {
  description = "The runners' launch template."
  value       = aws_launch_template.runner.id
}

output "runner_role_name" {
  description = "The runners' instance role (attach what jobs need, or use extra_policy_arns)."
  value       = aws_iam_role.runner.name
}

output "runner_role_arn" {
  description = "The runners' instance role's ARN."
  value       = aws_iam_role.runner.arn
}

output "runner_security_group_id" {
  description = "The runners' security group (egress only)."
  value       = aws_security_group.runner.id
}

output "lambda_function_names" {
  description = "The Lambdas, by role: registration, deregistration, record-metric, webhook."
  value       = { for k, f in aws_lambda_function.this : k => f.function_name }
}

output "lambda_role_arns" {
  description = "The Lambdas' roles, by function."
  value       = { for k, r in aws_iam_role.lambda : k => r.arn }
}

output "alert_topic_arn" {
  description = "The SNS topic of the module's alerts."
  value       = aws_sns_topic.alerts.arn
}

output "drain_document_name" {
  description = "The SSM document that drains one instance by hand."
  value       = aws_ssm_document.drain.name
}

output "webhook_url" {
  description = "Where GitHub's webhook delivers (payload URL; content type application/json; event workflow_job)."
  value       = aws_lambda_function_url.webhook.function_url
}

output "webhook_secret_arn" {
  description = "The Secrets Manager secret holding the webhook's secret (give its value to GitHub's webhook)."
  value       = aws_secretsmanager_secret.webhook.arn
}

output "job_table_name" {
  description = "The DynamoDB table of jobs the webhook receiver acted on."
  value       = aws_dynamodb_table.jobs.name
}

output "dashboard_name" {
  description = "The CloudWatch dashboard: queue time, runners, group and warm pool, webhook deliveries."
  value       = aws_cloudwatch_dashboard.fleet.dashboard_name
}

output "deployment_id" {
  description = "The deployment's id: its runners carry warmfleet-<id>, and its Lambdas list only those."
  value       = local.deployment
}

output "runner_labels" {
  description = "The labels every runner registers with besides warmfleet, warmfleet-<deployment_id>, the group's name and its instance id: what a workflow's runs-on may ask for."
  value       = local.runner_labels
}
