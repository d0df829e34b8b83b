#!/usr/bin/env bash
# Check dpo-lora's exports in transformers, PEFT and llama.cpp (scripts/export_check.py).
# Installs the clients from PyPI into ${DPO_LORA_VENV:-~/.cache/dpo-lora/venv-export} once
# (torch CPU use, llama-cpp-python built from source: ~8 min the first time on 2 cores),
# fetches the models, builds dpo-lora, writes runs/export-check/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DPO_LORA_VENV:-$HOME/.cache/dpo-lora/venv-export}"
MODELS="${DPO_LORA_MODELS:-$HOME/.cache/dpo-lora/models}"
OUT="${1:-runs/export-check}"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, transformers, peft, llama_cpp" 2>/dev/null; then
  echo "export-check: installing torch, transformers, peft, llama-cpp-python into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q --no-deps torch==2.15.0
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$VENV/bin/pip" install -q -r scripts/export-check-requirements.txt
fi
scripts/fetch-models.sh >/dev/null
cargo build -q
mkdir -p "$OUT"
"$VENV/bin/python" scripts/export_check.py \
  --dpo-lora target/debug/dpo-lora \
  --models "$MODELS" \
  --fixtures ../shared/fixtures \
  --work "$OUT/work" \
  --report "$OUT/report.md"
rm -rf "$OUT/work"
echo "export-check: report in $OUT/report.md" >&2
