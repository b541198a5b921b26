# Every input of the module; infra/README.md describes each (a test keeps the two in step).

# --- Naming -------------------------------------------------------------------------------

variable "name" {
  description = "The Auto Scaling group's name, also the prefix of every resource the module creates. Runners carry it as a label."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,31}$", var.name))
    error_message = "name: 1 to 32 letters, digits or hyphens, starting with a letter or digit."
  }
}

variable "tags" {
  description = "Tags for every resource the module creates (and the instances)."
  type        = map(string)
  default     = {}
}

# --- Network ------------------------------------------------------------------------------

variable "subnet_ids" {
  description = "Subnets of the runners (private, with a route to GitHub, e.g. through NAT)."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids: at least one subnet."
  }
}

variable "lambda_subnet_ids" {
  description = "Subnets of the Lambdas (they call GitHub and AWS APIs); the runners' subnets when empty."
  type        = list(string)
  default     = []
}

# --- GitHub -------------------------------------------------------------------------------

variable "github_url" {
  description = "Where runners register: https://github.com/ORG, https://github.com/ORG/REPO, https://github.com/enterprises/ENTERPRISE, or the same on a GitHub Enterprise Server host."
  type        = string
  validation {
    condition     = can(regex("^https://[^/]+/[^/]+(/[^/]+)?$", var.github_url))
    error_message = "github_url: https://HOST/ORG, https://HOST/ORG/REPO or https://HOST/enterprises/ENTERPRISE."
  }
}

variable "github_api_url" {
  description = "The REST API's base URL, when it cannot be derived from github_url (api.github.com for github.com, https://HOST/api/v3 for GHES)."
  type        = string
  default     = ""
}

variable "github_credential_secret" {
  description = "Name or ARN of the Secrets Manager secret with the GitHub credential: {\"token\": \"...\"} (a PAT) or {\"app_id\": 123, \"private_key\": \"...\"} (a GitHub App). Only the Lambdas can read it."
  type        = string
}

variable "github_credential_kms_key_arn" {
  description = "The KMS key the credential secret is encrypted with, when it is a customer-managed key (the Lambdas get kms:Decrypt on it)."
  type        = string
  default     = ""
}

variable "runner_mode" {
  description = "persistent (a runner takes many jobs) or ephemeral (a just-in-time runner, one job per instance)."
  type        = string
  default     = "persistent"
  validation {
    condition     = contains(["persistent", "ephemeral"], var.runner_mode)
    error_message = "runner_mode: persistent or ephemeral."
  }
}

variable "deployment_id" {
  description = "What tells this deployment's runners from another's in the same GitHub organisation (staging and production accounts, two regions): its runners carry warmfleet-<id> and every listing filters on it. Empty: the first 8 hex digits of the SHA-256 of <account>/<region>. 1 to 40 lowercase letters, digits and hyphens."
  type        = string
  default     = ""
  validation {
    condition     = can(regex("^[a-z0-9-]{0,40}$", var.deployment_id))
    error_message = "deployment_id: at most 40 lowercase letters, digits and hyphens."
  }
}

variable "runner_default_labels" {
  description = "Runners also carry self-hosted, Linux and their architecture (X64 or ARM64, from the AMI), as custom labels, so that the usual runs-on: [self-hosted, linux, x64] reaches them; the drain removes them with the others. false: only warmfleet, the group's name, the instance id and runner_labels."
  type        = bool
  default     = true
}

variable "runner_labels" {
  description = "Labels of every runner besides warmfleet, the group's name, the instance id and the default labels (runner_default_labels)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for l in var.runner_labels : can(regex("^[^,\\s]+$", l))])
    error_message = "runner_labels: no empty label, no commas or spaces."
  }
}

variable "runner_group" {
  description = "The runner group persistent runners register into (by name); the default group when empty."
  type        = string
  default     = ""
}

variable "runner_group_id" {
  description = "The runner group of ephemeral (JIT) runners, by id (1 is the default group)."
  type        = number
  default     = 1
}

