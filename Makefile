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
CARGO_FUZZ := .tools/bin/cargo-fuzz

.PHONY: run test lint unit-and-blackbox template-check fuzz build check-glibc deploy smoke events clean

## run: ingest + router locally on 127.0.0.1:3000 with an embedded queue; sends a signed sample event
run:
	$(CARGO) build --locked --bin nectar-webhooks
	CLI=$(CLI) scripts/run-local.sh

## test: formatting, lints, unit and black-box tests (moto's SQS), template checks, a short fuzz run
test: lint unit-and-blackbox template-check fuzz

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit-and-blackbox: $(VENV)/.installed
	MOTO_SERVER=$(CURDIR)/$(VENV)/bin/moto_server $(CARGO) test --locked

template-check: $(VENV)/.installed
	$(VENV)/bin/cfn-lint template.yaml

## fuzz: libFuzzer over header parsing and verification for FUZZ_SECONDS (nightly toolchain)
fuzz: $(CARGO_FUZZ)
	PATH=$(CURDIR)/.tools/bin:$$PATH $(CARGO) +nightly fuzz run authenticate -- \
	  -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=1024 -malloc_limit_mb=256 -print_final_stats=1

$(CARGO_FUZZ):
	$(CARGO) install cargo-fuzz --locked --version 0.13.2 --root .tools

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

## build: the deployable arm64 bootstraps, built the way `sam build` builds them
build: $(BUILD_VENV)/.installed
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

clean:
	rm -rf target fuzz/target $(VENV) $(BUILD_VENV) .aws-sam .tools
