#!/usr/bin/env bash
# The README's main command: fetch SmolLM2-135M-Instruct, build dpo-lora, inspect the model,
# score the fixture-style example preference pairs and ask it a question.
set -euo pipefail
cd "$(dirname "$0")/.."
model="$(scripts/fetch-models.sh | awk '$1 == "smollm2" {print $2}')"
cargo build --release --quiet
bin=target/release/dpo-lora
"$bin" inspect "$model"
echo
echo "== score recipes/data/example.jsonl (log p(chosen), log p(rejected) per pair)"
"$bin" score --model "$model" --data recipes/data/example.jsonl
echo
echo "== generate --chat"
"$bin" generate --model "$model" --chat --max-tokens 48 "What is the capital of France?"
