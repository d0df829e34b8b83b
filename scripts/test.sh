#!/usr/bin/env bash
# The test command from the README: fetch the two real models if missing, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh >/dev/null
cargo test --all-targets "$@"
