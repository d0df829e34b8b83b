#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz + libFuzzer, fuzz/) of the parsers that take untrusted
# input: the GGUF reader (and what loads from it), a JSONL / Parquet data record, the recipe with
# --set overrides, the chat template renderer, the tokenizer. Each target runs SECONDS.
#
#   scripts/fuzz.sh                 # every target, 600 s each, one after another
#   scripts/fuzz.sh 60 gguf recipe  # two targets, a minute each
#   FUZZ_JOBS=2 scripts/fuzz.sh     # two targets at a time (one per core)
#
# This machine has the stable toolchain only, so the targets build with `--sanitizer none`:
# libFuzzer's coverage instrumentation works on stable, the address sanitizer needs nightly.
# Rust's own checks stay on (cargo fuzz builds with debug assertions and overflow checks), so a
# panic, an overflow, an abort on a failed allocation, more than 4 GiB of memory or more than 20 s
# on one input is a finding; libFuzzer's fork mode goes on after one, so a run collects them
# all. Seeds come from the fixtures (tests/, recipes/) and tiny models
# `dpo-lora synth` writes; the corpus grows in fuzz/corpus/TARGET, a finding is written to
# fuzz/artifacts/TARGET/ (reproduce: cargo fuzz run --sanitizer none TARGET FILE). Per-target
# logs and runs/fuzz/summary.md (time, executions, corpus, findings) are written at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-600}"
shift || true
ALL=(gguf record_jsonl record_parquet recipe chat_template tokenizer)
TARGETS=("${@:-${ALL[@]}}")
JOBS="${FUZZ_JOBS:-1}"
OUT=runs/fuzz
SEEDS=fuzz/seeds
mkdir -p "$OUT"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
[ -x target/release/dpo-lora ] || cargo build --release

# Seeds: each fixture record / string / recipe / template a file of its own.
rm -rf "$SEEDS" && mkdir -p "$SEEDS"/{gguf,record_jsonl,record_parquet,recipe,chat_template,tokenizer}
for arch in llama qwen2 qwen3 gemma3; do
  target/release/dpo-lora synth --arch "$arch" --hidden 8 --ffn 16 --n-layer 1 --n-head 2 \
    --n-kv-head 1 --head-dim 4 --weight-type f16 --out "$SEEDS/gguf/$arch-f16.gguf" >/dev/null
  target/release/dpo-lora synth --arch "$arch" --hidden 32 --ffn 64 --n-layer 1 --n-head 2 \
    --n-kv-head 1 --head-dim 16 --weight-type q8_0 --out "$SEEDS/gguf/$arch-q8_0.gguf" >/dev/null
done
python3 - "$SEEDS" <<'PY'
import glob, json, os, sys
seeds = sys.argv[1]
def put(target, name, data):
    with open(os.path.join(seeds, target, name), "wb") as f:
        f.write(data)
n = 0
for path in sorted(glob.glob("tests/fixtures/records.jsonl") + glob.glob("recipes/data/*.jsonl")):
    for i, line in enumerate(open(path, encoding="utf-8")):
        if line.strip() and i < 40:
            put("record_jsonl", f"{os.path.basename(path)}-{i}", b"\0" + line.encode())
            n += 1
for path in sorted(glob.glob("tests/data/*.json")):
    put("record_jsonl", os.path.basename(path), b"\1" + open(path, "rb").read())
for path in sorted(glob.glob("tests/data/*.parquet")):
    put("record_parquet", os.path.basename(path), open(path, "rb").read())
for i, line in enumerate(open("tests/fixtures/strings.jsonl", encoding="utf-8")):
    put("tokenizer", f"strings-{i}", json.loads(line)["text"].encode())
for path in sorted(glob.glob("recipes/*.yaml")):
    text = open(path, "rb").read()
    put("recipe", os.path.basename(path), text)
    put("recipe", os.path.basename(path) + "-set", text + b"\0train.lr=1e-4\0loss.beta=0.2\0data.max_length=128")
for path in sorted(glob.glob("tests/data/*.jinja")):
    put("chat_template", os.path.basename(path), b"\0" + open(path, "rb").read())
msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}]
put("chat_template", "messages", b"\1" + json.dumps(msgs).encode())
print(f"seeds: {n} records and the rest from tests/ and recipes/")
PY

cargo fuzz build --sanitizer none

run_one() {
  local t="$1"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local start=$SECONDS
  set +e
  cargo fuzz run --sanitizer none "$t" "fuzz/corpus/$t" "$SEEDS/$t" -- \
    -max_total_time="$SECS" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 \
    -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
    >"$OUT/$t.log" 2>&1
  local rc=$?
  set -e
  echo "$t $rc $((SECONDS - start))" >"$OUT/$t.rc"
}

running=0
for t in "${TARGETS[@]}"; do
  echo "fuzz: $t for ${SECS} s -> $OUT/$t.log"
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

python3 - "$OUT" "${TARGETS[@]}" <<'PY'
import os, re, sys
out, targets = sys.argv[1], sys.argv[2:]
rows = ["| target | seconds | executions | exec/s | corpus | findings | exit |", "|---|---|---|---|---|---|---|"]
for t in targets:
    log = open(os.path.join(out, f"{t}.log"), errors="replace").read()
    name, rc, secs = open(os.path.join(out, f"{t}.rc")).read().split()
    # fork mode: the parent's status lines start with `#EXECUTIONS:` / `#EXECUTIONS`
    execs = re.findall(r"^#(\d+)", log, re.M)
    execs = int(execs[-1]) if execs else 0
    corpus = len(os.listdir(f"fuzz/corpus/{t}")) if os.path.isdir(f"fuzz/corpus/{t}") else 0
    arts = sorted(os.listdir(f"fuzz/artifacts/{t}")) if os.path.isdir(f"fuzz/artifacts/{t}") else []
    rows.append(f"| {t} | {secs} | {execs:,} | {execs // max(int(secs), 1):,} | {corpus} | {len(arts)} {' '.join(arts)} | {rc} |")
text = "\n".join(rows) + "\n"
open(os.path.join(out, "summary.md"), "w").write(text)
print(text)
PY
