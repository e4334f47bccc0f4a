# nectar-webhooks: `make run` (local mode) and `make test` (everything CI runs)
# work on a fresh machine; they install what they need into ./.venv.

SHELL := /bin/bash
export SAM_CLI_TELEMETRY := 0
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
BUILD_VENV := .venv-build
CLI := target/debug/nectar-webhooks

# The secret and time the committed samples in events/ are signed with.
SAMPLE_SECRET := whsec_bmVjdGFyLXdlYmhvb2tzLXNhbXBsZS1zZWNyZXQ=
SAMPLE_TIMESTAMP := 1764201600

FUZZ_SECONDS ?= 30
# Cargo tools, installed once per version outside the checkout, so a fresh
# clone on a machine that built them before (CI's) does not compile them again.
TOOLS := $(HOME)/.cache/nectar-webhooks/tools
CARGO_FUZZ_VERSION := 0.13.2
CARGO_AUDIT_VERSION := 0.22.2
CARGO_FUZZ := $(TOOLS)/cargo-fuzz-$(CARGO_FUZZ_VERSION)/bin/cargo-fuzz
CARGO_AUDIT := $(TOOLS)/cargo-audit-$(CARGO_AUDIT_VERSION)/bin/cargo-audit
# The RustSec advisory database: the snapshot kept beside the checkout when
# there is one (these machines cannot reach the database's home), else
# cargo audit fetches it as usual.
ADVISORY_DB := ../shared/advisory-db

.PHONY: soak run test lint audit unit-and-blackbox template-check local-env-check fuzz build check-glibc deploy smoke events bench clean

## run: ingest + router locally on 127.0.0.1:3000 with an embedded queue; sends a signed sample event
run:
	$(CARGO) build --locked --bin nectar-webhooks
	CLI=$(CLI) scripts/run-local.sh

## test: formatting, lints, the dependency audit, unit and black-box tests (moto's SQS), template checks,
## events/local.env, a short fuzz run
test: lint audit unit-and-blackbox template-check local-env-check fuzz

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## audit: cargo audit of both lockfiles (the package's and fuzz/'s) for RustSec advisories, with every
## warning (unmaintained, unsound, yanked) an error. The yanked check reads cargo's local index cache,
## which `cargo fetch` fills for every locked crate first.
audit: $(CARGO_AUDIT)
	@if [ -d $(ADVISORY_DB) ]; then db="--db $(ADVISORY_DB) --no-fetch"; else db=""; fi; \
	for dir in . fuzz; do \
	  $(CARGO) fetch --locked --quiet --manifest-path $$dir/Cargo.toml || exit 1; \
	  echo "cargo audit $$db --deny warnings --file $$dir/Cargo.lock"; \
	  PATH=$(dir $(CARGO_AUDIT)):$$PATH $(CARGO) audit $$db --deny warnings --file $$dir/Cargo.lock || exit 1; \
	done

## unit-and-blackbox: every cargo test, capturing what the code logs and the response bodies the tests
## receive into target/test-capture, then one scan of it all for secrets, payload values and AWS detail
CAPTURE_DIR := $(CURDIR)/target/test-capture
unit-and-blackbox: $(VENV)/.installed
	rm -rf $(CAPTURE_DIR)
	TEST_CAPTURE_DIR=$(CAPTURE_DIR) MOTO_SERVER=$(CURDIR)/$(VENV)/bin/moto_server $(CARGO) test --locked
	$(VENV)/bin/python tests/leak_scan.py $(CAPTURE_DIR)

## template-check: cfn-lint, then AWS's limits, the promises built on them and each function's exact IAM
## rights, on the parsed template
template-check: $(VENV)/.installed
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV)/bin/python tests/template_invariants.py

## local-env-check: events/local.env loads by the rules cargo-lambda's `--env-file` reads it with
local-env-check: $(VENV)/.installed
	$(VENV)/bin/python tests/local_env.py

## soak: the fault suite's load scenario at FAULT_SUITE_N webhooks (default 50000, about 14 minutes;
## `make test` runs 5000)
soak: $(VENV)/.installed
	FAULT_SUITE_N=$${FAULT_SUITE_N:-50000} MOTO_SERVER=$(CURDIR)/$(VENV)/bin/moto_server \
	  $(CARGO) test --locked --test fault_suite -- --nocapture --test-threads 1

## fuzz: libFuzzer over header parsing and verification for FUZZ_SECONDS (nightly toolchain)
fuzz: $(CARGO_FUZZ)
	PATH=$(dir $(CARGO_FUZZ)):$$PATH $(CARGO) +nightly fuzz run authenticate -- \
	  -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=1024 -malloc_limit_mb=256 -print_final_stats=1

$(CARGO_FUZZ):
	$(CARGO) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION) --root $(TOOLS)/cargo-fuzz-$(CARGO_FUZZ_VERSION)

