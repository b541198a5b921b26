# An organisation's runners with a personal access token: the PAT (scope admin:org) is
# stored by hand as {"token": "ghp_..."} in the secret warmfleet/github.

provider "aws" {
  region = "eu-west-1"
}

module "runners" {
  source = "../.."

  name                     = "acme-ci"
  subnet_ids               = ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
  github_url               = "https://github.com/acme"
  github_credential_secret = "warmfleet/github"
  ami_id                   = "ami-0123456789abcdef0"
  runner_labels            = ["linux", "x64"]
  alarm_emails             = ["ci-team@acme.example"]
}

output "group" {
  value = module.runners.autoscaling_group_name
}
