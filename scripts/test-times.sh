#!/usr/bin/env bash
# Where the test suite spends its time: builds the test binaries (as scripts/test.sh does), then
# runs every test that a plain run runs (not the ignored ones) alone, one after another, from the repository root as `cargo test` does, and
# prints each file's total and the slowest tests. Serial on purpose: a test's time is then its
# own, not shared with whatever ran beside it. Timing is reported, never asserted.
#
#   scripts/test-times.sh            # the table on stdout
#   scripts/test-times.sh 20         # and the 20 slowest tests (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
top="${1:-10}"
scripts/fetch-models.sh >/dev/null
# One line per test binary: "NAME PATH" (NAME as cargo prints it: lib, or the file under tests/).
bins="$(cargo test --all-targets --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        t = m["target"]
        name = t["src_path"].split("/tests/")[-1] if "test" in t["kind"] else t["kind"][0] + ":" + t["name"]
        print(name, m["executable"])
')"
per_test="$(mktemp)"
trap 'rm -f "$per_test"' EXIT
printf '%-28s %6s %9s\n' "file" "tests" "seconds"
total=0
while read -r name exe; do
  n=0
  file_s=0
  while IFS= read -r t; do
    [ -n "$t" ] || continue
    s=$(date +%s.%N)
    if ! "$exe" --exact "$t" --quiet >/dev/null 2>&1; then
      echo "FAILED: $name $t" >&2
    fi
    d=$(python3 -c "import time; print(f'{time.time() - $s:.2f}')")
    echo "$d $name $t" >>"$per_test"
    file_s=$(python3 -c "print(f'{$file_s + $d:.2f}')")
    n=$((n + 1))
  done < <(comm -23 <("$exe" --list --format terse 2>/dev/null | sed -n 's/: test$//p' | sort) \
                    <("$exe" --list --ignored --format terse 2>/dev/null | sed -n 's/: test$//p' | sort))
  total=$(python3 -c "print(f'{$total + $file_s:.2f}')")
  printf '%-28s %6d %9.1f\n' "$name" "$n" "$file_s"
done <<<"$bins"
printf '%-28s %6s %9.1f\n' "all (serial)" "" "$total"
echo
echo "slowest $top tests (seconds, file, test):"
sort -rn "$per_test" | head -n "$top"
