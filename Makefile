# warmfleet: the two commands a fresh machine needs are `make demo` and `make test`.
# Everything else here is what those two call.

CARGO ?= cargo
CONTRACT := tests/contract
CONTRACT_STAMP := $(CONTRACT)/node_modules/.installed

.PHONY: demo test lint build contract-deps deny

## The main job on the local testbed (see README.md).
demo:
	$(CARGO) run --quiet -p warmfleet-testbed -- demo

## Every check CI runs: format, lints, licences, then every test.
test: contract-deps lint deny
	$(CARGO) test --workspace --all-targets --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Licences, banned crates and sources (offline: no advisory database).
deny:
	@command -v cargo-deny >/dev/null || $(CARGO) install cargo-deny --locked --quiet
	$(CARGO) deny --offline check licenses bans sources

## Prism and GitHub's OpenAPI description, for the contract test.
contract-deps: $(CONTRACT_STAMP)

$(CONTRACT_STAMP): $(CONTRACT)/package.json $(CONTRACT)/package-lock.json
	cd $(CONTRACT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@
