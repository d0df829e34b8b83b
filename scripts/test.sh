#!/usr/bin/env bash
# The test command from the README: fetch the two real models if missing, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh >/dev/null
# --no-fail-fast: every test file runs and reports, not only those before the first failure.
cargo test --all-targets --no-fail-fast "$@"
