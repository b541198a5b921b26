# The labels a runner registers with (and the Lambdas mint for), besides warmfleet, the
# group's name and the instance id, which the code adds. The default ones are GitHub's
# names for what config.sh adds without --no-default-labels, given here as custom labels
# so that the drain can remove them: read-only labels cannot be removed, and a runner
# that keeps a label keeps getting jobs. A module of its own, without providers, so that
# infra/tests can evaluate it offline.

variable "architecture" {
  description = "The AMI's architecture as EC2 names it (x86_64, arm64)."
  type        = string
}

variable "default_labels" {
  description = "Whether runners carry self-hosted, Linux and their architecture."
  type        = bool
}

variable "labels" {
  description = "The user's labels."
  type        = list(string)
}

locals {
  architecture = { x86_64 = "X64", arm64 = "ARM64" }
  defaults     = var.default_labels ? ["self-hosted", "Linux", lookup(local.architecture, var.architecture, var.architecture)] : []
  # The user's labels that are not already among the defaults: GitHub compares labels
  # without case.
  labels = concat(local.defaults, [
    for l in var.labels : l if !contains([for d in local.defaults : lower(d)], lower(l))
  ])
}

output "labels" {
  description = "The defaults, then the user's labels."
  value       = local.labels
}
