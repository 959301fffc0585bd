"""Shared pytest fixtures: tiny image writers and image-folder datasets in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NoReturn

import cv2
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWERS12 = (REPO_ROOT / ".." / "shared" / "datasets" / "flowers12").resolve()

#: Set to 1 (CI does) so that native code that is missing or does not build fails the tests that
#: need it instead of skipping them; pyproject.toml reads it too (no pure-Python fallback wheel).
REQUIRE_NATIVE_ENV = "TLBENCH_REQUIRE_NATIVE"


def native_required() -> bool:
    """Whether ``TLBENCH_REQUIRE_NATIVE`` is true, read the way scikit-build-core reads it."""
    value = os.environ.get(REQUIRE_NATIVE_ENV, "").strip().lower()
    if value.isdigit():
        return int(value) != 0
    return bool(value) and value not in ("n", "no", "off", "false", "f")


@pytest.fixture(scope="session")
def missing_native() -> Callable[[str], NoReturn]:
    """``missing_native(reason)``: skip the test, or fail it when ``TLBENCH_REQUIRE_NATIVE`` is set."""

    def missing(reason: str) -> NoReturn:
        __tracebackhide__ = True  # report the test's line, not this one
        if native_required():
            pytest.fail(f"{reason} ({REQUIRE_NATIVE_ENV} is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(reason)

    return missing


def _write_image(path: Path, *, size: tuple[int, int] = (20, 24), seed: int = 0, ext: str | None = None) -> Path:
    """Write a random BGR image to ``path`` (format from ``ext`` or the suffix) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext or path.suffix or ".jpg", img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path, size=(h, w), seed=0, ext=None)``: write a small random image file."""
    return _write_image


@pytest.fixture
def image_folder_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make(splits={"train": 10, "test": 4}, classes=("a", "b", "c"))`` → root of
    ``root/<split>/<class>/NNN.jpg`` with that many small images per class."""

    def make(splits: dict[str, int] | None = None, classes: tuple[str, ...] = ("a", "b", "c"), name: str = "imgs") -> Path:
        splits = splits or {"train": 10, "test": 4}
        root = tmp_path / name
        for s_i, (split, count) in enumerate(splits.items()):
            for c_i, cls in enumerate(classes):
                for i in range(count):
                    _write_image(root / split / cls / f"{i:03d}.jpg", seed=s_i * 10_000 + c_i * 100 + i)
        return root

    return make


@pytest.fixture
def flowers12_root() -> Path:
    """The shared flowers12 image folders (``../shared/datasets/flowers12``); skips when absent."""
    if not (FLOWERS12 / "train").is_dir():
        pytest.skip(f"flowers12 not found at {FLOWERS12} (expected ../shared/datasets/flowers12 beside the repo)")
    return FLOWERS12


@pytest.fixture
def tlbench_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``TLBENCH_CACHE`` for the test, so nothing touches the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TLBENCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def flowers12_splits():
    """flowers12 loaded once per session as a ``folder`` dataset; skips when absent."""
    if not (FLOWERS12 / "train").is_dir():
        pytest.skip(f"flowers12 not found at {FLOWERS12} (expected ../shared/datasets/flowers12 beside the repo)")
    from harness.data import load_dataset

    return load_dataset("folder", FLOWERS12)


@pytest.fixture(scope="session")
def tiny_flowers_run(flowers12_splits, tmp_path_factory):
    """ResNet_tiny fine-tuned briefly on flowers12 at 32 px (a TrainResult), shared by the test modules."""
    pytest.importorskip("paddle")
    from harness.config import TrainConfig
    from harness.train import fine_tune

    cfg = TrainConfig(model="ResNet_tiny", dataset="folder", data_root=str(FLOWERS12), image_size=32,
                      epochs=3, batch_size=32, max_steps_per_epoch=8, lr=0.1, workers=2, seed=0,
                      out_dir=str(tmp_path_factory.mktemp("runs")), run_name="tiny_flowers")
    return fine_tune(cfg, splits=flowers12_splits)
