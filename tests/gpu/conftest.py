"""GPU tests: collected everywhere, run only with a CUDA build of Paddle and a visible GPU.

``TLBENCH_REQUIRE_GPU=1`` (bench/gpu_suite.sh sets it) turns those skips into failures, so a GPU
machine that cannot run them says so instead of passing quietly.
"""

from __future__ import annotations

import os

import pytest


def gpu_missing_reason() -> str | None:
    """Why the GPU tests cannot run here, or None when they can."""
    try:
        import paddle
    except ImportError:
        return "Paddle is not installed"
    if not paddle.device.is_compiled_with_cuda():
        return f"paddlepaddle {paddle.__version__} is the CPU build (install paddlepaddle-gpu)"
    try:
        if paddle.device.cuda.device_count() < 1:
            return "Paddle has CUDA but sees no GPU"
    except Exception as exc:  # a CUDA build without a driver
        return f"Paddle has CUDA but no usable GPU ({exc})"
    return None


def pytest_collection_modifyitems(config, items):
    reason = gpu_missing_reason()
    required = os.environ.get("TLBENCH_REQUIRE_GPU", "").strip().lower() not in ("", "0", "no", "false", "off")
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    ours = [item for item in items if str(item.fspath).startswith(here)]
    if ours and reason is not None and required:
        raise pytest.UsageError(f"TLBENCH_REQUIRE_GPU is set but the GPU tests cannot run: {reason}")
    for item in ours:
        item.add_marker(pytest.mark.gpu)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"GPU test: {reason}"))
