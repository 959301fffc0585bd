#!/usr/bin/env bash
# The GPU suite: GPU/TensorRT inference tests (tests/gpu) and the CUDA preprocessing kernel check.
#
# For a machine with a CUDA GPU, paddlepaddle-gpu >= 3.0 built with TensorRT, the tensorrt Python
# package of the TensorRT version Paddle loads, and nvcc + CuPy for the kernel check. Run from
# anywhere, with tlbench installed in the Python it uses:
#     bash bench/gpu_suite.sh [OUT_DIR]          # default OUT_DIR: ./gpu-suite-<UTC time>
# Environment: PYTHON (default python3); CUDA_VISIBLE_DEVICES picks the GPU (PIR-TensorRT converts
# on device 0 of what is visible). Skips are failures here (TLBENCH_REQUIRE_GPU=1).
# Writes OUT_DIR/{environment.txt, pytest.log, junit.xml, timings.json, gpu_check.json, gpu_check.log}.
# Exit status: 0 when both parts pass, 1 when either fails.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
OUT="${1:-$PWD/gpu-suite-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

{
  echo "== machine"
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader || echo "nvidia-smi failed"
  "$PY" --version
  "$PY" - <<'PYEOF' || echo "paddle/tensorrt facts failed"
import paddle
from harness import trt
print("paddle", paddle.__version__, "cuda build:", paddle.device.is_compiled_with_cuda())
for name, value in trt.versions().items():
    print(name, value)
PYEOF
} 2>&1 | tee "$OUT/environment.txt"

echo "== tests/gpu (GPU and TensorRT inference)"
cd "$REPO"
TLBENCH_REQUIRE_GPU=1 TLBENCH_GPU_OUT="$OUT" \
  "$PY" -m pytest tests/gpu -v -rs -p no:cacheprovider --junitxml="$OUT/junit.xml" 2>&1 | tee "$OUT/pytest.log"
TESTS=${PIPESTATUS[0]}

echo "== CUDA preprocessing kernel (bench/gpu_check.sh)"
bash "$REPO/bench/gpu_check.sh" --json "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
KERNEL=${PIPESTATUS[0]}

echo "== summary: tests/gpu exit $TESTS, gpu_check exit $KERNEL; results in $OUT"
[[ $TESTS -eq 0 && $KERNEL -eq 0 ]]
