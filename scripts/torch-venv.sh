#!/usr/bin/env bash
# Sourced by the scripts that run Python clients beside dpo-lora (export-check.sh, bench.sh):
#   ensure_torch_venv VENV REQUIREMENTS "import a, b"
# makes VENV once, with torch 2.15 installed --no-deps (the CUDA wheels it would pull are not
# needed on a CPU machine) and REQUIREMENTS, unless the imports already work there.
ensure_torch_venv() {
  local venv=$1 reqs=$2 imports=$3
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$imports" 2>/dev/null; then
    return 0
  fi
  echo "installing $reqs (and torch) into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q --no-deps torch==2.15.0
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$venv/bin/pip" install -q -r "$reqs"
}
