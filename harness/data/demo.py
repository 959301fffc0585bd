"""The built-in ``demo`` dataset: procedurally drawn shapes on cluttered, noisy backgrounds.

Six classes (circle, square, triangle, cross, stripes, ring) in random colours,
positions, sizes and rotations. Circle/ring and square/stripes share outlines, and
background clutter (lines, blobs, noise) sits under the object, so the task needs
shape features rather than a colour statistic. Every image comes from its own
generator seeded with ``(version, split, class, index)``; the JPEG bytes are identical
from run to run on the same OpenCV build.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from common.errors import DatasetError

log = logging.getLogger(__name__)

DEMO_VERSION = 1
DEMO_CLASSES = ("circle", "square", "triangle", "cross", "stripes", "ring")
DEMO_SPLIT_SIZES = {"train": 60, "val": 20, "test": 40}
DEMO_IMAGE_SIZE = 96
_JPEG_QUALITY = 90
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


def cache_dir() -> Path:
    """tlbench's cache folder: ``$TLBENCH_CACHE`` or ``~/.cache/tlbench``."""
    env = os.environ.get("TLBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tlbench"


def demo_root(base: Optional[str | os.PathLike] = None) -> Path:
    """Folder of the current demo version under ``base`` (default: ``<cache>/datasets``)."""
    base = Path(base) if base is not None else cache_dir() / "datasets"
    return base / f"demo-v{DEMO_VERSION}"


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * _ONE).astype(np.int32)


def _rotated(points: np.ndarray, angle: float, center: np.ndarray) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return points @ rot.T + center


def _random_color(rng: np.random.Generator, avoid: np.ndarray) -> tuple[int, int, int]:
    # Keep the object distinguishable from the background around it.
    for _ in range(20):
        color = rng.integers(0, 256, size=3)
        if np.abs(color.astype(np.int64) - avoid).sum() > 150:
            break
    return tuple(int(v) for v in color)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    c0, c1 = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (math.cos(angle) * t[None, :] + math.sin(angle) * t[:, None])
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    img = c0 + (c1 - c0) * ramp[..., None]
    img = img.astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):  # clutter: lines and soft blobs
        color = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            p1 = tuple(int(v) for v in rng.integers(0, size, size=2))
            p2 = tuple(int(v) for v in rng.integers(0, size, size=2))
            cv2.line(img, p1, p2, color, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            center = tuple(int(v) for v in rng.integers(0, size, size=2))
            axes = tuple(int(v) for v in rng.integers(2, size // 8, size=2))
            cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(img, (5, 5), 1.5)


def render_demo_image(class_index: int, rng: np.random.Generator, size: int = DEMO_IMAGE_SIZE) -> np.ndarray:
    """Draw one ``size``×``size`` BGR uint8 image of class ``DEMO_CLASSES[class_index]``."""
    if not 0 <= class_index < len(DEMO_CLASSES):
        raise ValueError(f"class_index must be in 0..{len(DEMO_CLASSES) - 1}, got {class_index}")
    img = _background(rng, size)
    radius = rng.uniform(0.16, 0.36) * size
    margin = radius * 0.8
    center = rng.uniform(margin, size - margin, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    y, x = int(np.clip(center[1], 0, size - 1)), int(np.clip(center[0], 0, size - 1))
    color = _random_color(rng, img[y, x].astype(np.int64))
    name = DEMO_CLASSES[class_index]
    c_fixed = tuple(int(v) for v in _fixed(center))
    if name == "circle":
        cv2.circle(img, c_fixed, int(radius * _ONE), color, -1, cv2.LINE_AA, _SHIFT)
    elif name == "ring":
        thickness = max(2, int(radius * rng.uniform(0.18, 0.32)))
        cv2.circle(img, c_fixed, int((radius - thickness / 2) * _ONE), color, thickness, cv2.LINE_AA, _SHIFT)
    elif name == "square":
        half = radius / math.sqrt(2)
        pts = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        cv2.fillPoly(img, [_fixed(_rotated(pts, angle, center))], color, cv2.LINE_AA, _SHIFT)
    elif name == "triangle":
        pts = np.array([[radius * math.cos(a), radius * math.sin(a)] for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)])
        cv2.fillPoly(img, [_fixed(_rotated(pts, angle, center))], color, cv2.LINE_AA, _SHIFT)
    elif name == "cross":
        arm = radius * rng.uniform(0.22, 0.35)
        for bar in (
            np.array([[-radius, -arm], [radius, -arm], [radius, arm], [-radius, arm]]),
            np.array([[-arm, -radius], [arm, -radius], [arm, radius], [-arm, radius]]),
        ):
            cv2.fillPoly(img, [_fixed(_rotated(bar, angle, center))], color, cv2.LINE_AA, _SHIFT)
    elif name == "stripes":
        n = int(rng.integers(3, 5))
        half = radius / math.sqrt(2)
        width = 2 * half / (2 * n - 1)
        for k in range(n):
            x0 = -half + 2 * k * width
            bar = np.array([[x0, -half], [x0 + width, -half], [x0 + width, half], [x0, half]])
            cv2.fillPoly(img, [_fixed(_rotated(bar, angle, center))], color, cv2.LINE_AA, _SHIFT)
    noise = rng.normal(0.0, rng.uniform(4.0, 14.0), size=img.shape)
    return np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def generate_demo(dest: str | os.PathLike) -> None:
    """Write the demo dataset as ``dest/{train,val,test}/<class>/NNNN.jpg`` (``dest`` must not exist)."""
    dest = Path(dest)
    for split_index, (split, count) in enumerate(DEMO_SPLIT_SIZES.items()):
        for class_index, name in enumerate(DEMO_CLASSES):
            folder = dest / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                rng = np.random.default_rng([DEMO_VERSION, split_index, class_index, i])
                ok, buf = cv2.imencode(".jpg", render_demo_image(class_index, rng), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
                if not ok:
                    raise DatasetError(f"demo: OpenCV could not encode image {split}/{name}/{i:04d}.jpg")
                (folder / f"{i:04d}.jpg").write_bytes(buf.tobytes())


def ensure_demo(base: Optional[str | os.PathLike] = None) -> Path:
    """Return the demo dataset's folder, generating it first if it does not exist.

    The images are generated into a temporary folder beside the target and renamed
    into place, so a present folder is always complete, and concurrent callers
    (parallel trials) at worst both generate and one rename wins.
    """
    root = demo_root(base)
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    try:
        log.info("generating the demo dataset in %s", root)
        generate_demo(tmp / "data")
        try:
            os.rename(tmp / "data", root)
        except OSError:
            if not root.is_dir():  # lost a race only if someone else's copy is now in place
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