# --- Instances ----------------------------------------------------------------------------

variable "ami_id" {
  description = "The runner AMI: Debian 12 or Ubuntu with the actions runner in /opt/actions-runner and, unless agent_package_url is given, the warmfleet-agent package (docs/usage/install.md)."
  type        = string
}

variable "instance_types" {
  description = "Instance types; the first is the launch template's. More than one (or spot) uses a mixed instances policy, which turns the warm pool off."
  type        = list(string)
  default     = ["m7i.large"]
  validation {
    condition     = length(var.instance_types) > 0
    error_message = "instance_types: at least one type."
  }
}

variable "spot" {
  description = "Run the runners on spot capacity (no hibernation, so no warm pool)."
  type        = bool
  default     = false
}

variable "root_volume_size_gb" {
  description = "Root volume size (encrypted gp3). With a warm pool it must hold the instance's RAM besides the system: at least RAM + 8 GiB."
  type        = number
  default     = 40
}

variable "root_volume_kms_key_arn" {
  description = "The KMS key of the root volume; the account's default EBS key when empty."
  type        = string
  default     = ""
}

variable "key_name" {
  description = "An EC2 key pair for SSH; none when empty (SSM Session Manager works without one)."
  type        = string
  default     = ""
}

variable "extra_policy_arns" {
  description = "More IAM policies for the runners' instance role (what the jobs need)."
  type        = list(string)
  default     = []
}

variable "max_instance_lifetime_days" {
  description = "Replace instances older than this (1 to 365 days); 0 keeps them."
  type        = number
  default     = 30
  validation {
    condition     = var.max_instance_lifetime_days == 0 || (var.max_instance_lifetime_days >= 1 && var.max_instance_lifetime_days <= 365)
    error_message = "max_instance_lifetime_days: 0, or 1 to 365."
  }
}

variable "imds_hop_limit" {
  description = "IMDSv2 response hop limit: 1, or 2 when jobs' containers need the instance's metadata."
  type        = number
  default     = 1
  validation {
    condition     = contains([1, 2], var.imds_hop_limit)
    error_message = "imds_hop_limit: 1 or 2."
  }
}

# --- Scaling ------------------------------------------------------------------------------

variable "min_size" {
  description = "The fewest instances in service."
  type        = number
  default     = 0
}

variable "max_size" {
  description = "The most instances in service."
  type        = number
  default     = 10
  validation {
    condition     = var.max_size >= 1
    error_message = "max_size: at least 1."
  }
}

variable "idle_runners_target" {
  description = "How many idle runners to keep: fewer scales out, more scales in. With 0, the group scales out when every runner is busy."
  type        = number
  default     = 1
  validation {
    condition     = var.idle_runners_target >= 0
    error_message = "idle_runners_target: 0 or more."
  }
}

variable "scale_out_max_step" {
  description = "The most instances one scale-out adds: one per missing idle runner, up to this many (with an idle target of 0, one)."
  type        = number
  default     = 3
  validation {
    condition     = var.scale_out_max_step >= 1 && var.scale_out_max_step <= 10
    error_message = "scale_out_max_step: 1 to 10."
  }
}

variable "instance_warmup_seconds" {
  description = "How long a new or resumed instance takes to have its runner listening: the group's default instance warm-up (no scale-in by the alarms while an instance that just entered service warms up; scale-outs within it do not count it twice; the instance refresh's warm-up)."
  type        = number
  default     = 120
}

variable "instance_refresh" {
  description = "Roll every instance (warm pool included) onto a new launch template version when it changes (a new AMI, agent or setting), without interrupting a job: replacements launch first, busy instances drain through the terminate hook. false: new instances get the new version, old ones stay until they go."
  type        = bool
  default     = true
}

