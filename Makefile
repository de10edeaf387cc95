# Airwave: `make dev` runs the local stack, `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .tools/venv
PIP         := $(VENV)/bin/pip --disable-pip-version-check --quiet
TEST_TOOLS   := $(VENV)/.test-tools
DEV_TOOLS    := $(VENV)/.dev-tools
DEPLOY_TOOLS := $(VENV)/.deploy-tools
# The SAM CLI and cfn-lint need a region and credentials even to check a template offline.
OFFLINE_AWS := AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline \
               SAM_CLI_TELEMETRY=0 PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
SAM := SAM_CLI_TELEMETRY=0 PATH="$(CURDIR)/$(VENV)/bin:$$PATH" sam
FUNCTIONS := connect disconnect message http-api stream-processor reaper
STACK ?= airwave
ARCH ?= arm64

# Local stack settings (override on the command line: make dev DYNAMODB_PORT=8100).
DYNAMODB_PORT ?= 8000
INVOKE_PORT   ?= 9000
GATEWAY_PORT  ?= 3001
DEMO_PORT     ?= 5173
LOCAL_ENV := AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1 \
             AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$(DYNAMODB_PORT) \
             AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$(DYNAMODB_PORT)

.PHONY: cost smoke smoke-local soak fuzz fuzz-check schema help tools test fmt-check clippy unit integration template-check lint lambda-build size build deploy logs delete dev bench browser-test replay \
	rust-tools node-tools chromium deploy-check docs docs-check

# What cannot go into .tools/ is checked where it is needed, with what to install.
# $(call require,TOOL,HINT) fails with HINT when TOOL is not on PATH (no commas in HINT).
require = @command -v $(1) >/dev/null 2>&1 || { echo "make: $(1) is required but not on PATH: $(2)" >&2; exit 2; }

help:
	@echo "make dev    run the local stack (DynamoDB-compatible server, tables, functions)"
	@echo "make test   the docs check, format check, clippy, template checks, the unit and integration tests, the browser tests, fuzzing, the release and sam builds"
	@echo "make unit   the fast tests: every crate's own tests, the logic over an in-memory store (no server, no sleeping)"
	@echo "make integration   the tests against a local DynamoDB (moto) and real sockets through the local gateway"
	@echo "make docs   build the book (docs/) into docs/book/ with mdBook (installed into .tools/cargo when missing)"
	@echo "make docs-check   links and anchors of the README and the book, make targets they name, the README's length"
	@echo "make browser-test   the browser client: typecheck, unit tests, build, headless Chromium tests"
	@echo "make bench  benchmarks: fan-out, coalescing, positions, the quota, the HTTP API, binary size and cold start (release build)"
	@echo "make cost   the monthly bill of the reference workloads (idle, chat, feed) from measured request counts"
	@echo "make smoke  check a deployment end to end and name the step that fails (STACK=, or URL= [MESSAGES_TABLE=]; TOKEN=, CHANNEL=)"
	@echo "make soak   the whole local stack for 3 minutes under every fault at once (SOAK_SUBSCRIBERS, SOAK_SECONDS)"
	@echo "make lint   cfn-lint and sam validate --lint on template.yaml"
	@echo "make fuzz   every fuzz target for FUZZ_SECONDS (FUZZ_TARGET=token for one)"
	@echo "make size   release Lambda binaries and their sizes (ARCH=x86_64 or arm64, default arm64)"
	@echo "make build / deploy / logs / delete   the SAM stack (STACK=$(STACK))"
	@echo "make replay  replay the stream failure queue into the messages table (STACK=$(STACK), or QUEUE_URL= MESSAGES_TABLE=;"
	@echo "             REPLAY_ARGS=\"--dry-run --max N\"); see the book's \"Replaying the failure queue\""

