# Airwave: `make dev` runs the local stack, `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .tools/venv
PIP         := $(VENV)/bin/pip --disable-pip-version-check --quiet
TEST_TOOLS  := $(VENV)/.test-tools
DEV_TOOLS   := $(VENV)/.dev-tools

# Local stack settings (override on the command line: make dev DYNAMODB_PORT=8100).
DYNAMODB_PORT ?= 8000
INVOKE_PORT   ?= 9000
LOCAL_ENV := AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1 \
             AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$(DYNAMODB_PORT)

.PHONY: help tools test fmt-check clippy unit dev bench

help:
	@echo "make dev    run the local stack (DynamoDB-compatible server, tables, functions)"
	@echo "make test   format check, clippy and every test against a local DynamoDB"
	@echo "make bench  fan-out benchmark (release build)"

# Keyed on pip, not python: a venv made without ensurepip has python but no pip.
$(VENV)/bin/pip:
	rm -rf $(VENV)
	python3 -m venv $(VENV)

$(TEST_TOOLS): infra/requirements-test.txt | $(VENV)/bin/pip
	$(PIP) install -r infra/requirements-test.txt
	touch $@

$(DEV_TOOLS): infra/requirements-dev.txt $(TEST_TOOLS)
	$(PIP) install -r infra/requirements-dev.txt
	touch $@

tools: $(TEST_TOOLS)

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit: $(TEST_TOOLS)
	infra/with-moto.sh cargo test --workspace --locked

test: fmt-check clippy unit

# Starts moto's server, creates the tables and serves every function with
# `cargo lambda watch` (hot reload); Ctrl-C stops everything it started.
dev: $(DEV_TOOLS)
	infra/dev.sh $(DYNAMODB_PORT) $(INVOKE_PORT)

# The fan-out benchmark (release build): figures quoted in the README.
bench: $(TEST_TOOLS)
	infra/with-moto.sh cargo bench --locked -p airwave-tests --bench fanout
