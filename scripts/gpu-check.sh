#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU (run it there; nothing is built there).
#
#   scripts/build-cuda.sh                      # here: builds dist/cuda/ (binary + CUDA libraries)
#   scripts/gpu-check.sh [OUT]                 # there: writes OUT/report.md (default runs/gpu-check)
#
# What it checks, each on the GPU and against the CPU path of the same binary on the same machine:
#   1. score parity on the fixture records: CUDA f32 vs CPU f32 (must be within 5e-3 nats per
#      completion sum), and CUDA bf16's deviation (reported);
#   2. a short DPO run of the quick-start recipe on the GPU (loss, accuracy, step time);
#   3. `dpo-lora bench` on the 256-token workload: step time, tokens/s, peak GPU memory per
#      mode (device memory in use, nvidia-smi sampled every 100 ms while that mode runs);
#   4. the same on an 8B-shaped stack made there by `dpo-lora synth` (Llama 3 8B's hidden 4096,
#      ffn 14336, 32/8 heads of 128, Q4_K, ${DPO_LORA_GPU_LAYERS:-4} of its 32 layers).
# Before anything it runs the binary once: a CUDA library the bundle needs and cannot find is
# named in one line, and the check stops there.
# Models: ${DPO_LORA_MODELS:-.models}/{SmolLM2-135M-Instruct.Q4_1.gguf,gemma-3-270m-q4_k_m.gguf}
# where present; the device machine is offline, so copy them there (the device tool carries at
# most 64 MiB a call: split a model with `split -b 60M` into an ignored folder over several
# calls on a warm machine and `cat` the parts), else tiny synthetic models stand in (made there
# with `dpo-lora synth`).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu-check}"
BIN="${DPO_LORA_BIN:-dist/cuda/run.sh}"
MODELS="${DPO_LORA_MODELS:-.models}"
mkdir -p "$OUT"
REPORT="$OUT/report.md"
log() { echo "$*" | tee -a "$REPORT"; }
: >"$REPORT"

log "# dpo-lora on the GPU ($(date -u +%F\ %H:%M) UTC)"
log ""
if ! "$BIN" --version >"$OUT/preflight.log" 2>&1; then
  log "preflight failed: $(head -1 "$OUT/preflight.log")"
  exit 2
fi
log '```'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$REPORT"
cat "$OUT/preflight.log" >>"$REPORT"
log '```'

models=()
for f in SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf; do
  [ -f "$MODELS/$f" ] && models+=("$MODELS/$f")
done
data_for() {
  case "$1" in
    *SmolLM2*) echo recipes/data/quickstart-eval.jsonl ;;
    *gemma*) echo recipes/data/quickstart-plain-eval.jsonl ;;
    *) echo recipes/data/tiny-eval.jsonl ;;
  esac
}
if [ ${#models[@]} -eq 0 ]; then
  log ""
  log "No real models in $MODELS: tiny synthetic models stand in."
  for arch in llama gemma3; do
    "$BIN" synth --arch "$arch" --weight-type q8_0 --out "$OUT/tiny-$arch.gguf" >/dev/null
    models+=("$OUT/tiny-$arch.gguf")
  done
fi

# max |a - b| over the chosen/rejected sums of two `score` outputs
compare() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) and a, "different record counts"
print(max(max(abs(x["chosen"] - y["chosen"]), abs(x["rejected"] - y["rejected"])) for x, y in zip(a, b)))
PY
}

status=0
log ""
log "## 1. score parity (max |Δ| per completion sum vs the CPU, nats)"
log ""
log "| model | cuda f32 (≤ 5e-3) | cuda bf16 | cuda f32 time | cpu time |"
log "|---|---|---|---|---|"
for m in "${models[@]}"; do
  name=$(basename "$m" .gguf)
  data=$(data_for "$m")
  t0=$(date +%s.%N)
  "$BIN" score -m "$m" --data "$data" --device cpu >"$OUT/$name.cpu.jsonl" 2>"$OUT/$name.cpu.log"
  t1=$(date +%s.%N)
  "$BIN" score -m "$m" --data "$data" --device cuda --dtype f32 >"$OUT/$name.f32.jsonl" 2>"$OUT/$name.f32.log"
  t2=$(date +%s.%N)
  "$BIN" score -m "$m" --data "$data" --device cuda --dtype bf16 >"$OUT/$name.bf16.jsonl" 2>"$OUT/$name.bf16.log"
  d32=$(compare "$OUT/$name.cpu.jsonl" "$OUT/$name.f32.jsonl" 2>/dev/null || echo "failed: $(tail -1 "$OUT/$name.f32.log")")
  d16=$(compare "$OUT/$name.cpu.jsonl" "$OUT/$name.bf16.jsonl" 2>/dev/null || echo "failed: $(tail -1 "$OUT/$name.bf16.log")")
  ok=$(python3 -c "import sys; print('pass' if float(sys.argv[1]) <= 5e-3 else 'FAIL')" "$d32" 2>/dev/null || echo FAIL)
  [ "$ok" = pass ] || status=1
  log "| $name | $d32 ($ok) | $d16 | $(echo "$t2 - $t1" | bc) s | $(echo "$t1 - $t0" | bc) s |"
done

