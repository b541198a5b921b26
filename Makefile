# warmfleet: the two commands a fresh machine needs are `make demo` and `make test`.
# Everything else here is what those two call.

CARGO ?= cargo
CONTRACT := tests/contract
CONTRACT_STAMP := $(CONTRACT)/node_modules/.installed

LAMBDAS := warmfleet-registration warmfleet-deregistration warmfleet-record-metric

VENV := .deps/venv
VENV_STAMP := $(VENV)/.installed

.PHONY: demo test lint contract-deps py-deps deny bench

## The main job on the local testbed (see README.md).
demo:
	$(CARGO) run --quiet -p warmfleet-testbed -- demo

## Every check CI runs: format, lints, licences, then every test (Rust, then boto3).
test: contract-deps py-deps lint deny
	# The control-plane tests run the Lambda binaries themselves: cargo test alone builds
	# only the testbed's, so build every binary first (same profile: seconds).
	$(CARGO) build --workspace --bins
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" timeout 40m $(CARGO) test --workspace --all-targets --no-fail-fast
	WARMFLEET_TESTBED=target/debug/warmfleet-testbed timeout 10m $(VENV)/bin/pytest -q tests/python

## Benchmarks (release build): the Lambda binaries (target/bench/control.json) and the
## agent (target/bench/agent.json).
bench: py-deps
	$(CARGO) build --release -p warmfleet-control -p warmfleet-testbed -p warmfleet-agent
	python3 packaging/lambda/zip.py --out target/bench/zips $(addprefix target/release/,$(LAMBDAS))
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" target/release/warmfleet-testbed bench-control --lambdas target/release --zips target/bench/zips --out target/bench/control.json
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" target/release/warmfleet-testbed bench-agent --binaries target/release --out target/bench/agent.json

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Licences, banned crates and sources (offline: no advisory database).
deny:
	@command -v cargo-deny >/dev/null || $(CARGO) install cargo-deny --locked --quiet
	$(CARGO) deny --offline check licenses bans sources

## moto (Secrets Manager), boto3 and pytest, pinned, in a venv of the project's own.
py-deps: $(VENV_STAMP)

$(VENV_STAMP): tests/python/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

## Prism and GitHub's OpenAPI description, for the contract test.
contract-deps: $(CONTRACT_STAMP)

$(CONTRACT_STAMP): $(CONTRACT)/package.json $(CONTRACT)/package-lock.json
	cd $(CONTRACT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@