# Keyed on pip, not python: a venv made without ensurepip has python but no pip.
$(VENV)/bin/pip:
	$(call require,python3,install Python 3)
	@python3 -c 'import ensurepip, venv' 2>/dev/null || { \
		echo "make: python3 cannot create virtual environments; install the python3-venv package" >&2; exit 2; }
	rm -rf $(VENV)
	python3 -m venv $(VENV)

$(TEST_TOOLS): infra/requirements-test.txt | $(VENV)/bin/pip
	$(PIP) install -r infra/requirements-test.txt
	touch $@

$(DEV_TOOLS): infra/requirements-dev.txt $(TEST_TOOLS)
	$(PIP) install -r infra/requirements-dev.txt
	touch $@

$(DEPLOY_TOOLS): infra/requirements-deploy.txt $(TEST_TOOLS)
	$(PIP) install -r infra/requirements-deploy.txt
	touch $@

tools: $(TEST_TOOLS)

rust-tools:
	$(call require,cargo,install Rust 1.94 or newer with rustup)
	@cargo --version
	@cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 || { \
		echo "make: rustfmt and clippy are required: rustup component add rustfmt clippy" >&2; exit 2; }

fmt-check: rust-tools
	cargo fmt --all -- --check

clippy: rust-tools
	cargo clippy --workspace --all-targets --locked -- -D warnings

# The fast tests: every crate's own tests (the logic over the in-memory store
# and a manual clock among them: shared/src/logic_tests). No DynamoDB server,
# no function binaries, no sleeping; a test that needs moto is not a --lib test.
unit: rust-tools
	cargo test --workspace --lib --locked

# Everything else that `cargo test` runs: the tests against moto's server
# (tests that need it read AIRWAVE_TEST_DYNAMODB_ENDPOINT, and fail without
# it), through the local gateway over real sockets, and the binaries' own
# tests; then the doc examples. The function binaries first: a test starts
# each with its template environment.
integration: $(TEST_TOOLS)
	cargo build --workspace --bins --locked
	infra/with-moto.sh cargo test --workspace --locked --bins --test '*'
	cargo test --workspace --locked --doc

# A deployment checked end to end, step by step (connect, refuse a forged
# token, subscribe, ping, publish, deliver, recover); exits non-zero naming the first step that
# failed. Without URL it checks the stack STACK: its WebSocketUrl, and a
# producer's write to its MessagesTableName (AWS credentials from the
# environment). With URL, a second connection publishes (AllowClientPublish),
# unless MESSAGES_TABLE names the table to write to. TOKEN goes through the
# environment and the command is not echoed, so it stays out of logs.
smoke: $(if $(URL),,$(DEPLOY_TOOLS))
	@set -e; url='$(URL)'; table='$(MESSAGES_TABLE)'; \
	if [ -z "$$url" ]; then \
		outputs="$$($(SAM) list stack-outputs --stack-name $(STACK) --output json)"; \
		url="$$(printf '%s' "$$outputs" | $(call stack_output,WebSocketUrl))"; \
		[ -n "$$table" ] || table="$$(printf '%s' "$$outputs" | $(call stack_output,MessagesTableName))"; \
	fi; \
	$(if $(TOKEN),AIRWAVE_TOKEN='$(TOKEN)') cargo run --quiet --locked -p airwave-cli --bin airwave -- \
		smoke "$$url" $${table:+--messages-table "$$table"} $(if $(CHANNEL),--channel '$(CHANNEL)')

# make smoke against airwave-stack, as make test runs it.
smoke-local: $(TEST_TOOLS)
	cargo build --locked -p airwave-tests --bin airwave-stack -p airwave-cli --bin airwave
	infra/with-moto.sh infra/smoke-local.sh

# The cost model: every unit event measured on the local stack (optimized
# build), scaled to a month of each reference workload and priced with
# infra/cost/prices.json. Prints the cost tables of docs/src/cost.md.
cost: $(TEST_TOOLS)
	infra/with-moto.sh cargo run --profile bench --locked -p airwave-tests --bin airwave-cost

