"""Reference preprocessing in numpy/OpenCV, following PaddleClas's deploy ops exactly.

This is the oracle for the fused kernels and the fallback when they are unavailable.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def resize_short_side(image: np.ndarray, target: int) -> np.ndarray:
    """Resize so the short side equals ``target`` (PaddleClas ``ResizeImage``, Python rounding)."""
    h, w = image.shape[:2]
    percent = float(target) / min(h, w)
    new_w = int(round(w * percent))
    new_h = int(round(h * percent))
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


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
    """Preprocess RGB uint8 HxWx3 images into an ``[N, 3, crop, crop]`` array."""
    out = np.empty((len(images), 3, crop_size, crop_size), dtype=dtype)
    for i, img in enumerate(images):
        resized = resize_short_side(img, resize_short)
        out[i] = normalize_chw(center_crop(resized, crop_size), mean, std, scale)
    return out
