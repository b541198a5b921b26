# The warmfleet runner image: Ubuntu LTS or Debian 12, x86_64 or arm64, with the agent's
# package, the actions runner (version and SHA-256 checked) and the guest's side of
# hibernation. The steps are packaging/ami/provision.sh (docs/usage/install.md).
#
#   make artifacts          # target/debian/warmfleet-agent_<version>_amd64.deb
#   packer build -var agent_deb=target/debian/warmfleet-agent_0.1.0_amd64.deb \
#     -var runner_version=2.330.0 -var runner_sha256=<from the release page> \
#     packaging/ami/warmfleet.pkr.hcl
#
# An arm64 image needs an arm64 .deb (agent_deb) and an arm64 instance type.

variable "region" {
  type        = string
  default     = "us-east-1"
  description = "Where the image is built and registered."
}

variable "base" {
  type        = string
  default     = "ubuntu-24.04"
  description = "The base image: ubuntu-24.04, ubuntu-22.04 or debian-12."
}

variable "architecture" {
  type        = string
  default     = "x86_64"
  description = "x86_64 or arm64 (EC2's names)."
}

variable "instance_type" {
  type        = string
  default     = "m7i.large"
  description = "The builder instance (of the architecture)."
}

variable "agent_deb" {
  type        = string
  description = "The warmfleet-agent .deb to install (make artifacts builds it)."
}

variable "runner_version" {
  type        = string
  description = "The actions runner release, e.g. 2.330.0 (GitHub refuses runners too old: bake at least monthly)."
}

variable "runner_sha256" {
  type        = string
  description = "The SHA-256 of the runner tarball for this architecture, from the release page."
}

variable "root_volume_size_gb" {
  type        = number
  default     = 16
  description = "The image's root volume (the module's root_volume_size_gb may be larger)."
}

variable "ami_name_prefix" {
  type        = string
  default     = "warmfleet-runner"
  description = "The image's name, before the base, architecture, runner version and time."
}

locals {
  # Owners and name patterns of the official images.
  bases = {
    "ubuntu-24.04" = { owner = "099720109477", name = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-*-server-*", user = "ubuntu", root = "/dev/sda1" }
    "ubuntu-22.04" = { owner = "099720109477", name = "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-*-server-*", user = "ubuntu", root = "/dev/sda1" }
    "debian-12"    = { owner = "136693071363", name = "debian-12-*", user = "admin", root = "/dev/xvda" }
  }
  base      = local.bases[var.base]
  timestamp = regex_replace(timestamp(), "[- TZ:]", "")
}

source "amazon-ebs" "runner" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = local.base.user
  ami_name      = "${var.ami_name_prefix}-${var.base}-${var.architecture}-${var.runner_version}-${local.timestamp}"
  # Hibernation needs an encrypted root volume; the image's snapshot is encrypted too.
  encrypt_boot = true

  source_ami_filter {
    owners      = [local.base.owner]
    most_recent = true
    filters = {
      name                = local.base.name
      architecture        = var.architecture
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
  }

  launch_block_device_mappings {
    device_name           = local.base.root
    volume_size           = var.root_volume_size_gb
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    encrypted             = true
    delete_on_termination = true
  }

  tags = {
    "warmfleet:runner-version" = var.runner_version
    "warmfleet:base"           = var.base
  }
}

build {
  sources = ["source.amazon-ebs.runner"]

  provisioner "file" {
    source      = var.agent_deb
    destination = "/tmp/warmfleet-agent.deb"
  }

  provisioner "file" {
    source      = "${path.root}/provision.sh"
    destination = "/tmp/provision.sh"
  }

  provisioner "shell" {
    inline = [
      "sudo env AGENT_DEB=/tmp/warmfleet-agent.deb RUNNER_VERSION=${var.runner_version} RUNNER_SHA256=${var.runner_sha256} bash /tmp/provision.sh",
      "rm -f /tmp/warmfleet-agent.deb /tmp/provision.sh",
    ]
  }
}