variable "instance_refresh_max_healthy_percentage" {
  description = "How far above the desired capacity a refresh may launch replacements (100 to 200): 100 replaces one instance at a time, more replaces more at once."
  type        = number
  default     = 110
  validation {
    condition     = var.instance_refresh_max_healthy_percentage >= 100 && var.instance_refresh_max_healthy_percentage <= 200
    error_message = "instance_refresh_max_healthy_percentage: 100 to 200."
  }
}

variable "scale_in_max_step" {
  description = "The most instances one scale-in removes: one per idle runner above the target, up to this many."
  type        = number
  default     = 1
  validation {
    condition     = var.scale_in_max_step >= 1 && var.scale_in_max_step <= 10
    error_message = "scale_in_max_step: 1 to 10."
  }
}

variable "scale_out_evaluation_periods" {
  description = "Minutes below the target before scaling out."
  type        = number
  default     = 1
}

variable "scale_in_evaluation_periods" {
  description = "Minutes above the target before scaling in (with the webhook added at GitHub, 1 is what docs/usage/choosing-settings.md measures). With 1, the scale-in alarm judges 10-second periods on record_metric's high-resolution count (a high-resolution alarm), acting within seconds of the count; with more, one-minute periods."
  type        = number
  default     = 10
}

variable "use_runner_table" {
  description = "Agents record each job in a DynamoDB table (the runner table) instead of protecting their instance from scale-in, and the group's custom termination policy (a fifth function, termination-policy) takes only runners the table holds idle: no Auto Scaling call per job (two SetInstanceProtection otherwise), for fleets whose job rate would meet Auto Scaling's account-wide throttling (docs/usage/scale.md)."
  type        = bool
  default     = false
}

variable "warm_pool" {
  description = "Keep hibernated instances ready (turned off with spot or several instance types)."
  type        = bool
  default     = true
}

variable "warm_pool_min_size" {
  description = "Hibernated instances kept in the pool."
  type        = number
  default     = 1
}

variable "warm_pool_max_prepared" {
  description = "Instances in service and in the pool together at most. null (the default): max_size + warm_pool_min_size, so that an instance a scale-in returns to the pool fits beside the hibernated ones instead of pushing a ready one out; -1: max_size (AWS's own default)."
  type        = number
  default     = null
  validation {
    condition     = var.warm_pool_max_prepared == null || try(var.warm_pool_max_prepared >= -1 && floor(var.warm_pool_max_prepared) == var.warm_pool_max_prepared, false)
    error_message = "warm_pool_max_prepared: null, -1, or a whole number 0 or more."
  }
}

variable "warm_pool_reuse_on_scale_in" {
  description = "Send instances back to the pool on scale-in (drained, hibernated) instead of terminating them."
  type        = bool
  default     = true
}

# --- Lambdas ------------------------------------------------------------------------------

variable "lambda_architecture" {
  description = "x86_64 or arm64: which of the packaged zips the Lambdas run."
  type        = string
  default     = "x86_64"
  validation {
    condition     = contains(["x86_64", "arm64"], var.lambda_architecture)
    error_message = "lambda_architecture: x86_64 or arm64."
  }
}

variable "lambda_zip_dir" {
  description = "The directory with x86_64/ and arm64/ Lambda zips (make artifacts); the repository's target/lambda when empty."
  type        = string
  default     = ""
}

variable "log_retention_days" {
  description = "How long the Lambdas' logs are kept."
  type        = number
  default     = 30
  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: one of CloudWatch Logs' retention periods (1, 3, 5, 7, 14, 30, 60, 90, ... days)."
  }
}

variable "drain_timeout_seconds" {
  description = "How long a drain may wait for the running job (the longest job), at most 48 h."
  type        = number
  default     = 86400
  validation {
    condition     = var.drain_timeout_seconds >= 60 && var.drain_timeout_seconds <= 172800
    error_message = "drain_timeout_seconds: 60 to 172800."
  }
}

# --- GitHub's rate limit ----------------------------------------------------------------

