#!/usr/bin/env bash
# dpo-lora bench and TRL's DPOTrainer + PEFT (scripts/bench_trl.py) side by side on the same
# model files, workloads, LoRA settings and batch; prints the ratios and writes
# runs/bench/report.md.
#
#   scripts/bench.sh                         # both models, the 256-token workload
#   BENCH_WORKLOADS=long,short scripts/bench.sh
#   BENCH_MODELS=smollm2 BENCH_WARMUP=2 BENCH_STEPS=3 scripts/bench.sh
#   scripts/bench.sh scale                   # the 1.7B and 8B shapes (synthetic weights)
#
# The scale run (`scale`): `dpo-lora synth --shape` writes random-weight GGUFs of SmolLM2-1.7B's
# and Llama-3.1-8B's real shapes (q4_k, as people download) into ${DPO_LORA_SHAPES:-~/.cache/
# dpo-lora/shapes} once (~8 min for the 8B). 1.7B: policy-only, dpo-adapters-off and
# dpo-second-copy on the long workload, then TRL + PEFT on its dense f32 Hugging Face export with
# and without gradient checkpointing. 8B: the same three modes at every checkpoint keep level on
# the short workload (the long one is ~5 min a step here); TRL is not run (dense f32 needs ~32 GB,
# this machine has 24). Every row carries the memory plan's predicted peak beside the measured
# one. ~60 min on 2 cores; writes runs/bench/scale/report.md.
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

if [ "${1:-}" = scale ]; then
  SHAPES="${DPO_LORA_SHAPES:-$HOME/.cache/dpo-lora/shapes}"
  OUT="${BENCH_OUT:-runs/bench/scale}"
  mkdir -p "$SHAPES" "$OUT"
  for shape in smollm2-1.7b llama-3.1-8b; do
    [ -f "$SHAPES/$shape.gguf" ] || "$BIN" synth --shape "$shape" --out "$SHAPES/$shape.gguf"
  done
  small="$SHAPES/smollm2-1.7b.gguf" big="$SHAPES/llama-3.1-8b.gguf"
  modes=policy-only,dpo-adapters-off,dpo-second-copy
  echo "bench: dpo-lora on the smollm2-1.7b shape (long)" >&2
  "$BIN" bench --model "$small" --workloads long --modes "$modes" --warmup "${BENCH_WARMUP_SCALE:-1}" \
    --steps "${BENCH_STEPS_SCALE:-2}" --out "$OUT/smollm2-1.7b"
  hf="$OUT/smollm2-1.7b/hf-f32"
  [ -f "$hf/model.safetensors" ] || "$BIN" export --model "$small" --format hf --base-only --dtype f32 --out "$hf" --force >/dev/null
  for gc in on off; do
    echo "bench: TRL on the smollm2-1.7b shape (long, gradient checkpointing $gc)" >&2
    suffix=$([ $gc = on ] && echo "" || echo "-no-gc")
    log="$OUT/smollm2-1.7b/trl-long$suffix.log"
    "$VENV/bin/python" scripts/bench_trl.py --model-dir "$hf" --data "$OUT/smollm2-1.7b/workload-long.jsonl" \
      --workload long --warmup "${BENCH_WARMUP_SCALE:-1}" --steps "${BENCH_STEPS_SCALE:-2}" --threads "$(nproc)" \
      --out "$OUT/smollm2-1.7b/trl-long$suffix.json" $([ $gc = on ] || echo --no-gradient-checkpointing) \
      2>"$log" || { tail -20 "$log" >&2; exit 1; }
    tail -1 "$log" >&2
  done
  rm -rf "$hf"
  echo "bench: dpo-lora on the llama-3.1-8b shape (short, every keep level)" >&2
  "$BIN" bench --model "$big" --workloads short --modes "$modes" --keep none,mlp,projections \
    --warmup "${BENCH_WARMUP_SCALE:-1}" --steps 1 --out "$OUT/llama-3.1-8b"
  "$VENV/bin/python" scripts/bench_report.py --out "$OUT/report.md" "$OUT/smollm2-1.7b" "$OUT/llama-3.1-8b"
  exit 0
fi

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
