# warmfleet: the two commands a fresh machine needs are `make demo` and `make test`.
# Everything else here is what those two call.

CARGO ?= cargo
CONTRACT := tests/contract
CONTRACT_STAMP := $(CONTRACT)/node_modules/.installed

LAMBDAS := warmfleet-registration warmfleet-deregistration warmfleet-record-metric warmfleet-webhook warmfleet-termination-policy

VENV := .deps/venv
VENV_STAMP := $(VENV)/.installed
# The Terraform module's offline checks (python-hcl2), in a venv of their own.
INFRA_VENV := .deps/venv-infra
INFRA_VENV_STAMP := $(INFRA_VENV)/.installed
CHECKOV_VENV := .deps/venv-checkov
CHECKOV_VENV_STAMP := $(CHECKOV_VENV)/.installed
# The AWS provider's schema, as the CDK for Terraform bindings publish it on npm (19.65.1 is
# generated from hashicorp/aws 5.99.1), for infra/tests/test_schema.py.
PROVIDER_SCHEMA := .deps/provider-aws
PROVIDER_SCHEMA_PACKAGE := @cdktf/provider-aws@19.65.1
PROVIDER_SCHEMA_STAMP := $(PROVIDER_SCHEMA)/.installed-19.65.1
# cargo-deb and lintian (the package is built by the tests and by `make artifacts`).
DEB_TOOLS_STAMP := .deps/deb-tools.installed

.PHONY: demo test lint contract-deps py-deps infra-deps checkov-deps provider-schema system-deps deny bench artifacts lambda-zips arm64-toolchain

## The main job on the local testbed (see README.md).
## (The agent and the Lambdas are real binaries the world runs: build them all first.)
DEMO_ARGS ?=
demo: py-deps
	$(CARGO) build --workspace --bins
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" target/debug/warmfleet-testbed demo --binaries target/debug $(DEMO_ARGS)

## Every check CI runs: format, lints, licences, then every test (Rust, then boto3).
test: contract-deps py-deps infra-deps checkov-deps provider-schema system-deps lint deny
	# The control-plane tests run the Lambda binaries themselves: cargo test alone builds
	# only the testbed's, so build every binary first (same profile: seconds).
	$(CARGO) build --workspace --bins
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" timeout 40m $(CARGO) test --workspace --all-targets --no-fail-fast
	WARMFLEET_TESTBED=target/debug/warmfleet-testbed timeout 10m $(VENV)/bin/pytest -q tests/python cloud-init packaging/ami
	timeout 5m $(INFRA_VENV)/bin/pytest -q infra/tests

## Benchmarks (the dist profile: what ships): the Lambda binaries (target/bench/control.json), the
## agent (target/bench/agent.json), and the control plane at fleet scale (target/bench/scale.json).
bench: py-deps
	$(CARGO) build --profile dist -p warmfleet-control -p warmfleet-testbed -p warmfleet-agent
	python3 packaging/lambda/zip.py --out target/bench/zips $(addprefix target/dist/,$(LAMBDAS))
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" target/dist/warmfleet-testbed bench-control --lambdas target/dist --zips target/bench/zips --out target/bench/control.json
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" target/dist/warmfleet-testbed bench-agent --binaries target/dist --out target/bench/agent.json
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" target/dist/warmfleet-testbed bench-scale --lambdas target/dist --out target/bench/scale.json

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Licences, banned crates and sources (offline: no advisory database). cargo-deny reads the
## metadata of every target's crates, and a build fetches only this platform's: fetch them all
## first (`cargo fetch` without --target), so that a fresh machine has them too.
deny:
	@command -v cargo-deny >/dev/null || $(CARGO) install cargo-deny --locked --quiet
	$(CARGO) fetch --locked
	$(CARGO) deny --offline check licenses bans sources

## moto (Secrets Manager), boto3 and pytest, pinned, in a venv of the project's own.
py-deps: $(VENV_STAMP)

$(VENV_STAMP): tests/python/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

## python-hcl2 and pytest for infra/tests.
infra-deps: $(INFRA_VENV_STAMP)

$(INFRA_VENV_STAMP): infra/tests/requirements.txt
	python3 -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/tests/requirements.txt
	touch $@

## checkov, for infra/tests/test_checkov.py (its own venv: its pins clash with others').
checkov-deps: $(CHECKOV_VENV_STAMP)

$(CHECKOV_VENV_STAMP): infra/tests/checkov-requirements.txt
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/tests/checkov-requirements.txt
	touch $@

