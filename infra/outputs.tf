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
  description = "The Lambdas, by role: registration, deregistration, record-metric."
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
