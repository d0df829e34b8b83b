#!/usr/bin/env bash
# dpo-lora bench and TRL's DPOTrainer + PEFT (scripts/bench_trl.py) side by side on the same
# model files, workloads, LoRA settings and batch; prints the ratios and writes
# runs/bench/report.md.
#
#   scripts/bench.sh                         # both models, the 256-token workload
#   BENCH_WORKLOADS=long,short scripts/bench.sh
#   BENCH_MODELS=smollm2 BENCH_WARMUP=2 BENCH_STEPS=3 scripts/bench.sh
#
# Installs torch 2.15 (CPU use, --no-deps), TRL 1.16, PEFT 0.21, transformers 5.24 into
# ${DPO_LORA_VENV:-~/.cache/dpo-lora/venv-bench} once. Time on 2 cores: dpo-lora's six modes take
# ~10-15 min per model on the long workload, TRL a few minutes more; other work on the machine
# slows both and makes the numbers noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DPO_LORA_VENV:-$HOME/.cache/dpo-lora/venv-bench}"
MODELS="${DPO_LORA_MODELS:-$HOME/.cache/dpo-lora/models}"
OUT="${BENCH_OUT:-runs/bench}"
WORKLOADS="${BENCH_WORKLOADS:-long}"
WARMUP="${BENCH_WARMUP:-3}"
STEPS="${BENCH_STEPS:-5}"
WHICH="${BENCH_MODELS:-smollm2,gemma3}"

source scripts/torch-venv.sh
ensure_torch_venv "$VENV" scripts/bench-requirements.txt "import torch, transformers, peft, trl, datasets"
scripts/fetch-models.sh >/dev/null
cargo build -q --release
BIN="${CARGO_TARGET_DIR:-target}/release/dpo-lora"

declare -A FILES=(
  [smollm2]="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
  [gemma3]="$MODELS/gemma-3-270m-q4_k_m.gguf"
)
reports=()
IFS=',' read -ra names <<< "$WHICH"
for name in "${names[@]}"; do
  model="${FILES[$name]:?unknown model $name (smollm2, gemma3)}"
  dir="$OUT/$(basename "$model" .gguf)"
  echo "bench: dpo-lora on $name ($WORKLOADS)" >&2
  "$BIN" bench --model "$model" --workloads "$WORKLOADS" --warmup "$WARMUP" --steps "$STEPS" --out "$dir"
  hf="$dir/hf-f32"
  [ -f "$hf/model.safetensors" ] || "$BIN" export --model "$model" --format hf --base-only --dtype f32 --out "$hf" --force >/dev/null 2>&1
  IFS=',' read -ra wls <<< "$WORKLOADS"
  for w in "${wls[@]}"; do
    echo "bench: TRL on $name ($w)" >&2
    log="$dir/trl-$w.log"
    "$VENV/bin/python" scripts/bench_trl.py --model-dir "$hf" --data "$dir/workload-$w.jsonl" \
      --workload "$w" --warmup "$WARMUP" --steps "$STEPS" --threads "$(nproc)" --out "$dir/trl-$w.json" \
      2>"$log" || { tail -20 "$log" >&2; exit 1; }
    tail -1 "$log" >&2
  done
  rm -rf "$hf"
  reports+=("$dir")
done
"$VENV/bin/python" scripts/bench_report.py --out "$OUT/report.md" "${reports[@]}"
