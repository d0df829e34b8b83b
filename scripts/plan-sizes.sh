#!/usr/bin/env bash
# What a DPO run needs at each model size, before anyone downloads one: for every `synth --shape`
# preset, a zero-weight GGUF of the real shape (header and file size real, written in seconds,
# removed after) and `dpo-lora plan --json` on the quick-start recipe at one setting, for this
# CPU and for a GPU in bf16, at the leanest and the fastest checkpoint keep level.
#
#   scripts/plan-sizes.sh                         # max_length 1024, batch 2 -> docs/scale/plans.md
#   PLAN_SET="data.max_length=512 train.batch_size=4" scripts/plan-sizes.sh
#
# Predictions, not measurements: the plan's model is checked against measured peaks in
# scripts/bench.sh scale (README, "At scale").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${PLAN_OUT:-docs/scale/plans.md}"
SETS="${PLAN_SET:-data.max_length=1024 train.batch_size=2}"
SHAPES="smollm2-135m smollm2-360m qwen2.5-0.5b qwen3-0.6b llama-3.2-1b gemma-3-1b qwen2.5-1.5b smollm2-1.7b qwen3-1.7b llama-3.2-3b gemma-3-4b qwen2.5-7b llama-3.1-8b qwen3-8b"
cargo build -q --release
BIN="${CARGO_TARGET_DIR:-target}/release/dpo-lora"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sets=()
for s in $SETS; do sets+=(--set "$s"); done
mkdir -p "$(dirname "$OUT")"
{
  echo "# Predicted peak memory of a DPO run, by model size"
  echo
  echo "Made by \`scripts/plan-sizes.sh\` on $(date +%Y-%m-%d): \`dpo-lora plan recipes/quickstart.yaml\` with"
  echo "\`${SETS}\` on zero-weight GGUFs of each real shape (\`dpo-lora synth --shape NAME --zeros\`,"
  echo "q4_k as people download them). **Predicted**, not measured: the plan's model was checked"
  echo "against measured peaks at 135M, 270M, 1.7B and 8B (README, At scale). The CPU columns are"
  echo "this machine's CPU kernels (f32 activations, a pair per core, $(nproc) cores); the GPU"
  echo "columns the Candle backend in bf16 (one pair's graph at a time). Keep levels: \`none\` keeps"
  echo "block inputs only (leanest), \`projections\` also o/gate/up/down (fastest)."
  echo
  echo "| shape | GGUF file | CPU, keep none | CPU, keep projections | GPU bf16, keep none | GPU bf16, keep projections |"
  echo "|---|---|---|---|---|---|"
} > "$tmp/plans.md"
gib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 2**30:.1f} GiB')" "$1"; }
for shape in $SHAPES; do
  f="$tmp/$shape.gguf"
  "$BIN" synth --shape "$shape" --zeros --out "$f" >/dev/null
  row="| $shape | $(gib "$(stat -c %s "$f")")"
  for keep in none projections; do
    "$BIN" plan recipes/quickstart.yaml --set "model.path=$f" "${sets[@]}" --set "train.checkpoint_keep=$keep" \
      --device cpu --memory 1000GB --json > "$tmp/$shape-$keep.json"
  done
  for col in cpu gpu; do
    for keep in none projections; do
      b=$(python3 - "$tmp/$shape-$keep.json" "$col" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
plans = [v["plan"]] + v["other_plans"]
want = "candle" if sys.argv[2] == "gpu" else "cpu_kernels"
print(next(p["predicted_peak_bytes"] for p in plans if want in p["target"]))
EOF
)
      row="$row | $(gib "$b")"
    done
  done
  echo "$row |" >> "$tmp/plans.md"
  rm -f "$f"
  echo "plan-sizes: $shape" >&2
done
mv "$tmp/plans.md" "$OUT"
echo "plan-sizes: $OUT" >&2