# The full soak (optimized build; make test runs a short one): 1,000 steady
# subscribers for three minutes with every fault injected at once. Prints its
# figures and fails on any loss or leftover.
soak: $(TEST_TOOLS)
	infra/with-moto.sh cargo run --profile bench --locked -p airwave-tests --bin airwave-soak

# template.yaml against the code: binaries, routes, IAM, environment.
template-check: $(DEPLOY_TOOLS)
	$(VENV)/bin/python -m unittest discover -s infra/tests -v

lint: $(DEPLOY_TOOLS)
	$(OFFLINE_AWS) cfn-lint template.yaml
	$(OFFLINE_AWS) sam validate --lint

# Everything CI runs (.ci/run is only this), the docs check first (it takes a
# second), the deploy path last.
test: docs-check fmt-check clippy lint template-check unit integration smoke-local browser-test fuzz-check deploy-check

# The book (docs/, mdBook). Debian has no mdbook package, so `cargo install`
# builds it once into .tools/cargo (pinned, --locked; without the serve and watch
# features, which it does not need: about 2 minutes on 2 cores). Open
# docs/book/index.html, or serve that folder with any static file server.
MDBOOK         := .tools/cargo/bin/mdbook
MDBOOK_VERSION := 0.5.4

$(MDBOOK):
	$(call require,cargo,install Rust 1.94 or newer with rustup)
	cargo install --locked --root .tools/cargo --version $(MDBOOK_VERSION) --no-default-features --features search mdbook

docs: $(MDBOOK)
	@$(MDBOOK) --version | grep -qx 'mdbook v$(MDBOOK_VERSION)' || { \
		echo "make: $(MDBOOK) is not mdbook $(MDBOOK_VERSION): remove it and run make docs again" >&2; exit 2; }
	$(MDBOOK) build docs

# Links and anchors of the README, the root's Markdown files and the book, the
# make targets they name and the README's length (infra/docs-check.py, standard
# library only), after the check's own tests.
docs-check:
	$(call require,python3,install Python 3)
	python3 -m unittest discover -s infra/tests -p 'test_docs_check.py'
	python3 infra/docs-check.py

