# DeploySphere: `make dev` runs the platform, `make test` runs the tests.
# Both install what is missing first (scripts/setup.sh).

export CARGO_TARGET_DIR ?= $(HOME)/.cache/deploysphere/target
BIN := $(CARGO_TARGET_DIR)/debug
RELEASE_BIN := $(CARGO_TARGET_DIR)/release

.PHONY: setup build dev test lint fmt bench bench-logs clean-data

setup:
	@scripts/setup.sh

build: setup
	cargo build --workspace --bins

## Run every part of the platform on this machine (Ctrl-C stops it; data stays in .deploysphere/).
dev: build
	$(BIN)/deploysphere dev

## Unit and end-to-end tests against real Postgres, Kafka (tansu), ClickHouse, S3 and bubblewrap.
test: build
	@scripts/test.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

## Router vs nginx (wrk) and deploy overhead, in one run, on release builds.
bench:
	@scripts/setup.sh bench
	cargo build --release -p deploysphere-local -p deploysphere-builder -p deploysphere-e2e --bins
	$(RELEASE_BIN)/bench

## Log ingest throughput for a 100,000-line build vs direct ClickHouse inserts.
bench-logs:
	@scripts/setup.sh
	cargo build --release -p deploysphere-local -p deploysphere-builder -p deploysphere-e2e --bins
	$(RELEASE_BIN)/bench_logs

clean-data:
	rm -rf .deploysphere
