#!/bin/bash
# Bakes a warmfleet runner image: the steps of docs/usage/install.md, "Baking the AMI", as
# one script. Packer runs it on the builder instance (packaging/ami/warmfleet.pkr.hcl); run
# it by hand on any Debian 12 or Ubuntu 22.04+ machine you will image, as root.
#
# Environment:
#   AGENT_DEB        the warmfleet-agent .deb to install (a path on this machine; required)
#   RUNNER_VERSION   the actions runner release, e.g. 2.330.0 (required)
#   RUNNER_SHA256    the SHA-256 of that release's tarball for this architecture, from the
#                    release page (required: a tarball that does not match stops the bake)
#   RUNNER_TARBALL   a local copy of the tarball instead of downloading it (optional)
#   RUNNER_DIR       where the runner goes (default /opt/actions-runner: the agent's
#                    runner.dir)
#   HIBERNATION      "yes" (default): the guest's side of hibernation; "no" for images
#                    whose group has no hibernated warm pool
#   CLEAN            "yes" (default): remove what must not be in an image (cloud-init's
#                    state, SSH host keys, apt lists); "no" when testing the script
set -euo pipefail

die() { echo "provision: $*" >&2; exit 1; }
step() { echo "--- provision: $*"; }

[ "$(id -u)" = 0 ] || die "run as root"
: "${AGENT_DEB:?AGENT_DEB: the warmfleet-agent .deb to install}"
: "${RUNNER_VERSION:?RUNNER_VERSION: the actions runner release, e.g. 2.330.0}"
: "${RUNNER_SHA256:?RUNNER_SHA256: the SHA-256 of the runner tarball, from its release page}"
RUNNER_DIR="${RUNNER_DIR:-/opt/actions-runner}"
HIBERNATION="${HIBERNATION:-yes}"
CLEAN="${CLEAN:-yes}"
[ -f "$AGENT_DEB" ] || die "AGENT_DEB $AGENT_DEB: no such file"
[[ "$RUNNER_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "RUNNER_VERSION $RUNNER_VERSION: not a version like 2.330.0"
[[ "$RUNNER_SHA256" =~ ^[0-9a-f]{64}$ ]] || die "RUNNER_SHA256: not 64 lowercase hex digits"

case "$(dpkg --print-architecture)" in
  amd64) arch=x64 ;;
  arm64) arch=arm64 ;;
  *) die "architecture $(dpkg --print-architecture): the runner ships for amd64 and arm64" ;;
esac
. /etc/os-release
case "$ID" in
  debian | ubuntu) ;;
  *) die "$ID: Debian or Ubuntu only" ;;
esac
export DEBIAN_FRONTEND=noninteractive

step "the actions runner $RUNNER_VERSION ($arch), checked before anything is installed"
tarball="$(mktemp /tmp/actions-runner.XXXXXX.tar.gz)"
trap 'rm -f "$tarball"' EXIT
if [ -n "${RUNNER_TARBALL:-}" ]; then
  cp "$RUNNER_TARBALL" "$tarball"
else
  url="https://github.com/actions/runner/releases/download/v$RUNNER_VERSION/actions-runner-linux-$arch-$RUNNER_VERSION.tar.gz"
  command -v curl >/dev/null || { apt-get update -q && apt-get install -y -q curl ca-certificates; }
  curl -fsSL --retry 3 -o "$tarball" "$url"
fi
echo "$RUNNER_SHA256  $tarball" | sha256sum --check --quiet - \
  || die "the runner tarball's SHA-256 is not $RUNNER_SHA256"

step "the agent ($AGENT_DEB)"
# Its dependencies (systemd, nftables) come from the distribution: the package lists are
# fetched only if they are needed. Not started: it has no configuration until cloud-init
# writes it; enabled, so that it starts after cloud-init on the first boot (the unit is
# ordered after it).
deb="$(realpath "$AGENT_DEB")"
apt-get install -y -q "$deb" || { apt-get update -q && apt-get install -y -q "$deb"; }
systemctl enable warmfleet-agent.service

step "the runner in $RUNNER_DIR"
mkdir -p "$RUNNER_DIR"
tar -xzf "$tarball" -C "$RUNNER_DIR"
# The runner's own list of what it needs (libicu, ...).
if [ -x "$RUNNER_DIR/bin/installdependencies.sh" ]; then
  "$RUNNER_DIR/bin/installdependencies.sh"
fi
# The package created the runner user (sysusers.d). config.sh is not run: the agent
# registers the runner with a fresh credential on every instance.
chown -R runner:runner "$RUNNER_DIR"

if [ "$HIBERNATION" = yes ]; then
  step "hibernation: a swap file the size of RAM as the resume device, at every boot"
  if [ "$ID" = ubuntu ] && apt-cache show ec2-hibinit-agent >/dev/null 2>&1; then
    # Ubuntu's own agent does exactly that.
    apt-get install -y -q ec2-hibinit-agent
  else
    install -m 0755 /dev/stdin /usr/local/sbin/warmfleet-hibernation-swap <<'EOF'
#!/bin/sh
# A swap file at least the size of RAM, then the kernel told to resume from it (no kernel
# command line, no reboot: /sys/power/resume and resume_offset take it at run time).
set -eu
swap=/swap-hibernation
ram_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
have_kib=0
[ -f "$swap" ] && have_kib=$(( $(stat -c %s "$swap") / 1024 ))
if [ "$have_kib" -lt "$ram_kib" ]; then
  swapoff "$swap" 2>/dev/null || true
  rm -f "$swap"
  dd if=/dev/zero of="$swap" bs=1M count=$(( ram_kib / 1024 + 1 )) status=none
  chmod 600 "$swap"
  mkswap "$swap" >/dev/null
fi
swapon "$swap" 2>/dev/null || true
dev=$(findmnt -no MAJ:MIN -T "$swap")
offset=$(filefrag -v "$swap" | awk '$1 == "0:" {sub(/\.\./, "", $4); print $4; exit}')
echo "$dev" > /sys/power/resume
echo "$offset" > /sys/power/resume_offset
EOF
    cat > /etc/systemd/system/warmfleet-hibernation-swap.service <<'EOF'
[Unit]
Description=warmfleet: a swap file the size of RAM to hibernate into
# No hibernation in a container (the real-systemd test's machine).
ConditionVirtualization=!container
DefaultDependencies=no
After=local-fs.target
Before=warmfleet-agent.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/warmfleet-hibernation-swap
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
EOF
    systemctl enable warmfleet-hibernation-swap.service
  fi
fi

if [ "$CLEAN" = yes ]; then
  step "clean up for the image"
  cloud-init clean --logs 2>/dev/null || true
  rm -f /etc/ssh/ssh_host_*
  apt-get clean
  rm -rf /var/lib/apt/lists/*
fi
step "done"
