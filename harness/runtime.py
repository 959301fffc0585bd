"""Process-level setup for Paddle: CPU threads, MKL dispatch, device choice, native output.

``prepare_environment`` must run before Paddle is first imported to have full
effect, so it only touches environment variables and never imports Paddle.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from typing import Iterator

from common.errors import ConfigError
from common.machine import cpu_vendor, usable_cores

log = logging.getLogger(__name__)


FAST_TRIALS_ENV = "TLBENCH_FAST_TRIALS"


def fast_trials_enabled() -> bool:
    """False when ``TLBENCH_FAST_TRIALS`` is ``0``/``off``/``false``/``no`` (default: on).

    Off, training runs the whole model in dygraph and decodes every image each time it is
    read, as a reference for speed and accuracy comparisons (see :mod:`harness.prefix`).
    """
    return os.environ.get(FAST_TRIALS_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def prepare_environment(threads: int | None = None) -> None:
    """Set thread counts and MKL dispatch before Paddle is imported.

    Paddle defaults to one OpenMP thread; we use every core the process may run
    on, or ``threads`` when given (``--threads N``: it replaces a value already in
    the environment, so OpenMP and Paddle's own thread count agree). On AMD CPUs MKL
    picks a slow code path unless ``MKL_DEBUG_CPU_TYPE=5`` (dygraph training measured
    2-3x faster); the variable is ignored elsewhere, and a value the user set is kept.
    """
    # Paddle warns at import that ccache is missing; it only matters when compiling C++ ops.
    warnings.filterwarnings("ignore", message="No ccache found")
    # BatchNorm warns on every train() call that it tracks running statistics, which is what
    # fine-tuning wants.
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(int(threads))
    else:
        os.environ.setdefault("OMP_NUM_THREADS", str(usable_cores()))
    if cpu_vendor() == "AuthenticAMD":
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")


def set_paddle_threads(threads: int | None) -> int:
    """Set Paddle's math-library thread count at run time; returns the count used."""
    import paddle

    n = threads or usable_cores()
    core = getattr(getattr(paddle, "base", None), "core", None) or getattr(paddle.framework, "core", None)
    setter = getattr(core, "set_num_threads", None)
    if setter is not None:
        setter(n)
    return n


def select_device(device: str) -> str:
    """Resolve 'auto' | 'cpu' | 'gpu' (or 'gpu:N') to a Paddle device string and activate it."""
    import paddle

    count = 0
    if paddle.device.is_compiled_with_cuda():
        try:
            count = paddle.device.cuda.device_count()
        except Exception:  # noqa: BLE001 - a CUDA build without a driver raises here
            count = 0
    has_cuda = count > 0
    if device == "auto":
        device = "gpu" if has_cuda else "cpu"
    if device.startswith("gpu") and not has_cuda:
        raise ConfigError(
            "device 'gpu' was asked for, but the installed Paddle has no CUDA GPU "
            "(install paddlepaddle-gpu from Paddle's package index, see the README)"
        )
    if device not in ("cpu",) and not device.startswith("gpu"):
        raise ConfigError(f"device must be 'auto', 'cpu', 'gpu' or 'gpu:N', got {device!r}")
    if device.startswith("gpu:") and int(device.split(":")[1]) >= count:
        raise ConfigError(f"device {device!r}: this machine has {count} GPU(s) (gpu:0 .. gpu:{count - 1})")
    paddle.set_device(device)
    return device


class CapturedOutput:
    """What a :func:`captured_output` block wrote; ``text`` is filled in when the block ends."""

    text: str = ""


@contextlib.contextmanager
def captured_output(fd: int = 1) -> Iterator[CapturedOutput]:
    """Send file descriptor ``fd`` (1 or 2) and the matching ``sys`` stream to a temporary file.

    Native libraries (paddle2onnx's C++ core, Paddle's oneDNN passes) print to the
    descriptors directly. Process-wide while active, so keep the block short.
    """
    if fd not in (1, 2):
        raise ConfigError(f"captured_output takes fd 1 or 2, got {fd!r}")
    stream_name = "stdout" if fd == 1 else "stderr"
    getattr(sys, stream_name).flush()
    captured = CapturedOutput()
    saved = os.dup(fd)
    redirect = contextlib.redirect_stdout if fd == 1 else contextlib.redirect_stderr
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        python_text = io.StringIO()
        try:
            with redirect(python_text):
                yield captured
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace") + python_text.getvalue()
