"""Paddle custom CPU operators, built on first use with ``paddle.utils.cpp_extension``.

``depthwise_conv2d(x, weight, stride, paddings)`` runs ``tl_depthwise_conv2d``
(``depthwise_conv2d.cc``: direct loops, OpenMP over planes, forward and both
gradients) when the operator library is usable, and Paddle's own grouped
convolution otherwise; both compute the same function. The library is compiled
once into ``$TLBENCH_OPS_DIR`` (default ``~/.cache/tlbench/paddle_ops``) and
loaded from there by later processes.

``TLBENCH_DEPTHWISE_OP`` selects the path: ``auto`` (default: build if needed and
use it, falling back with one warning if the build fails), ``0`` (always Paddle's
op), ``1`` (the custom op, and a build failure is an error).

The custom op is a dygraph training speed-up: code traced for export
(``paddle.jit.save``) should call Paddle's op, which :func:`use_custom_depthwise`
reports by returning False outside dynamic mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

logger = logging.getLogger(__name__)

__all__ = [
    "OPS_ENV",
    "custom_depthwise_available",
    "depthwise_conv2d",
    "load_ops",
    "same_paddings",
    "use_custom_depthwise",
]

OPS_ENV = "TLBENCH_DEPTHWISE_OP"
OPS_DIR_ENV = "TLBENCH_OPS_DIR"
_SOURCE = Path(__file__).with_name("depthwise_conv2d.cc")
_LIB_NAME = "tlbench_paddle_ops"

_lock = threading.Lock()
_state: dict[str, Any] = {"module": None, "tried": False, "error": None}


def _mode() -> str:
    value = os.environ.get(OPS_ENV, "auto").strip().lower()
    if value in ("0", "off", "false", "no"):
        return "off"
    if value in ("1", "on", "true", "yes"):
        return "on"
    return "auto"


def _build_dir() -> Path:
    configured = os.environ.get(OPS_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tlbench" / "paddle_ops"


# Built on the machine that runs it, so -march=native is safe and lets the row
# loops use the widest vector unit; a build folder shared between different CPUs
# needs its own TLBENCH_OPS_DIR per CPU type.
_CXX_FLAGS = ["-O3", "-fopenmp", "-march=native"]


def _link_flags() -> list[str]:
    """Link the op's OpenMP calls to the runtime that Paddle's MKL already uses (libiomp5), when present.

    With GCC's libgomp beside Intel's libiomp5 the process has two OpenMP thread pools whose
    idle threads spin against each other on two cores: Lite0's training step at 96 px took
    ~1.4x longer with both at 2 threads than with one runtime (libiomp5 provides the GOMP_*
    entry points GCC's code calls).
    """
    import paddle

    libs = Path(paddle.__file__).parent / "libs"
    if (libs / "libiomp5.so").exists():
        return [f"-L{libs}", "-liomp5", f"-Wl,-rpath,{libs}"]
    return ["-fopenmp"]


def _fingerprint() -> str:
    import paddle

    digest = hashlib.sha256(_SOURCE.read_bytes())
    digest.update(" ".join([*_CXX_FLAGS, *_link_flags(), paddle.__version__]).encode())
    return digest.hexdigest()


def _load_prebuilt(build_dir: Path) -> Any | None:
    # paddle.utils.cpp_extension.load re-runs its setup script in a subprocess on
    # every call (~10 s); a library built from the same source, flags and Paddle
    # version is loaded directly instead.
    library = build_dir / _LIB_NAME / f"{_LIB_NAME}.so"
    stamp = build_dir / f"{_LIB_NAME}.stamp"
    try:
        if not (library.is_file() and stamp.read_text().strip() == _fingerprint()):
            return None
        with warnings.catch_warnings():
            # Importing Paddle's extension utilities warns about ccache, which loading does not use.
            warnings.simplefilter("ignore", UserWarning)
            from paddle.utils.cpp_extension.extension_utils import _import_module_from_library

            return _import_module_from_library(_LIB_NAME, str(library.parent), False)
    except Exception as exc:  # private Paddle API or a stale library: rebuild
        logger.debug("prebuilt %s not usable (%s); rebuilding", library, exc)
        return None


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send stdout (the descriptor, so compiler subprocesses too) to stderr while active."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def load_ops() -> Any:
    """Compile (once per build folder and source version) and load the operator library.

    Returns the Python module ``paddle.utils.cpp_extension.load`` creates, whose
    ``tl_depthwise_conv2d(x, w, strides, paddings)`` is the raw operator. Raises
    whatever the compiler or loader raised when the build fails.
    """
    with _lock:
        if _state["module"] is not None:
            return _state["module"]
        build_dir = _build_dir()
        build_dir.mkdir(parents=True, exist_ok=True)
        module = _load_prebuilt(build_dir)
        if module is None:
            from paddle.utils.cpp_extension import load

            logger.info("building the custom depthwise op in %s", build_dir)
            with _stdout_to_stderr():  # Paddle prints its progress to stdout, which --json keeps for results
                module = load(
                    name=_LIB_NAME,
                    sources=[str(_SOURCE)],
                    extra_cxx_cflags=_CXX_FLAGS,
                    extra_ldflags=_link_flags(),
                    build_directory=str(build_dir),
                    verbose=False,
                )
            (build_dir / f"{_LIB_NAME}.stamp").write_text(_fingerprint() + "\n")
        _state["module"] = module
        return module


def custom_depthwise_available() -> bool:
    """Whether the custom depthwise op can be used now (builds it on the first call in ``auto``/``1``)."""
    mode = _mode()
    if mode == "off":
        return False
    if _state["module"] is not None:
        return True
    if _state["tried"]:
        if mode == "on":
            raise RuntimeError(f"{OPS_ENV}=1 but the depthwise op failed to build: {_state['error']}")
        return False
    _state["tried"] = True
    try:
        load_ops()
    except Exception as exc:  # any compiler/loader failure means: use Paddle's op
        _state["error"] = f"{type(exc).__name__}: {exc}"
        if mode == "on":
            raise RuntimeError(f"{OPS_ENV}=1 but the depthwise op failed to build: {_state['error']}") from exc
        logger.warning("custom depthwise op unavailable, using Paddle's convolution: %s", _state["error"])
        return False
    return True


def use_custom_depthwise(x: Any) -> bool:
    """True when ``x`` should go through the custom op: dygraph, CPU, float32, and the op available."""
    import paddle

    if not paddle.in_dynamic_mode() or _mode() == "off":
        return False
    if not x.place.is_cpu_place() or x.dtype != paddle.float32:
        return False
    return custom_depthwise_available()


def same_paddings(height: int, width: int, kernel: int, stride: int) -> list[int]:
    """TensorFlow SAME padding ``[top, bottom, left, right]`` for a ``height x width`` input."""

    def split(n: int) -> tuple[int, int]:
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        return total // 2, total - total // 2

    (top, bottom), (left, right) = split(int(height)), split(int(width))
    return [top, bottom, left, right]


def depthwise_conv2d(x: Any, weight: Any, stride: int, paddings: Sequence[int]) -> Any:
    """Depthwise convolution of NCHW ``x`` with ``weight`` [C, 1, K, K], no bias.

    ``paddings`` is ``[top, bottom, left, right]`` (zeros). Uses the custom CPU op
    when :func:`use_custom_depthwise` allows it, else ``paddle.nn.functional.conv2d``
    with ``groups=C``; gradients flow to both ``x`` and ``weight`` either way.
    """
    if len(paddings) != 4 or any(int(p) < 0 for p in paddings):
        raise ValueError(f"paddings must be 4 values >= 0 (top, bottom, left, right), got {list(paddings)!r}")
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    pads = [int(p) for p in paddings]
    if use_custom_depthwise(x):
        return load_ops().tl_depthwise_conv2d(x, weight, [int(stride)] * 2, pads)
    import paddle.nn.functional as F

    return F.conv2d(x, weight, stride=int(stride), padding=[pads[0], pads[1], pads[2], pads[3]], groups=x.shape[1])
