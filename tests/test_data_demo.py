"""The built-in demo dataset: deterministic, atomic, versioned, and loadable by name."""

from __future__ import annotations

import collections
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from harness.data import DEMO_CLASSES, load_dataset, read_image_rgb
from harness.data.demo import DEMO_IMAGE_SIZE, DEMO_SPLIT_SIZES, DEMO_VERSION, ensure_demo, generate_demo


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_two_generations_are_byte_identical(tmp_path):
    generate_demo(tmp_path / "a")
    generate_demo(tmp_path / "b")
    a, b = _digest_tree(tmp_path / "a"), _digest_tree(tmp_path / "b")
    assert a == b
    assert len(a) == len(DEMO_CLASSES) * sum(DEMO_SPLIT_SIZES.values())
    assert len(set(a.values())) == len(a)  # no two images alike


def test_load_demo_by_name(tlbench_cache):
    ds = load_dataset("demo")
    root = tlbench_cache / "datasets" / f"demo-v{DEMO_VERSION}"
    assert root.is_dir() and ds.train[0].path.startswith(str(root))
    assert ds.classes == tuple(sorted(DEMO_CLASSES)) and len(ds.classes) == 6
    per_class = {split: collections.Counter(s.label for s in getattr(ds, split)) for split in ("train", "val", "test")}
    assert per_class["train"] == {i: DEMO_SPLIT_SIZES["train"] for i in range(6)}
    assert per_class["val"] == {i: DEMO_SPLIT_SIZES["val"] for i in range(6)}
    assert per_class["test"] == {i: DEMO_SPLIT_SIZES["test"] for i in range(6)}
    assert not ds.report.val_carved and ds.report.skipped == []
    img = read_image_rgb(ds.test[0].path)
    assert img.shape == (DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE, 3) and img.dtype == np.uint8
    # Generated once: a second load reuses the folder (no temp folders left behind).
    mtime = root.stat().st_mtime_ns
    load_dataset("demo")
    assert root.stat().st_mtime_ns == mtime
    assert os.listdir(root.parent) == [root.name]


def test_demo_is_not_trivially_separable_by_colour(tlbench_cache):
    """The mean colour of an image must not give away its class (objects have random colours)."""
    ds = load_dataset("demo")
    means = collections.defaultdict(list)
    for s in ds.train:
        means[s.label].append(read_image_rgb(s.path).reshape(-1, 3).mean(axis=0))
    centroids = np.array([np.mean(v, axis=0) for _, v in sorted(means.items())])
    spread = np.mean([np.std(v, axis=0).mean() for v in means.values()])
    assert np.ptp(centroids, axis=0).max() < spread  # class centroids sit well inside the per-class spread


def test_failed_generation_leaves_no_folder(tmp_path, monkeypatch):
    import harness.data.demo as demo

    def boom(dest):
        Path(dest, "train").mkdir(parents=True)
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "generate_demo", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_demo(tmp_path)
    assert os.listdir(tmp_path) == []