log ""
log "## 2. a short DPO run on the GPU"
m="${models[0]}"
run_out="$OUT/run"
rm -rf "$run_out"
recipe=recipes/quickstart.yaml
case "$m" in *gemma*) recipe=recipes/gemma3-270m.yaml ;; *tiny*) recipe=recipes/tiny.yaml ;; esac
"$BIN" run "$recipe" --device cuda --quiet --set "model.path=$m" --set train.max_steps=10 \
  --set train.eval_every=10 --set train.save_every=null --set "output.dir=$run_out" \
  --set "output.export=[]" >"$OUT/run.log" 2>&1 || { status=1; log "run failed: $(tail -2 "$OUT/run.log")"; }
if [ -f "$run_out/metrics.jsonl" ]; then
  python3 - "$run_out/metrics.jsonl" <<'PY' | tee -a "$REPORT"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tr = [r for r in rows if r["kind"] == "train"]
ev = [r for r in rows if r["kind"] == "eval"]
print(f"- {len(tr)} steps; train tokens/s median {sorted(r['tokens/s'] for r in tr)[len(tr)//2]:.0f}")
for e in (ev[0], ev[-1]) if ev else ():
    print(f"- eval @ step {e['step']}: loss {e['loss']:.4f}, rewards/accuracies {e['rewards/accuracies']:.3f}")
PY
fi

# bench_modes NAME MODEL: one `bench` per mode, each with its own device-memory sampler.
bench_modes() {
  local name=$1 m=$2 mode smi peak
  log ""
  log "### $name"
  log ""
  log "| mode | step s | tokens/s | peak device memory MiB (in use while it ran) |"
  log "|---|---|---|---|"
  for mode in policy-only dpo-adapters-off dpo-precomputed; do
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$OUT/$name.$mode.mem.log" 2>/dev/null &
    smi=$!
    "$BIN" bench -m "$m" --device cuda --workloads long --modes "$mode" --warmup 2 --steps 3 \
      --out "$OUT/bench-$name-$mode" --quiet >"$OUT/bench-$name-$mode.log" 2>&1 || status=1
    kill "$smi" 2>/dev/null
    peak=$(sort -n "$OUT/$name.$mode.mem.log" | tail -1)
    python3 - "$OUT/bench-$name-$mode/bench.json" "$mode" "${peak:-?}" <<'PY' | tee -a "$REPORT" || log "| $mode | failed: $(tail -1 "$OUT/bench-$name-$mode.log") | | |"
import json, sys
b = json.load(open(sys.argv[1]))
rows = [r for r in b["results"] if r.get("mode") == sys.argv[2]] or b["results"]
r = rows[-1]
print(f"| {sys.argv[2]} | {r['step_s_median']:.3f} | {r['tokens_per_s']:.1f} | {sys.argv[3]} |")
PY
  done
}

log ""
log "## 2b. dropout masks drawn on the GPU repeat in the recompute"
# Three f32 steps with LoRA dropout, checkpointed with nothing kept (every adapted linear runs
# again in the backward, its mask re-drawn from the same key by the device's generator) and
# not checkpointed (each mask drawn once). Same masks -> same losses and gradient norms.
for mode in ckpt plain; do
  ck=true; [ $mode = plain ] && ck=false
  "$BIN" run "$recipe" --device cuda --set dtype=f32 --quiet --set "model.path=$m" --set train.max_steps=3 \
    --set train.eval_every=null --set train.save_every=null --set lora.dropout=0.1 \
    --set train.gradient_checkpointing=$ck --set train.checkpoint_keep=none \
    --set "output.dir=$OUT/drop-$mode" --set "output.export=[]" >"$OUT/drop-$mode.log" 2>&1 ||
    { status=1; log "dropout run ($mode) failed: $(tail -2 "$OUT/drop-$mode.log")"; }
done
python3 - "$OUT/drop-ckpt/metrics.jsonl" "$OUT/drop-plain/metrics.jsonl" <<'PY' | tee -a "$REPORT" || status=1
import json, sys
a, b = ([json.loads(l) for l in open(f) if '"train"' in l] for f in sys.argv[1:])
d = max(max(abs(x["loss"] - y["loss"]), abs(x["grad_norm"] - y["grad_norm"]) / max(y["grad_norm"], 1e-9)) for x, y in zip(a, b))
print(f"- {len(a)} steps, max |loss diff| or relative grad-norm diff {d:.2e} (must be <= 1e-3)")
sys.exit(0 if len(a) == 3 and d <= 1e-3 else 1)
PY

log ""
log "## 3. bench, 256-token workload"
for m in "${models[@]}"; do
  bench_modes "$(basename "$m" .gguf)" "$m"
done

log ""
layers="${DPO_LORA_GPU_LAYERS:-4}"
log "## 4. an 8B-shaped stack ($layers of Llama 3 8B's 32 layers, Q4_K)"
big="$OUT/llama-8b-shaped-$layers.gguf"
if "$BIN" synth --arch llama --weight-type q4_k --hidden 4096 --ffn 14336 --n-head 32 \
  --n-kv-head 8 --head-dim 128 --n-layer "$layers" --out "$big" >"$OUT/synth-8b.log" 2>&1; then
  bench_modes "llama-8b-shaped-$layers" "$big"
else
  status=1
  log "synth failed: $(tail -1 "$OUT/synth-8b.log")"
fi
log ""
log "exit status: $status"
exit $status