# The deploy path, offline: every function as a release Lambda binary, then
# `sam build` of the template, which reuses them. x86_64, the one Rust target
# these machines have; a deploy builds arm64.
deploy-check:
	$(MAKE) size ARCH=x86_64
	AWS_DEFAULT_REGION="$${AWS_DEFAULT_REGION:-us-east-1}" $(MAKE) build ARCH=x86_64
	ls -l .aws-sam/build/*/bootstrap

# Fuzzing (cargo fuzz, libFuzzer; on the stable toolchain, so without a
# sanitizer). fuzz-check runs every target FUZZ_SECONDS over its corpus, the
# crashes found so far (fuzz/regressions) and seeds from the tests; `make fuzz
# FUZZ_TARGET=token FUZZ_SECONDS=600` runs one longer. New interesting inputs
# go to target/fuzz/corpus, crashes to target/fuzz/artifacts.
CARGO_FUZZ   := .tools/cargo/bin/cargo-fuzz
FUZZ_TARGETS := client_frame server_frame websocket_event stream_batch reaper_batch token template
FUZZ_TARGET  ?= $(FUZZ_TARGETS)
FUZZ_SECONDS ?= 10
FUZZ_SEEDS_websocket_event := tests/events/connect.json,tests/events/disconnect.json,tests/events/message.json
FUZZ_SEEDS_stream_batch    := tests/events/stream-batch.json
FUZZ_SEEDS_template        := template.yaml

$(CARGO_FUZZ):
	cargo install --locked --root .tools/cargo --version 0.13.2 cargo-fuzz

fuzz-check: FUZZ_SECONDS = 10
fuzz-check: fuzz

# cargo fuzz has no --locked: a lockfile behind the workspace would be
# rewritten in the tree (and a fresh clone would fuzz other versions), so it
# is checked first.
fuzz: $(CARGO_FUZZ)
	cargo tree --locked --manifest-path fuzz/Cargo.toml --depth 0 > /dev/null
	@set -e; for target in $(FUZZ_TARGET); do \
		mkdir -p target/fuzz/corpus/$$target target/fuzz/artifacts/$$target fuzz/corpus/$$target fuzz/regressions/$$target; \
		seeds='$(foreach t,$(FUZZ_TARGETS),$(t)=$(FUZZ_SEEDS_$(t)) )'; \
		seed=$$(printf '%s\n' $$seeds | sed -n "s/^$$target=//p"); \
		echo "fuzz: $$target for $(FUZZ_SECONDS) s"; \
		PATH="$(CURDIR)/.tools/cargo/bin:$$PATH" cargo fuzz run --dev --sanitizer none --target-dir target/fuzz \
			$$target target/fuzz/corpus/$$target fuzz/corpus/$$target fuzz/regressions/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 \
			-artifact_prefix=target/fuzz/artifacts/$$target/ $${seed:+-seed_inputs=$$seed}; \
	done

# The browser package (client/browser): `npm ci` whenever node_modules is
# missing or older than the lockfile (npm ci writes its own copy of the lock
# into node_modules).
BROWSER     := client/browser
BROWSER_NPM := $(BROWSER)/node_modules/.package-lock.json

$(BROWSER_NPM): $(BROWSER)/package-lock.json $(BROWSER)/package.json | node-tools
	cd $(BROWSER) && npm ci --no-audit --no-fund
	touch $@

node-tools:
	$(call require,node,install Node.js 20 or newer with npm)
	$(call require,npm,install the npm that comes with Node.js)
	@node --version

# The end-to-end tests drive this Chromium (client/browser/e2e/support.ts reads
# the same variable). Only Debian's package can be had on a closed network (a
# browser download fails), so it is installed with apt-get when missing.
CHROMIUM_PATH ?= /usr/bin/chromium
export CHROMIUM_PATH

chromium:
	@if [ ! -x "$(CHROMIUM_PATH)" ]; then \
		if [ "$$(id -u)" -eq 0 ]; then sudo=; \
		elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
		else echo "make: $(CHROMIUM_PATH) is missing, and installing Debian's chromium needs root or sudo: install it, or set CHROMIUM_PATH to a Chromium" >&2; exit 2; fi; \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "make: $(CHROMIUM_PATH) is missing and there is no apt-get: install Chromium, and set CHROMIUM_PATH if it is elsewhere" >&2; exit 2; fi; \
		echo "chromium: $(CHROMIUM_PATH) is missing; installing Debian's chromium package"; \
		{ $$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } || { \
			echo "make: apt-get could not install chromium: install it by hand, or set CHROMIUM_PATH to a Chromium" >&2; exit 2; }; \
		if [ ! -x "$(CHROMIUM_PATH)" ]; then \
			echo "make: chromium is installed but $(CHROMIUM_PATH) is still missing: set CHROMIUM_PATH to it" >&2; exit 2; fi; \
	fi
	@"$(CHROMIUM_PATH)" --version 2>/dev/null

# Type check, unit tests, the ESM build, then the end-to-end tests in headless
# Chromium (CHROMIUM_PATH) against airwave-stack.
browser-test: $(TEST_TOOLS) $(BROWSER_NPM) chromium
	cargo build --locked -p airwave-tests --bin airwave-stack
	cd $(BROWSER) && npm run typecheck && npm test && npm run build && npm run test:e2e

# Release binaries for Lambda, linked with zig. arm64 needs the
# aarch64-unknown-linux-gnu Rust target; CI builds ARCH=x86_64.
lambda-build: $(DEPLOY_TOOLS)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --locked \
		$(if $(filter x86_64,$(ARCH)),--x86-64,--arm64) $(addprefix --bin ,$(FUNCTIONS))

size: lambda-build
	@for f in $(FUNCTIONS); do \
		printf "%-18s %6s KiB\n" $$f $$(( $$(stat -c %s target/lambda/$$f/bootstrap) / 1024 )); \
	done

build: $(DEPLOY_TOOLS)
	$(SAM) build --beta-features $(ARCH_OVERRIDE)

# PARAMETERS="Name=value ..." passes more stack parameters (e.g. the JwtSecret).
ARCH_OVERRIDE := $(if $(or $(filter x86_64,$(ARCH)),$(PARAMETERS)),--parameter-overrides $(if $(filter x86_64,$(ARCH)),Architecture=x86_64,) $(PARAMETERS),)

deploy: build
	@if [ -f samconfig.toml ]; then $(SAM) deploy $(ARCH_OVERRIDE); \
	else $(SAM) deploy --guided --stack-name $(STACK) $(ARCH_OVERRIDE); fi

# Without --name, sam logs tails every function of the stack.
logs: $(DEPLOY_TOOLS)
	$(SAM) logs --stack-name $(STACK) --tail

delete: $(DEPLOY_TOOLS)
	$(SAM) delete --stack-name $(STACK)

# Replays the stream failure queue (the book's "Replaying the failure
# queue", docs/src/operations/replay.md). The queue and the messages table are the stack's outputs
# (StreamFailureQueueUrl, MessagesTableName) unless QUEUE_URL and
# MESSAGES_TABLE name them; REPLAY_ARGS passes --dry-run, --max N or
# --endpoint-url (a local server). Exits 2 when messages stay in the queue.
QUEUE_URL      ?=
MESSAGES_TABLE ?=
REPLAY_ARGS    ?=
stack_output = python3 -c 'import json, sys; print(next(o["OutputValue"] for o in json.load(sys.stdin) if o["OutputKey"] == "$(1)"))'

replay: $(if $(and $(QUEUE_URL),$(MESSAGES_TABLE)),,$(DEPLOY_TOOLS))
	@set -e; queue='$(QUEUE_URL)'; table='$(MESSAGES_TABLE)'; \
	if [ -z "$$queue" ] || [ -z "$$table" ]; then \
		outputs="$$($(SAM) list stack-outputs --stack-name $(STACK) --output json)"; \
		[ -n "$$queue" ] || queue="$$(printf '%s' "$$outputs" | $(call stack_output,StreamFailureQueueUrl))"; \
		[ -n "$$table" ] || table="$$(printf '%s' "$$outputs" | $(call stack_output,MessagesTableName))"; \
	fi; \
	cargo run --quiet --locked -p airwave-replay -- --queue-url "$$queue" --messages-table "$$table" $(REPLAY_ARGS)

# Starts moto's server, creates the tables and serves every function with
# `cargo lambda watch` (hot reload); Ctrl-C stops everything it started.
dev: $(DEV_TOOLS) $(BROWSER_NPM)
	infra/dev.sh $(DYNAMODB_PORT) $(INVOKE_PORT) $(GATEWAY_PORT) $(DEMO_PORT)

# The protocol's JSON Schema, generated from the airwave-protocol crate; a test
# fails while the committed copy is stale.
schema:
	cargo run --quiet --locked -p airwave-protocol --bin airwave-protocol-schema > protocol/schema.json

# The benchmarks (release build), each checking the targets the book
# quotes (docs/src/benchmarks.md): the fan-out against its bound and in memory, coalescing a backlog,
# positions, and the release binaries' size and cold start.
bench: $(TEST_TOOLS)
	cargo build --release --locked $(addprefix -p ,$(FUNCTIONS))
	infra/with-moto.sh cargo bench --locked --no-fail-fast -p airwave-tests \
		--bench fanout --bench coalescing --bench positions --bench quota --bench http --bench cold_start
