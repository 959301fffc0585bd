#!/usr/bin/env bash
# Build the CUDA preprocessing kernel with nvcc, check it against the numpy reference, and time it.
#
# For a machine with a CUDA GPU, nvcc, numpy and CuPy (PyTorch optional; Paddle and OpenCV not
# needed). Run from anywhere:   bash bench/gpu_check.sh [--json FILE] [--repeats N]
# Environment: PYTHON (default python3), TLBENCH_CUDA_ARCH (default: the GPU's own, e.g. sm_90),
# TLBENCH_GPU_BUILD_DIR (default: a temporary folder).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
BUILD="${TLBENCH_GPU_BUILD_DIR:-$(mktemp -d -t tlbench-gpu-XXXXXX)}"
mkdir -p "$BUILD"
LIB="$BUILD/libtlbench_preprocess_cuda.so"

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader || echo "nvidia-smi failed"
nvcc --version | tail -n 2
"$PY" --version

ARCH="${TLBENCH_CUDA_ARCH:-}"
if [[ -z "$ARCH" ]]; then
  CAP="$( (nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null || true) | head -n 1 | tr -d ' .')"
  if [[ -n "$CAP" ]]; then ARCH="sm_$CAP"; else ARCH="native"; fi
fi

echo "== build ($ARCH) -> $LIB"
# -fmad=false: no multiply-add contraction anywhere, so the float math is the reference's.
nvcc -O3 -std=c++17 -fmad=false -shared -Xcompiler -fPIC -arch="$ARCH" \
  -I"$REPO/kernels/src" "$REPO/kernels/src/preprocess_cuda.cu" -o "$LIB"

echo "== parity and timing"
cd "$REPO"
TLBENCH_CUDA_LIB="$LIB" PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$REPO/bench/gpu_check.py" "$@"
