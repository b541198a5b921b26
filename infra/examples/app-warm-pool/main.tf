# A GitHub App's credential ({"app_id": 123456, "private_key": "-----BEGIN ..."}, in a
# secret encrypted with a customer-managed key) and a warm pool of at least three
# hibernated instances (up to max_size + 3 - desired), so that scale-outs resume in seconds.

provider "aws" {
  region = "us-east-1"
}

module "runners" {
  source = "../.."

  name                          = "acme-builds"
  subnet_ids                    = ["subnet-0123456789abcdef0"]
  github_url                    = "https://github.com/acme"
  github_credential_secret      = "arn:aws:secretsmanager:us-east-1:123456789012:secret:warmfleet/github-app-AbCdEf"
  github_credential_kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/0123abcd-45ef-6789-abcd-ef0123456789"
  ami_id                        = "ami-0123456789abcdef0"
  instance_types                = ["m7i.xlarge"]
  root_volume_size_gb           = 40 # 16 GiB of RAM to hibernate, plus the system
  min_size                      = 1
  max_size                      = 20
  idle_runners_target           = 2
  warm_pool                     = true
  warm_pool_min_size            = 3
  runner_group                  = "builds"
  runner_labels                 = ["linux", "docker"]
  extra_packages                = ["docker.io"]
  extra_commands                = ["usermod -aG docker runner"]
}

# What the quick start (docs/usage/quickstart.md) reads after `terraform apply`.
output "autoscaling_group_name" {
  value = module.runners.autoscaling_group_name
}

output "warm_pool_enabled" {
  value = module.runners.warm_pool_enabled
}

output "runner_labels" {
  value = module.runners.runner_labels
}

output "webhook_url" {
  value = module.runners.webhook_url
}

output "webhook_secret_arn" {
  value = module.runners.webhook_secret_arn
}

output "dashboard_name" {
  value = module.runners.dashboard_name
}
