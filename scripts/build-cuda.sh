#!/usr/bin/env bash
# Builds `dpo-lora --features cuda` for compute capability 9.0 (H100/H200) on a machine with no GPU and
# no system CUDA, and packs what a GPU machine without Rust needs into dist/cuda/.
#
#   scripts/build-cuda.sh       # -> target-cuda/release/dpo-lora and dist/cuda/ (11 MiB)
#   dist/cuda/run.sh --help     # on the GPU machine (carry dist/cuda there)
#
# Time on 2 busy cores: ~34 min from scratch (~18 min of it nvcc on candle's kernels), about 1 min
# of it downloading. Set CUDA_COMPUTE_CAP to build for another GPU (89 = L4/Ada, 80 = A100).
#
# What it downloads: the CUDA 13.0 toolkit pieces candle needs, from PyPI, into a venv
# ($DPO_LORA_CUDA_TOOLKIT, default ~/.cache/dpo-lora/cuda-toolkit, ~1.2 GB installed; ~650 MB of
# wheels, most of it cuBLAS). Pinned to 13.0 because the device machines' driver (580) is CUDA 13.0:
# candle's kernels ship as PTX, and a newer nvcc writes a PTX ISA that driver cannot load.
#
# Why the bundle holds no cuBLAS: libcublasLt.so.13 alone is 514 MiB, the device tool carries 64 MiB.
# run.sh finds cuBLAS(Lt) and cuRAND 13 on the GPU machine instead (its CUDA 13 toolkit or the
# nvidia/cu13 wheels of its Python), and the driver's libcuda.so.1 is always the machine's own.
#
# The CPU build is untouched: its own target dir, no env it reads, no Cargo default feature.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLKIT=${DPO_LORA_CUDA_TOOLKIT:-$HOME/.cache/dpo-lora/cuda-toolkit}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}
DIST=dist/cuda
# One CUDA release (13.0 GA + updates); pip resolves nothing else for these.
PINS=(
  nvidia-cuda-nvcc==13.0.88     # nvcc, ptxas, fatbinary
  nvidia-nvvm==13.0.88          # cicc, libdevice (nvcc's front end)
  nvidia-cuda-crt==13.0.88      # include/crt: nvcc's host-side headers
  nvidia-cuda-runtime==13.0.96  # cudart + cuda.h / cuda_runtime.h
  nvidia-cuda-cccl==13.0.85     # thrust / cub / libcu++ headers (candle's sort and moe kernels)
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)

# 1. Toolkit venv, reinstalled only when the pins change.
if [[ ! -f $TOOLKIT/pins.txt ]] || [[ "$(cat "$TOOLKIT/pins.txt")" != "${PINS[*]}" ]]; then
  echo "== installing CUDA 13.0 from PyPI into $TOOLKIT"
  rm -rf "$TOOLKIT"
  python3 -m venv "$TOOLKIT"
  "$TOOLKIT/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
  echo "${PINS[*]}" >"$TOOLKIT/pins.txt"
fi
site=$("$TOOLKIT/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The CUDA 13 wheels share one tree laid out like a toolkit: bin/, include/, lib/, nvvm/.
export CUDA_ROOT=$site/nvidia/cu13
export CUDA_HOME=$CUDA_ROOT CUDA_PATH=$CUDA_ROOT
export PATH=$CUDA_ROOT/bin:$PATH
export LD_LIBRARY_PATH=$CUDA_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# Read by cudaforge (candle-kernels' build.rs), which would otherwise ask nvidia-smi.
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

# 2. What the linker needs and the wheels lack. cudarc (dynamic-linking) links -lcuda -lcudart
#    -lcublas -lcublasLt -lcurand -lnvrtc and searches $CUDA_ROOT/lib and lib/stubs.
#    The wheels ship only versioned names (libcublas.so.13): add the unversioned ones.
for f in "$CUDA_ROOT"/lib/lib*.so.[0-9]*; do
  base=$(basename "$f")
  ln -sfn "$base" "$CUDA_ROOT/lib/${base%%.so.*}.so"
done
#    libcuda.so is the driver, on no PyPI wheel: link against a stub with the real soname that
#    defines every function cuda.h declares. It never travels: the GPU machine's driver replaces it.
stub=$CUDA_ROOT/lib/stubs/libcuda.so
if [[ ! -f $stub || $CUDA_ROOT/include/cuda.h -nt $stub ]]; then
  mkdir -p "$(dirname "$stub")"
  gcc -E -P -I"$CUDA_ROOT/include" -x c "$CUDA_ROOT/include/cuda.h" |
    grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( \t' | sort -u |
    sed 's/.*/void &(void) {}/' >"$stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$stub.c"
  echo "== libcuda stub: $(wc -l <"$stub.c") driver functions"
fi

# 3. Build.
echo "== nvcc: $(nvcc --version | tail -1)"
start=$SECONDS
cargo build --release --features cuda
bin=$CARGO_TARGET_DIR/release/dpo-lora
echo "== cargo build: $((SECONDS - start)) s"

# 4. Bundle, small enough for the device tool (64 MiB with the source tree): the binary is 67 MiB
#    (32 MiB of it sm_90 SASS for candle's quantized kernels, 17 MiB PTX and data), ~10 MiB in xz;
#    run.sh unpacks it once. Debug info is stripped, symbols kept for backtraces. Small toolkit
#    libraries travel; the big ones (cuBLAS, cuRAND), with what they load in turn, are listed in
#    from-machine.txt for run.sh to find on the GPU machine.
rm -rf "$DIST"
mkdir -p "$DIST"
objcopy --strip-debug "$bin" "$DIST/dpo-lora"
sha256sum "$DIST/dpo-lora" | cut -c1-64 >"$DIST/dpo-lora.sha256"
xz -T0 -6 "$DIST/dpo-lora"
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
: >"$DIST/from-machine.txt"
queue=($(needed "$bin"))
seen=" "
while ((${#queue[@]})); do
  lib=${queue[0]}
  queue=("${queue[@]:1}")
  [[ $seen == *" $lib "* ]] && continue
  seen+="$lib "
  if [[ $lib == libcuda.so.1 ]]; then
    echo "$lib  (NVIDIA driver)" >>"$DIST/from-machine.txt"
  elif [[ -e $CUDA_ROOT/lib/$lib ]]; then
    size=$(stat -L -c %s "$CUDA_ROOT/lib/$lib")
    if ((size < 8 << 20)); then
      cp -L "$CUDA_ROOT/lib/$lib" "$DIST/"
    else
      echo "$lib  (CUDA 13, $((size >> 20)) MiB)" >>"$DIST/from-machine.txt"
    fi
    queue+=($(needed "$CUDA_ROOT/lib/$lib"))
  fi  # else a system library (libc, libstdc++, libgcc_s, libm, libdl)
done
cp scripts/cuda-run.sh "$DIST/run.sh"
chmod +x "$DIST/run.sh"

echo "== $DIST: $(du -sh --apparent-size "$DIST" | cut -f1)"
ls -l "$DIST"
echo "== loaded from the GPU machine:"
cat "$DIST/from-machine.txt"
