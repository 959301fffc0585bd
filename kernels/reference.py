"""Reference preprocessing in numpy/OpenCV, following PaddleClas's deploy ops exactly.

This is the oracle for the fused kernels and the fallback when they are unavailable. OpenCV is
used when it is installed; without it (e.g. on a GPU test machine) ``cv2.resize(INTER_LINEAR)`` is
replaced by :func:`resize_linear_numpy`, a numpy transcription of OpenCV's 8-bit fixed-point
arithmetic that reproduces it bit for bit (tests/test_kernels.py checks that).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

try:
    import cv2
except ImportError:  # pragma: no cover - exercised only where OpenCV is missing
    cv2 = None


#: Longest side the resize step may produce. Resize-then-crop is kept as PaddleClas does it
#: (cropping first would not be bit-identical with OpenCV's INTER_LINEAR), so an extreme
#: aspect ratio must be refused instead: a 1x200000 image resized to short side 256 would be
#: 256x51200000 (39 GB). 65535 still allows 256:1 at short side 256.
MAX_RESIZED_SIDE = 65535


def check_resized_size(height: int, width: int, new_h: int, new_w: int) -> None:
    """Refuse a resize of ``height x width`` to ``new_h x new_w`` whose long side exceeds :data:`MAX_RESIZED_SIDE`.

    Raises:
        ValueError: naming the image shape, the resized shape and the limit.
    """
    if max(new_h, new_w) > MAX_RESIZED_SIDE:
        raise ValueError(
            f"image of {height}x{width} (HxW) would be resized to {new_h}x{new_w}, more than {MAX_RESIZED_SIDE} "
            "pixels on the long side: its aspect ratio is too extreme to preprocess"
        )


def resize_short_side(image: np.ndarray, target: int) -> np.ndarray:
    """Resize so the short side equals ``target`` (PaddleClas ``ResizeImage``, Python rounding).

    Raises:
        ValueError: the resized image would be too large (see :func:`check_resized_size`), or
            OpenCV refuses the resize.
    """
    h, w = image.shape[:2]
    percent = float(target) / min(h, w)
    new_w = int(round(w * percent))
    new_h = int(round(h * percent))
    check_resized_size(h, w, new_h, new_w)
    if cv2 is None:
        return resize_linear_numpy(image, new_w, new_h)
    try:
        return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    except cv2.error as exc:  # callers handle bad input as ValueError, not as an OpenCV type
        raise ValueError(f"cannot resize the {h}x{w} image to {new_h}x{new_w}: {exc}") from None


def _linear_taps(src: int, dst: int, clamp_fraction: bool):
    """Source indices and 11-bit weights of OpenCV's INTER_LINEAR along one axis."""
    scale = 1.0 / (dst / src)  # OpenCV's 1 / inv_scale, not src / dst
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    i = np.floor(f).astype(np.int64)
    f = (f - i.astype(np.float32)).astype(np.float32)
    if clamp_fraction:
        low = i < 0
        f[low], i[low] = 0, 0
        high = i >= src - 1
        f[high], i[high] = 0, src - 1
    w0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int64)
    w1 = np.rint(f * np.float32(2048)).astype(np.int64)
    return np.clip(i, 0, src - 1), np.clip(i + 1, 0, src - 1), w0, w1


def resize_linear_numpy(
    image: np.ndarray, new_w: int, new_h: int, window: Optional[tuple[int, int, int, int]] = None
) -> np.ndarray:
    """``cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)`` for uint8 HxWxC.

    Horizontal taps are summed exactly, then OpenCV's SIMD vertical step: ``>> 4``, 16-bit
    ``mulhi`` by each row weight, ``(t + 2) >> 2``, saturation. ``window=(top, left, height,
    width)`` computes only that region of the resized image (the same values as slicing it).
    """
    h, w = image.shape[:2]
    x0, x1, a0, a1 = _linear_taps(w, new_w, clamp_fraction=True)
    y0, y1, b0, b1 = _linear_taps(h, new_h, clamp_fraction=False)
    if window is not None:
        top, left, win_h, win_w = window
        cols, rows_ = slice(left, left + win_w), slice(top, top + win_h)
        x0, x1, a0, a1 = x0[cols], x1[cols], a0[cols], a1[cols]
        y0, y1, b0, b1 = y0[rows_], y1[rows_], b0[rows_], b1[rows_]
    src = image.reshape(h, w, -1).astype(np.int32)
    a0, a1, b0, b1 = (v.astype(np.int32) for v in (a0, a1, b0, b1))
    used = np.unique(np.concatenate([y0, y1]))  # horizontal pass only on the rows that are read
    rows = np.zeros((h,) + (len(x0), src.shape[2]), np.int32)
    rows[used] = (src[used][:, x0] * a0[None, :, None] + src[used][:, x1] * a1[None, :, None]) >> 4
    top_part = (rows[y0] * b0[:, None, None]) >> 16
    bottom_part = (rows[y1] * b1[:, None, None]) >> 16
    out = np.clip((top_part + bottom_part + 2) >> 2, 0, 255).astype(np.uint8)
    return out.reshape((len(y0), len(x0)) + image.shape[2:])


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Center crop of ``size``×``size`` (PaddleClas ``CropImage``: offset ``(side - size) // 2``)."""
    h, w = image.shape[:2]
    top = (h - size) // 2
    left = (w - size) // 2
    if top < 0 or left < 0:
        raise ValueError(f"image of {h}x{w} is smaller than the {size}x{size} crop")
    return image[top : top + size, left : left + size]


def normalize_chw(image: np.ndarray, mean, std, scale: float) -> np.ndarray:
    """``(x * scale - mean) / std`` in HWC float32, then HWC → CHW."""
    x = image.astype(np.float32) * np.float32(scale)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize_crop_geometry(height: int, width: int, resize_short: int, crop_size: int) -> tuple[int, int, int, int]:
    """``(resized_h, resized_w, top, left)`` of ResizeImage + CropImage for an image of that size."""
    percent = float(resize_short) / min(height, width)
    new_w = int(round(width * percent))
    new_h = int(round(height * percent))
    return new_h, new_w, (new_h - crop_size) // 2, (new_w - crop_size) // 2


def preprocess_reference(
    images: Sequence[np.ndarray],
    *,
    resize_short: int,
    crop_size: int,
    mean,
    std,
    scale: float = 1.0 / 255.0,
    dtype: str = "float32",
) -> np.ndarray:
    """Preprocess RGB uint8 HxWx3 images into an ``[N, 3, crop, crop]`` array.

    Raises:
        ValueError: an image smaller than the crop after resizing, or one whose resized size
            would exceed :data:`MAX_RESIZED_SIDE` (extreme aspect ratio).
    """
    out = np.empty((len(images), 3, crop_size, crop_size), dtype=dtype)
    for i, img in enumerate(images):
        if cv2 is None:
            # Without OpenCV only the crop window of the resized image is computed (same values).
            new_h, new_w, top, left = resize_crop_geometry(img.shape[0], img.shape[1], resize_short, crop_size)
            check_resized_size(img.shape[0], img.shape[1], new_h, new_w)
            if top < 0 or left < 0:
                raise ValueError(f"image of {new_h}x{new_w} is smaller than the {crop_size}x{crop_size} crop")
            cropped = resize_linear_numpy(img, new_w, new_h, window=(top, left, crop_size, crop_size))
        else:
            cropped = center_crop(resize_short_side(img, resize_short), crop_size)
        out[i] = normalize_chw(cropped, mean, std, scale)
    return out