variable "github_rate_limit_share" {
  description = "The part of the GitHub App installation's (or token's) hourly rate limit this deployment plans to use, above 0 and at most 1: the sweep lists runners as often as half of it allows, and puts a listing off when it would leave less than the other half for launches, or take the deployment past its share by the account every function adds its GitHub requests to (in the job table)."
  type        = number
  default     = 0.2
  validation {
    condition     = var.github_rate_limit_share > 0 && var.github_rate_limit_share <= 1
    error_message = "github_rate_limit_share: above 0 and at most 1."
  }
}

variable "github_rate_limit_alarm_percent" {
  description = "Alarm when less than this per cent of the GitHub rate limit is left (as the sweep reads it every run); 0: no alarm."
  type        = number
  default     = 20
  validation {
    condition     = var.github_rate_limit_alarm_percent >= 0 && var.github_rate_limit_alarm_percent < 100
    error_message = "github_rate_limit_alarm_percent: 0 to 99."
  }
}

# --- Alerting -----------------------------------------------------------------------------

# --- Webhook (the receiver of GitHub's workflow_job events) -------------------------------

variable "webhook_claims_idle_runners" {
  description = "A queued job first claims one of the idle runners record_metric counted each minute (less those that left service since), and adds an instance only when none is left: far fewer ExecutePolicy calls and instances on a large, busy fleet; on a small one with bursts, a burst's first jobs wait for the runner they claimed instead of resuming hibernated instances at once (docs/usage/scale.md)."
  type        = bool
  default     = false
}

variable "webhook_secret" {
  description = "The secret GitHub signs webhook deliveries with; empty: one is generated and stored in Secrets Manager (read it from the webhook_secret_arn output)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "webhook_secret_kms_key_arn" {
  description = "A KMS key to encrypt the webhook secret with; empty: Secrets Manager's own."
  type        = string
  default     = ""
}

variable "webhook_reserved_concurrency" {
  description = "Concurrent executions reserved for (and capping) the webhook receiver."
  type        = number
  default     = 10
  validation {
    condition     = var.webhook_reserved_concurrency >= 1
    error_message = "webhook_reserved_concurrency: at least 1."
  }
}

variable "webhook_silence_alarm_hours" {
  description = "Alert when no webhook delivery arrived for this many hours (0: no such alert)."
  type        = number
  default     = 24
  validation {
    condition     = var.webhook_silence_alarm_hours >= 0 && var.webhook_silence_alarm_hours <= 24
    error_message = "webhook_silence_alarm_hours: 0 to 24 (CloudWatch evaluates at most a day of hourly periods)."
  }
}

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the module's alert topic."
  type        = list(string)
  default     = []
}

variable "alarm_topic_arns" {
  description = "More SNS topics the alerts go to (e.g. a chat integration's)."
  type        = list(string)
  default     = []
}

# --- Provisioning (cloud-init) ------------------------------------------------------------

variable "agent_package_url" {
  description = "Where instances download the warmfleet-agent package when the AMI lacks it (https:// or s3://); empty: the AMI has it."
  type        = string
  default     = ""
  validation {
    condition     = var.agent_package_url == "" || can(regex("^(https|s3)://", var.agent_package_url))
    error_message = "agent_package_url: https:// or s3://."
  }
}

variable "agent_package_sha256" {
  description = "The package's SHA-256, checked before it is installed."
  type        = string
  default     = ""
  validation {
    condition     = var.agent_package_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.agent_package_sha256))
    error_message = "agent_package_sha256: 64 lowercase hex digits."
  }
}

variable "extra_packages" {
  description = "Debian packages cloud-init installs at first boot."
  type        = list(string)
  default     = []
}

variable "extra_files" {
  description = "Files cloud-init writes at first boot."
  type = list(object({
    path        = string
    content     = string
    owner       = optional(string, "root:root")
    permissions = optional(string, "0644")
  }))
  default = []
}

variable "extra_commands" {
  description = "Shell commands cloud-init runs at first boot, after the package and before the agent starts."
  type        = list(string)
  default     = []
}