## The provider schema: the npm package's generated bindings, unpacked (no dependencies).
provider-schema: $(PROVIDER_SCHEMA_STAMP)

$(PROVIDER_SCHEMA_STAMP):
	rm -rf $(PROVIDER_SCHEMA) && mkdir -p $(PROVIDER_SCHEMA)
	cd $(PROVIDER_SCHEMA) && npm pack --silent $(PROVIDER_SCHEMA_PACKAGE) >/dev/null
	tar -xzf $(PROVIDER_SCHEMA)/cdktf-provider-aws-*.tgz -C $(PROVIDER_SCHEMA) --wildcards 'package/lib/*/index.js' package/package.json
	rm $(PROVIDER_SCHEMA)/cdktf-provider-aws-*.tgz
	touch $@

## What the tests run besides cargo and Python (root, Debian): cloud-init (its `cloud-init
## schema` checks the user data template), debootstrap and systemd-container (the package and
## cloud-init tests boot a Debian machine with systemd-nspawn; its root is cached under
## /var/cache/warmfleet; iproute2 gives each its own network namespace), cargo-deb (those
## tests build the package), openssl (a certificate for the package's download); terraform
## renders the template as the module does (on these machines already).
SYSTEM_PACKAGES := cloud-init debootstrap systemd-container iproute2 openssl packer
# $(call apt_install_missing,PACKAGES): installs those of the Debian packages that are
# missing, reading the package lists first (a fresh machine may have none).
apt_install_missing = missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	[ -z "$$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; }
system-deps: $(DEB_TOOLS_STAMP)
	@$(call apt_install_missing,$(SYSTEM_PACKAGES))
	@command -v terraform >/dev/null || { echo "terraform is needed to render cloud-init/user-data.yaml.tftpl" >&2; exit 1; }

## Prism and GitHub's OpenAPI description, for the contract test.
contract-deps: $(CONTRACT_STAMP)

$(CONTRACT_STAMP): $(CONTRACT)/package.json $(CONTRACT)/package-lock.json
	cd $(CONTRACT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## What ships, for x86_64, built once on the dist profile and checked: the agent's .deb
## (target/debian/, lintian clean: no error, no warning) and the four Lambda zips
## (target/lambda/x86_64/, sizes printed). cargo-deb and lintian are installed when missing.
# One dist build for everything that ships: the same packages every time, so that features
# unify the same way, nothing is built twice, and a zip is the same bytes whichever target
# made it.
DIST_BUILD := $(CARGO) build --profile dist -p warmfleet-agent -p warmfleet-control
artifacts: $(DEB_TOOLS_STAMP)
	$(DIST_BUILD)
	python3 packaging/lambda/zip.py --out target/lambda/x86_64 $(addprefix target/dist/,$(LAMBDAS))
	$(CARGO) deb -p warmfleet-agent --profile dist --no-build --output target/debian/
	lintian --fail-on warning,error target/debian/warmfleet-agent_*_amd64.deb
	@ls -l target/debian/*.deb

$(DEB_TOOLS_STAMP):
	@command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked --quiet
	@$(call apt_install_missing,lintian)
	mkdir -p .deps && touch $@

## The four Lambda zips (provided.al2023, `bootstrap` inside, reproducible) for x86_64 and
## arm64: target/lambda/{x86_64,arm64}/*.zip. arm64 is cross-built with Debian's rustc-web
## (its aarch64 standard library matches it; rustup cannot fetch one here) and the aarch64
## cross gcc; `make arm64-toolchain` installs them (root, Debian).
ARM64_STD := /usr/lib/rustlib/aarch64-unknown-linux-gnu
lambda-zips:
	$(DIST_BUILD)
	python3 packaging/lambda/zip.py --out target/lambda/x86_64 $(addprefix target/dist/,$(LAMBDAS))
	@test -d $(ARM64_STD) && command -v aarch64-linux-gnu-gcc >/dev/null || \
		{ echo "arm64: no aarch64 toolchain here (make arm64-toolchain installs it)" >&2; exit 1; }
	RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/arm64 \
		CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
		CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
		$(CARGO) build --profile dist --target aarch64-unknown-linux-gnu -p warmfleet-control
	python3 packaging/lambda/zip.py --out target/lambda/arm64 $(addprefix target/arm64/aarch64-unknown-linux-gnu/dist/,$(LAMBDAS))

arm64-toolchain:
	@if [ -d $(ARM64_STD) ] && command -v aarch64-linux-gnu-gcc >/dev/null; then echo "arm64 toolchain: present"; else \
		dpkg --add-architecture arm64 && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross; fi
