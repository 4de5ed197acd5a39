# DeploySphere: `make dev` runs the platform, `make test` runs the tests.
# Both install what is missing first (scripts/setup.sh).

export CARGO_TARGET_DIR ?= $(HOME)/.cache/deploysphere/target
BIN := $(CARGO_TARGET_DIR)/debug
RELEASE_BIN := $(CARGO_TARGET_DIR)/release

.PHONY: setup build edge lambda deploy infra-check dev test lint fmt bench bench-logs clean-data

setup:
	@scripts/setup.sh

build: setup
	cargo build --workspace --bins

## Run every part of the platform on this machine (Ctrl-C stops it; data stays in .deploysphere/).
dev: build
	$(BIN)/deploysphere dev

## The Lambda@Edge package: the routing crate as wasm plus its Node.js handler, zipped
## (dist/edge.zip). DOMAIN, BUCKET and REGION go into its config.json (Lambda@Edge has
## no environment variables).
DOMAIN ?= sites.test
BUCKET ?= deploysphere-sites
REGION ?= us-east-1
edge: setup
	cargo build -p deploysphere-edge-wasm --target wasm32-unknown-unknown --profile edge
	@rm -rf dist/edge dist/edge.zip && mkdir -p dist/edge
	cp functions/edge-wasm/node/index.mjs functions/edge-wasm/node/router.mjs dist/edge/
	cp $(CARGO_TARGET_DIR)/wasm32-unknown-unknown/edge/deploysphere_edge_wasm.wasm dist/edge/router.wasm
	printf '{"domain": "%s", "bucket": "%s", "region": "%s"}\n' '$(DOMAIN)' '$(BUCKET)' '$(REGION)' > dist/edge/config.json
	cd dist/edge && python3 -m zipfile -c ../edge.zip index.mjs router.mjs router.wasm config.json
	@echo "dist/edge.zip: $$(stat -c %s dist/edge.zip) bytes"

## The Lambdas (cargo-lambda, x86_64 and arm64):
## dist/lambda/{x86_64,arm64}/deploysphere-{api,ws,log-ingest,events}/bootstrap, and a
## zip of each beside its folder.
## librdkafka's own build (configure + make) reads $$CC/$$CXX/$$AR, not cargo-zigbuild's
## per-target compilers: for arm64 they point at zig (scripts/aarch64-linux-*), and lld
## needs --undefined-version for librdkafka's version script.
LAMBDAS := -p deploysphere-lambda --bin deploysphere-api --bin deploysphere-ws --bin deploysphere-log-ingest --bin deploysphere-events
lambda:
	@scripts/setup.sh lambda
	cargo lambda build --release $(LAMBDAS) --lambda-dir dist/lambda/x86_64 --x86-64
	LDFLAGS=-Wl,--undefined-version \
	  CC=$(CURDIR)/scripts/aarch64-linux-cc CXX=$(CURDIR)/scripts/aarch64-linux-cxx AR=$(CURDIR)/scripts/aarch64-linux-ar \
	  HOST_CC=cc HOST_CXX=c++ CC_x86_64_unknown_linux_gnu=cc CXX_x86_64_unknown_linux_gnu=c++ AR_x86_64_unknown_linux_gnu=ar \
	  cargo lambda build --release $(LAMBDAS) --lambda-dir dist/lambda/arm64 --arm64
	@if [ -n "$(RDS_CA_BUNDLE)" ]; then cp "$(RDS_CA_BUNDLE)" dist/lambda/rds-ca.pem; \
	elif ! curl -fsSL https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem -o dist/lambda/rds-ca.pem; then \
	  rm -f dist/lambda/rds-ca.pem; \
	  echo "make lambda: WARNING: Amazon RDS's CA bundle could not be fetched; the zips lack rds-ca.pem and cannot reach RDS (make deploy refuses them). Pass RDS_CA_BUNDLE=<global-bundle.pem>."; \
	fi
	@for dir in dist/lambda/x86_64/* dist/lambda/arm64/*; do \
	  [ -f $$dir/bootstrap ] || continue; \
	  files=bootstrap; \
	  if [ -f dist/lambda/rds-ca.pem ]; then cp dist/lambda/rds-ca.pem $$dir/rds-ca.pem; files="bootstrap rds-ca.pem"; fi; \
	  (cd $$dir && python3 -m zipfile -c ../$$(basename $$dir).zip $$files); \
	  echo "$$dir.zip: $$(stat -c %s $$dir.zip) bytes"; \
	done

## Stand the platform up on AWS from infra/ (see infra/README.md for the variables).
deploy: lambda
	@scripts/deploy.sh

## cfn-lint and checkov on infra/, hadolint and checkov on the Dockerfiles, offline;
## fails on any finding.
infra-check:
	@bash scripts/infra-check.sh

## Unit and end-to-end tests against real Postgres, Kafka (tansu), ClickHouse, S3 and
## bubblewrap, plus the offline checks of infra/.
test: build edge infra-check
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
