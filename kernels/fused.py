"""Python entry point of the fused CPU kernel, with the reference as fallback.

:func:`preprocess` validates its arguments once, fixes dtype and contiguity, and hands the batch
to the native module ``kernels._C`` (built from ``kernels/src`` by ``pip install``). When that
module is missing (no compiler at install time, an ImportError) or ``TLBENCH_KERNELS=reference`` is
set, the numpy/OpenCV reference computes the same result. The contract both follow is written in
``kernels/README.md``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence

import numpy as np

from common.machine import usable_cores
from common.validate import positive_int
from .reference import preprocess_reference

log = logging.getLogger(__name__)

#: Environment variable that selects the implementation: ``reference`` forces numpy/OpenCV.
ENV_VAR = "TLBENCH_KERNELS"

_native: Any = None
_native_error: Optional[str] = None
_native_loaded = False


def _load_native() -> Any:
    """The ``kernels._C`` module, or None when it cannot be imported (the reason is logged once)."""
    global _native, _native_error, _native_loaded
    if not _native_loaded:
        _native_loaded = True
        try:
            from . import _C  # noqa: PLC0415 - optional native module

            _native = _C
        except ImportError as exc:
            _native_error = str(exc)
            log.info("kernels._C is not available (%s); using the numpy/OpenCV reference", exc)
    return _native


def _forced_reference() -> bool:
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value not in ("", "auto", "native", "reference"):
        raise ValueError(f"{ENV_VAR}={value!r} is not understood; expected 'reference' or 'auto'")
    return value == "reference"


def backend() -> str:
    """Active CPU path: ``"cpu-native"`` (the fused C++ kernel) or ``"reference"`` (numpy/OpenCV).

    The CUDA kernel has its own entry point, :func:`kernels.cuda.preprocess_cuda`.
    """
    if _forced_reference() or _load_native() is None:
        return "reference"
    return "cpu-native"


def _three_floats(name: str, value: Any) -> list[float]:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size != 3 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be 3 finite numbers (one per RGB channel), got {value!r}")
    # The reference computes in float32; round the same way before the kernel sees the values.
    return [float(v) for v in arr.astype(np.float32)]


def _out_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    return dt


def check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate a batch of RGB images and return C-contiguous uint8 HxWx3 arrays (no copy if already so).

    Raises ValueError naming the first offending image and what was expected.
    """
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(
                f"images must be a list of HxWx3 arrays or one NxHxWx3 array, got an array of shape {images.shape}"
            )
        images = list(images)
    if not isinstance(images, (list, tuple)):
        raise ValueError(f"images must be a list of HxWx3 uint8 RGB arrays, got {type(images).__name__}")
    checked = []
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray):
            raise ValueError(f"images[{i}] must be a numpy array (HxWx3 uint8 RGB), got {type(img).__name__}")
        if img.dtype != np.uint8:
            raise ValueError(
                f"images[{i}] must have dtype uint8, got {img.dtype}; convert 16-bit or float images first"
            )
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"images[{i}] must be HxWx3 (RGB), got shape {img.shape}; convert gray/RGBA images to RGB first "
                "(kernels.decode.to_rgb_uint8)"
            )
        if img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"images[{i}] is empty: shape {img.shape}")
        checked.append(np.ascontiguousarray(img))
    return checked


def preprocess(
    images: Sequence[np.ndarray],
    *,
    resize_short: int,
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: float = 1.0 / 255.0,
    dtype: Any = "float32",
    threads: Optional[int] = None,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Resize short side → center crop → normalize → CHW for a batch of RGB uint8 images.

    Args:
        images: list of HxWx3 uint8 RGB arrays, any sizes (or one NxHxWx3 array).
        resize_short: short-side length after resizing (PaddleClas ``ResizeImage.resize_short``).
        crop_size: side of the square center crop; must not exceed ``resize_short``.
        mean, std: per-channel RGB values applied after ``scale`` (``(x * scale - mean) / std``).
        scale: multiplier of the uint8 values, 1/255 by default.
        dtype: ``'float32'`` or ``'float16'``; must equal ``out.dtype`` when ``out`` is given.
        threads: worker threads over images; None uses every core this process may run on.
        out: optional C-contiguous ``[N, 3, crop, crop]`` array written in place (e.g. a
            predictor's input buffer) and returned.

    Returns:
        ``out`` or a new ``[N, 3, crop_size, crop_size]`` array.

    Raises:
        ValueError: bad images, parameters or ``out`` (the message says what was expected).
    """
    resize_short = positive_int(resize_short, "resize_short", error=ValueError)
    crop_size = positive_int(crop_size, "crop_size", error=ValueError)
    if crop_size > resize_short:
        raise ValueError(
            f"crop_size ({crop_size}) must not exceed resize_short ({resize_short}): the center crop "
            "would not fit inside the resized image"
        )
    mean32 = _three_floats("mean", mean)
    std32 = _three_floats("std", std)
    if min(std32) <= 0:
        raise ValueError(f"std values must be > 0, got {std!r}")
    if not np.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    dt = _out_dtype(dtype)
    n_threads = usable_cores() if threads is None else positive_int(threads, "threads", error=ValueError)
    batch = check_images(images)
    shape = (len(batch), 3, crop_size, crop_size)
    if out is None:
        out = np.empty(shape, dtype=dt)
    else:
        if not isinstance(out, np.ndarray):
            raise ValueError(f"out must be a numpy array, got {type(out).__name__}")
        if out.shape != shape or out.dtype != dt or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(
                f"out must be a writeable C-contiguous {dt} array of shape {shape}, got {out.dtype} {out.shape} "
                f"(c_contiguous={out.flags.c_contiguous}, writeable={out.flags.writeable})"
            )
    if not batch:
        return out
    native = None if _forced_reference() else _load_native()
    if native is None:
        out[...] = preprocess_reference(
            batch, resize_short=resize_short, crop_size=crop_size, mean=mean32, std=std32, scale=scale, dtype=dt
        )
        return out
    native.preprocess(batch, out, resize_short, crop_size, mean32, std32, float(np.float32(scale)), n_threads)
    return out
