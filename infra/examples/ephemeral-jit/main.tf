# One job per instance: just-in-time runners in a repository, on spot capacity of several
# instance types (so no warm pool: hibernation needs on-demand capacity of one type), with
# an idle target of 0: an instance is launched when every runner is busy.

provider "aws" {
  region = "eu-central-1"
}

module "runners" {
  source = "../.."

  name                       = "acme-app-jit"
  subnet_ids                 = ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
  github_url                 = "https://github.com/acme/app"
  github_credential_secret   = "warmfleet/github"
  ami_id                     = "ami-0123456789abcdef0"
  runner_mode                = "ephemeral"
  runner_group_id            = 1
  runner_labels              = ["linux", "jit"]
  instance_types             = ["c7i.large", "c6i.large", "m7i.large"]
  spot                       = true
  warm_pool                  = false
  idle_runners_target        = 0
  max_size                   = 30
  max_instance_lifetime_days = 1
}
