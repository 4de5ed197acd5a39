#!/usr/bin/env bash
# Runs every test of the workspace (unit and end-to-end) and closes with one summary
# line, "tests: N passed, N failed".
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
summary=$(awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed", passed, failed }' "$log")
echo
echo "$summary"
exit "$status"
