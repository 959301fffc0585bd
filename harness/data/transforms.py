"""Training and evaluation transforms with PaddleClas semantics, and mixup.

Training: ``RandCropImage`` (random resized crop) → ``RandFlipImage`` (horizontal, p=0.5)
→ ``NormalizeImage`` → ``ToCHWImage``. Evaluation goes through :func:`kernels.preprocess`,
the same code the exported model's deploy path runs, driven by the one
:class:`~harness.preprocess_spec.PreprocessSpec`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import cv2
import numpy as np

import kernels

from common.errors import ConfigError
from ..preprocess_spec import PreprocessSpec


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        desc = f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {desc}")


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a PaddleClas ``RandCropImage`` crop of an ``height``×``width`` image.

    One draw: aspect ratio uniform in ``ratio``, area fraction uniform in ``scale`` with
    both ends capped so the crop fits the image (PaddleClas's ``bound``), position
    uniform. If rounding still leaves an empty or oversized box, the whole-image
    center square is used instead.
    """
    aspect = math.sqrt(rng.uniform(ratio[0], ratio[1]))
    w_factor = aspect
    h_factor = 1.0 / aspect
    bound = min((width / height) / (w_factor**2), (height / width) / (h_factor**2))
    scale_max = min(scale[1], bound)
    scale_min = min(scale[0], bound)
    target_area = width * height * rng.uniform(scale_min, scale_max)
    side = math.sqrt(target_area)
    w = int(side * w_factor)
    h = int(side * h_factor)
    if not (0 < w <= width and 0 < h <= height):
        s = min(height, width)
        return (height - s) // 2, (width - s) // 2, s, s
    left = int(rng.integers(0, width - w + 1))
    top = int(rng.integers(0, height - h + 1))
    return top, left, h, w


def normalize_to_chw(img: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """``(x * scale - mean) / std`` in float32, HWC → CHW (PaddleClas ``NormalizeImage`` + ``ToCHWImage``)."""
    x = img.astype(np.float32) * np.float32(spec.scale)
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class TrainTransform:
    """Random resized crop to ``spec.crop_size``, horizontal flip (p=0.5), normalize, CHW."""

    def __init__(self, spec: PreprocessSpec) -> None:
        if not isinstance(spec, PreprocessSpec):
            raise ConfigError(f"TrainTransform needs a PreprocessSpec, got {type(spec).__name__}")
        lo, hi = spec.train_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"train_scale must satisfy 0 < low <= high <= 1, got {spec.train_scale!r}")
        rlo, rhi = spec.train_ratio
        if not 0 < rlo <= rhi:
            raise ConfigError(f"train_ratio must satisfy 0 < low <= high, got {spec.train_ratio!r}")
        self.spec = spec

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one HxWx3 uint8 RGB image into a ``[3, crop, crop]`` float32 array using ``rng``."""
        _check_image(img)
        size = self.spec.crop_size
        top, left, h, w = random_resized_crop_box(
            img.shape[0], img.shape[1], self.spec.train_scale, self.spec.train_ratio, rng
        )
        crop = cv2.resize(img[top : top + h, left : left + w], (size, size), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return normalize_to_chw(crop, self.spec)

    def __repr__(self) -> str:
        return f"TrainTransform(crop={self.spec.crop_size}, scale={self.spec.train_scale}, ratio={self.spec.train_ratio})"


class EvalTransform:
    """Resize short side → center crop → normalize → CHW, through :func:`kernels.preprocess`."""

    def __init__(self, spec: PreprocessSpec) -> None:
        if not isinstance(spec, PreprocessSpec):
            raise ConfigError(f"EvalTransform needs a PreprocessSpec, got {type(spec).__name__}")
        if spec.resize_short < spec.crop_size:
            raise ConfigError(
                f"resize_short ({spec.resize_short}) must be >= crop_size ({spec.crop_size}) for evaluation"
            )
        self.spec = spec

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocess a list of HxWx3 uint8 RGB images into ``[N, 3, crop, crop]`` float32."""
        for img in images:
            _check_image(img)
        if len(images) == 0:
            return np.empty((0, 3, self.spec.crop_size, self.spec.crop_size), np.float32)
        return kernels.preprocess(
            list(images),
            resize_short=self.spec.resize_short,
            crop_size=self.spec.crop_size,
            mean=self.spec.mean,
            std=self.spec.std,
            scale=self.spec.scale,
        )

    def __call__(self, img: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """Preprocess one image into ``[3, crop, crop]``; ``rng`` is accepted and ignored."""
        return self.batch([img])[0]

    def __repr__(self) -> str:
        return f"EvalTransform(resize_short={self.spec.resize_short}, crop={self.spec.crop_size})"


def mixup_batch(
    images: np.ndarray, labels: np.ndarray, alpha: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Mix a batch with a shuffled copy of itself (Zhang et al. 2018, PaddleClas ``MixupOperator``).

    ``lam ~ Beta(alpha, alpha)``; returns ``(lam * x + (1 - lam) * x[perm], labels, labels[perm], lam)``.
    The loss is ``lam * loss(labels_a) + (1 - lam) * loss(labels_b)``.
    """
    if not alpha > 0:
        raise ConfigError(f"mixup alpha must be > 0, got {alpha!r}")
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim < 1 or labels.shape != (images.shape[0],):
        raise ValueError(f"expected images [N, ...] and labels [N], got {images.shape} and {labels.shape}")
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(images.shape[0])
    mixed = (np.float32(lam) * images + np.float32(1.0 - lam) * images[perm]).astype(np.float32, copy=False)
    return mixed, labels, labels[perm], lam
