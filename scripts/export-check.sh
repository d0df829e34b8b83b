#!/usr/bin/env bash
# Check dpo-lora's exports in transformers, PEFT and llama.cpp (scripts/export_check.py).
# Installs the clients from PyPI into ${DPO_LORA_VENV:-~/.cache/dpo-lora/venv-export} once
# (torch CPU use, llama-cpp-python built from source: ~8 min the first time on 2 cores),
# fetches the models, builds dpo-lora, writes runs/export-check/report.md. The trained-adapter
# part trains the quick-start and Gemma recipes first (~5 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DPO_LORA_VENV:-$HOME/.cache/dpo-lora/venv-export}"
MODELS="${DPO_LORA_MODELS:-$HOME/.cache/dpo-lora/models}"
OUT="${1:-runs/export-check}"

source scripts/torch-venv.sh
ensure_torch_venv "$VENV" scripts/export-check-requirements.txt "import torch, transformers, peft, llama_cpp"
scripts/fetch-models.sh >/dev/null
cargo build -q
mkdir -p "$OUT"
"$VENV/bin/python" scripts/export_check.py \
  --dpo-lora target/debug/dpo-lora \
  --models "$MODELS" \
  --fixtures tests/fixtures \
  --work "$OUT/work" \
  --report "$OUT/report.md"
rm -rf "$OUT/work"
echo "export-check: report in $OUT/report.md" >&2
