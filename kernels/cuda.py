"""CUDA entry point of the fused preprocessing kernel (device arrays in, device array out).

The kernel (``kernels/src/preprocess_cuda.cu``) is a shared library with a small C ABI, built by
``pip install`` when nvcc is present (installed as ``kernels/libtlbench_preprocess_cuda.so``) or
by ``bench/gpu_check.sh``; ``TLBENCH_CUDA_LIB`` points at another build. It is loaded with ctypes,
so nothing here needs CUDA at import time and no Python extension has to match the CUDA version.

Inputs are any objects with ``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA tensors, Numba
arrays): uint8 HxWx3 RGB images whose pixels and channels are packed (rows may be strided, so
crops of a larger frame need no copy). The output is written into ``out`` (same interface,
C-contiguous ``[N, 3, crop, crop]`` float32/float16) or a new CuPy array, and can be handed to
Paddle without a copy, e.g. ``paddle.utils.dlpack.from_dlpack(out)`` followed by
``input_handle.share_external_data(tensor)``.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from common.validate import positive_int
from .fused import _out_dtype, _three_floats

#: Environment variable naming the CUDA library to load instead of the installed one.
LIB_ENV_VAR = "TLBENCH_CUDA_LIB"
LIB_NAME = "libtlbench_preprocess_cuda.so"
ABI_VERSION = 1

_lib: Optional[ctypes.CDLL] = None


def library_path() -> Path:
    """Where the CUDA library is looked for: ``$TLBENCH_CUDA_LIB``, else the package folders
    (an editable install keeps built files in site-packages and sources in the checkout)."""
    env = os.environ.get(LIB_ENV_VAR)
    if env:
        return Path(env)
    from . import __path__ as package_dirs  # noqa: PLC0415

    candidates = [Path(d) / LIB_NAME for d in package_dirs]
    return next((c for c in candidates if c.is_file()), candidates[0])


def load_library() -> ctypes.CDLL:
    """Load (once) and return the CUDA library; RuntimeError says how to build it when missing."""
    global _lib
    if _lib is not None:
        return _lib
    path = library_path()
    if not path.is_file():
        raise RuntimeError(
            f"CUDA preprocessing library not found at {path}; build it with bench/gpu_check.sh or "
            f"`pip install .` on a machine with nvcc, or set {LIB_ENV_VAR}"
        )
    lib = ctypes.CDLL(str(path))
    lib.tlb_cuda_abi_version.restype = ctypes.c_int
    if lib.tlb_cuda_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{path} has C ABI version {lib.tlb_cuda_abi_version()}, expected {ABI_VERSION}")
    lib.tlb_cuda_last_error.restype = ctypes.c_char_p
    lib.tlb_cuda_preprocess.restype = ctypes.c_int
    lib.tlb_cuda_preprocess.argtypes = [
        ctypes.POINTER(ctypes.c_uint64),
        ctypes.POINTER(ctypes.c_int64),
        ctypes.POINTER(ctypes.c_int64),
        ctypes.POINTER(ctypes.c_int64),
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_float),
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_float,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    _lib = lib
    return lib


def describe_image(i: int, image: Any) -> tuple[int, int, int, int]:
    """``(device_pointer, height, width, row_stride_bytes)`` of a CUDA uint8 HxWx3 image.

    Raises ValueError when the object is not such an image or its pixels are not packed.
    """
    cai = getattr(image, "__cuda_array_interface__", None)
    if cai is None:
        raise ValueError(
            f"images[{i}] must be a CUDA array (CuPy, PyTorch CUDA tensor: __cuda_array_interface__), "
            f"got {type(image).__name__}"
        )
    shape = tuple(cai["shape"])
    if np.dtype(cai["typestr"]) != np.uint8:
        raise ValueError(f"images[{i}] must have dtype uint8, got {np.dtype(cai['typestr'])}")
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"images[{i}] must be HxWx3 (RGB), got shape {shape}; convert gray/RGBA images first")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"images[{i}] is empty: shape {shape}")
    strides = cai.get("strides") or (shape[1] * 3, 3, 1)
    if strides[1] != 3 or strides[2] != 1 or strides[0] < 3 * shape[1]:
        raise ValueError(
            f"images[{i}] must have packed pixels (strides (row, 3, 1)), got strides {tuple(strides)}; "
            "make it contiguous first"
        )
    ptr = int(cai["data"][0])
    return ptr, int(shape[0]), int(shape[1]), int(strides[0])


def _stream_handle(stream: Any) -> int:
    if stream is None:
        try:
            import cupy  # noqa: PLC0415 - optional dependency

            return int(cupy.cuda.get_current_stream().ptr)
        except ImportError:
            return 0
    if isinstance(stream, int):
        return stream
    for attr in ("ptr", "cuda_stream", "handle"):
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    raise ValueError(f"stream must be an int handle, a CuPy or a PyTorch stream, got {type(stream).__name__}")


def preprocess_cuda(
    images: Sequence[Any],
    *,
    resize_short: int,
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: float = 1.0 / 255.0,
    dtype: Any = "float32",
    out: Any = None,
    stream: Any = None,
) -> Any:
    """CUDA version of :func:`kernels.preprocess`: same contract, device arrays in and out.

    Args:
        images: CUDA uint8 HxWx3 RGB arrays of any sizes (``__cuda_array_interface__``).
        resize_short, crop_size, mean, std, scale, dtype: as in :func:`kernels.preprocess`.
        out: optional C-contiguous CUDA ``[N, 3, crop, crop]`` array of ``dtype``; a new CuPy
            array when omitted.
        stream: CUDA stream to launch on (int handle, CuPy or PyTorch stream); default CuPy's
            current stream. The call returns once the work is queued.

    Returns:
        ``out`` (or the new CuPy array).
    """
    resize_short = positive_int(resize_short, "resize_short", error=ValueError)
    crop_size = positive_int(crop_size, "crop_size", error=ValueError)
    if crop_size > resize_short:
        raise ValueError(f"crop_size ({crop_size}) must not exceed resize_short ({resize_short})")
    mean32 = _three_floats("mean", mean)
    std32 = _three_floats("std", std)
    if min(std32) <= 0:
        raise ValueError(f"std values must be > 0, got {std!r}")
    dt = _out_dtype(dtype)
    described = [describe_image(i, img) for i, img in enumerate(images)]
    n = len(described)
    shape = (n, 3, crop_size, crop_size)
    if out is None:
        import cupy  # noqa: PLC0415 - optional dependency

        out = cupy.empty(shape, dtype=dt)
    cai = getattr(out, "__cuda_array_interface__", None)
    if cai is None:
        raise ValueError(f"out must be a CUDA array, got {type(out).__name__}")
    if tuple(cai["shape"]) != shape or np.dtype(cai["typestr"]) != dt or cai.get("strides") not in (None, _c_strides(shape, dt)):
        raise ValueError(f"out must be a C-contiguous {dt} CUDA array of shape {shape}, got {cai['typestr']} {tuple(cai['shape'])}")
    if n == 0:
        return out
    lib = load_library()
    ptrs = (ctypes.c_uint64 * n)(*[d[0] for d in described])
    heights = (ctypes.c_int64 * n)(*[d[1] for d in described])
    widths = (ctypes.c_int64 * n)(*[d[2] for d in described])
    strides = (ctypes.c_int64 * n)(*[d[3] for d in described])
    rc = lib.tlb_cuda_preprocess(
        ptrs,
        heights,
        widths,
        strides,
        n,
        resize_short,
        crop_size,
        (ctypes.c_float * 3)(*mean32),
        (ctypes.c_float * 3)(*std32),
        float(np.float32(scale)),
        0 if dt == np.float32 else 1,
        ctypes.c_void_p(int(cai["data"][0])),
        ctypes.c_void_p(_stream_handle(stream)),
    )
    if rc != 0:
        message = lib.tlb_cuda_last_error().decode(errors="replace")
        if rc == 1:
            raise ValueError(f"CUDA preprocessing: {message}")
        raise RuntimeError(f"CUDA preprocessing failed: {message}")
    return out


def _c_strides(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    strides, step = [], dtype.itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))