# 0.22.2 is the newest release; it needs Rust 1.88 and builds with 1.95.
$(CARGO_AUDIT):
	$(CARGO) install cargo-audit --locked --version $(CARGO_AUDIT_VERSION) --root $(TOOLS)/cargo-audit-$(CARGO_AUDIT_VERSION)

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

## build: `sam validate --lint`, then the deployable arm64 bootstraps built the way `sam build` builds
## them, then the glibc check (CI runs it after `make test`)
build: $(BUILD_VENV)/.installed
	$(BUILD_VENV)/bin/sam validate --lint
	PATH=$(CURDIR)/$(BUILD_VENV)/bin:$$PATH $(BUILD_VENV)/bin/sam build --beta-features
	scripts/check-glibc.sh

## check-glibc: both built bootstraps are arm64 and need no glibc newer than Amazon Linux 2023's 2.34
check-glibc:
	scripts/check-glibc.sh

## deploy: sam deploy --guided (needs AWS credentials)
deploy: build
	PATH=$(CURDIR)/$(BUILD_VENV)/bin:$$PATH $(BUILD_VENV)/bin/sam deploy --guided

$(BUILD_VENV)/.installed: requirements-build.txt
	$(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-build.txt
	touch $@

## smoke: every sample payload, signed, to a deployed endpoint; prints each status (all must be 2xx)
##   make smoke URL=<WebhookUrl output> SECRET=<whsec_...>   (the secret is passed in the environment, never echoed)
smoke:
	@test -n "$(URL)" && test -n "$(SECRET)" || { echo "usage: make smoke URL=https://.../webhooks/nectar SECRET=whsec_..." >&2; exit 2; }
	$(CARGO) build --locked --bin nectar-webhooks
	@echo "$(CLI) send --url $(URL) --secret *** events/payloads/*.json"
	@WEBHOOK_SECRET='$(SECRET)' $(CLI) send --url '$(URL)' events/payloads/*.json

## events: re-sign the sample events in events/ from events/payloads/
events:
	$(CARGO) build --locked --bin nectar-webhooks
	CLI=$(CLI) SAMPLE_SECRET=$(SAMPLE_SECRET) SAMPLE_TIMESTAMP=$(SAMPLE_TIMESTAMP) scripts/make-events.sh

## bench: measure everything in BENCHMARKS.md on this machine and rewrite it (measuring takes about
## 6 minutes after the builds; the cost section runs against moto's server from .venv;
## BENCH_ARM64_BUILD=1 adds the arm64 sizes and BENCH_OPT3_BUILD=1 the sizes at opt-level 3,
## several minutes each)
BENCH_DIR := $(CURDIR)/target/bench
bench: $(VENV)/.installed
	$(CARGO) build --locked --release --bin ingest --bin router --bin nectar-webhooks
	mkdir -p $(BENCH_DIR)/bin/examples
	cp target/release/ingest target/release/router target/release/nectar-webhooks $(BENCH_DIR)/bin/
	$(CARGO) build --locked --release --example hello_lambda
	cp target/release/examples/hello_lambda $(BENCH_DIR)/bin/examples/
	rm -f $(BENCH_DIR)/*.json
	BENCH_DIR=$(BENCH_DIR) $(CARGO) bench --locked --bench verify --bench ingest --bench router --bench time_budget
	BENCH_DIR=$(BENCH_DIR) BENCH_BINARIES=$(BENCH_DIR)/bin $(CARGO) bench --locked --bench lambda_process --bench local_durable
	BENCH_DIR=$(BENCH_DIR) BENCH_BINARIES=$(BENCH_DIR)/bin MOTO_SERVER=$(CURDIR)/$(VENV)/bin/moto_server \
	  $(CARGO) bench --locked --bench cost
	if [ -n "$(BENCH_ARM64_BUILD)" ]; then $(MAKE) $(BUILD_VENV)/.installed && \
	  PATH=$(CURDIR)/$(BUILD_VENV)/bin:$$PATH cargo lambda build --release --arm64 --bin ingest --bin router && \
	  printf '{"ingest": %s, "router": %s}\n' $$(stat -c %s target/lambda/ingest/bootstrap) \
	    $$(stat -c %s target/lambda/router/bootstrap) > $(BENCH_DIR)/arm64_sizes.json; fi
	if [ -n "$(BENCH_OPT3_BUILD)" ]; then \
	  CARGO_TARGET_DIR=target/opt3 $(CARGO) build --locked --release --config 'profile.release.opt-level=3' --bin ingest --bin router && \
	  printf '{"ingest": %s, "router": %s}\n' $$(stat -c %s target/opt3/release/ingest) \
	    $$(stat -c %s target/opt3/release/router) > $(BENCH_DIR)/opt3_sizes.json; fi
	BENCH_DIR=$(BENCH_DIR) BENCH_README=README.md $(PYTHON) scripts/bench-report.py > BENCHMARKS.md
	@echo "wrote BENCHMARKS.md"

clean:
	rm -rf target fuzz/target $(VENV) $(BUILD_VENV) .aws-sam
