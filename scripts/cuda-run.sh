#!/bin/sh
# dist/cuda/run.sh (copied there by scripts/build-cuda.sh): runs the CUDA build of dpo-lora on a GPU
# machine that has no Rust. Usage: dist/cuda/run.sh ARGS...   (the same arguments as dpo-lora)
#
# The binary needs the NVIDIA driver (libcuda.so.1) and CUDA 13's cuBLAS, cuRAND and NVRTC, too
# big to carry (from-machine.txt lists them). They are looked for, in order, in:
#   $DPO_LORA_CUDA_LIBS (colon-separated), this folder, $CUDA_HOME/lib64, /usr/local/cuda/lib64,
#   the nvidia/cu13/lib folder of python3's CUDA wheels (PyTorch cu13x installs them), then
#   $LD_LIBRARY_PATH and /usr/local/nvidia/lib64 (where containers mount the driver).
set -eu
here=$(cd "$(dirname "$0")" && pwd)

# The binary travels as xz (the device tool carries 64 MiB); unpack it once, outside this folder so
# the folder stays small enough to carry again, keyed by its checksum.
sha=$(cat "$here/dpo-lora.sha256")
cache=${DPO_LORA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dpo-lora}/cuda-bin
bin=$cache/$(echo "$sha" | cut -c1-16)/dpo-lora  # named dpo-lora: clap's usage line shows it
if [ ! -x "$bin" ]; then
  mkdir -p "$(dirname "$bin")"
  if command -v xz >/dev/null; then
    xz -dc "$here/dpo-lora.xz" >"$bin.tmp"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' \
      "$here/dpo-lora.xz" >"$bin.tmp"
  fi
  if [ "$(sha256sum "$bin.tmp" | cut -c1-64)" != "$sha" ]; then
    echo "dist/cuda/run.sh: $here/dpo-lora.xz does not unpack to the binary built (checksum)" >&2
    rm -f "$bin.tmp"
    exit 1
  fi
  chmod +x "$bin.tmp"
  mv "$bin.tmp" "$bin"
fi

wheels=$(python3 -c 'import nvidia, os; print(":".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null || true)
search="${DPO_LORA_CUDA_LIBS:-}:$here:${CUDA_HOME:+$CUDA_HOME/lib64}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib:$wheels:${LD_LIBRARY_PATH:-}:/usr/local/nvidia/lib64"

# Each library goes to the first folder that has it, so a stray CUDA 12 folder cannot shadow it.
path=$here
missing=""
for lib in $(sed 's/ .*//' "$here/from-machine.txt"); do
  found=""
  [ "$lib" = libcuda.so.1 ] && ldconfig -p 2>/dev/null | grep -q "libcuda.so.1 " && found=system
  if [ -z "$found" ]; then
    IFS=:
    for dir in $search; do
      if [ -n "$dir" ] && [ -e "$dir/$lib" ]; then found=$dir; break; fi
    done
    unset IFS
  fi
  case $found in
    "") missing="$missing $lib" ;;
    system) ;;
    *) case ":$path:" in *":$found:"*) ;; *) path=$path:$found ;; esac ;;
  esac
done
if [ -n "$missing" ]; then
  echo "dist/cuda/run.sh: not found:$missing" >&2
  case $missing in *libcuda.so.1*)
    echo "  libcuda.so.1 is the NVIDIA driver: this build runs only on a machine with an NVIDIA GPU and driver." >&2 ;;
  esac
  echo "  Looked in: $(echo "$search" | tr -s : | sed 's/^://; s/:$//')" >&2
  echo "  Point DPO_LORA_CUDA_LIBS at the folder(s) holding CUDA 13 libraries (e.g. /usr/local/cuda-13.0/lib64)." >&2
  exit 127
fi

LD_LIBRARY_PATH=$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec "$bin" "$@"
