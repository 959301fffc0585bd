"""Decoding, transforms, mixup and the threaded loader."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import kernels
from harness.data import (
    DataLoader, DataReport, EvalTransform, Sample, TrainTransform, load_dataset, mixup_batch, read_image_rgb,
)
from harness.data.transforms import random_resized_crop_box
from common.errors import ConfigError, ImageDecodeError
from harness.preprocess_spec import PreprocessSpec

# --- read_image_rgb -------------------------------------------------------------------------


def _bgr(h=12, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_read_color_png_is_rgb(tmp_path):
    bgr = _bgr()
    cv2.imwrite(str(tmp_path / "a.png"), bgr)
    rgb = read_image_rgb(tmp_path / "a.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (12, 16, 3)
    np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])


def test_read_gray_rgba_16bit_and_misnamed_png(tmp_path):
    gray = _bgr()[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "g.png"), np.repeat(gray[:, :, None], 3, axis=2))

    bgra = np.dstack([_bgr(seed=1), np.full((12, 16), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "a.png"), bgra[:, :, 2::-1])

    deep = (_bgr(seed=2).astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "d.png"), _bgr(seed=2)[:, :, ::-1])

    bgr = _bgr(seed=3)
    ok, buf = cv2.imencode(".png", bgr)
    (tmp_path / "really_png.jpg").write_bytes(buf.tobytes())
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "really_png.jpg"), bgr[:, :, ::-1])


def test_read_grayscale_jpeg(tmp_path):
    cv2.imwrite(str(tmp_path / "g.jpg"), np.full((10, 10), 90, np.uint8))
    img = read_image_rgb(tmp_path / "g.jpg")
    assert img.shape == (10, 10, 3) and abs(int(img.mean()) - 90) <= 2


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"hello, I am text\n", "not a decodable image"),
    ("truncated_jpeg", "truncated JPEG"),
    ("truncated_png", "not a decodable image"),
])
def test_read_bad_files_raise_with_path(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content == "truncated_jpeg":
        ok, buf = cv2.imencode(".jpg", _bgr(64, 64))
        content = buf.tobytes()[: len(buf) // 2]
    elif content == "truncated_png":
        ok, buf = cv2.imencode(".png", _bgr(64, 64))
        content = buf.tobytes()[: len(buf) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason) as info:
        read_image_rgb(path)
    assert str(path) in str(info.value)


def test_read_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="nope.jpg: cannot read file"):
        read_image_rgb(tmp_path / "nope.jpg")


# --- transforms -----------------------------------------------------------------------------


def test_train_transform_shape_determinism_and_flip():
    spec = PreprocessSpec.for_crop(32)
    t = TrainTransform(spec)
    img = _bgr(40, 60)
    a = t(img, np.random.default_rng([1, 2]))
    b = t(img, np.random.default_rng([1, 2]))
    assert a.shape == (3, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, t(img, np.random.default_rng([1, 3])))
    # With the full image always cropped, outputs are the resize or its mirror image.
    full = TrainTransform(PreprocessSpec.for_crop(32, train_scale=(1.0, 1.0), train_ratio=(1.0, 1.0)))
    square = _bgr(32, 32, seed=4)
    expected = ((square.astype(np.float32) / 255 - np.float32(spec.mean)) / np.float32(spec.std)).transpose(2, 0, 1)
    outs = [full(square, np.random.default_rng(i)) for i in range(8)]
    flips = [np.allclose(o, expected[:, :, ::-1], atol=1e-5) for o in outs]
    assert all(np.allclose(o, expected, atol=1e-5) or f for o, f in zip(outs, flips))
    assert 0 < sum(flips) < 8


def test_random_resized_crop_box_stays_inside():
    rng = np.random.default_rng(0)
    for h, w in ((10, 200), (200, 10), (50, 50), (1, 1)):
        for _ in range(200):
            top, left, ch, cw = random_resized_crop_box(h, w, (0.08, 1.0), (3 / 4, 4 / 3), rng)
            assert 0 <= top and 0 <= left and 0 < ch and 0 < cw and top + ch <= h and left + cw <= w


def test_eval_transform_is_the_deploy_path():
    spec = PreprocessSpec.for_crop(32)
    t = EvalTransform(spec)
    imgs = [_bgr(40, 50, seed=i) for i in range(3)]
    expected = kernels.preprocess(imgs, resize_short=spec.resize_short, crop_size=32, mean=spec.mean, std=spec.std)
    np.testing.assert_array_equal(t.batch(imgs), expected)
    np.testing.assert_array_equal(t(imgs[1]), expected[1])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        t(np.zeros((4, 4), np.uint8))


def test_mixup_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3, 4, 4)).astype(np.float32)
    y = np.arange(8, dtype=np.int64)
    mixed, ya, yb, lam = mixup_batch(x, y, 0.4, np.random.default_rng(7))
    assert 0 <= lam <= 1 and mixed.dtype == np.float32
    np.testing.assert_array_equal(ya, y)
    np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[yb], rtol=1e-5, atol=1e-6)
    assert sorted(yb.tolist()) == y.tolist()
    with pytest.raises(ConfigError, match="alpha"):
        mixup_batch(x, y, 0.0, rng)


# --- loader ---------------------------------------------------------------------------------


@pytest.fixture
def small_samples(image_folder_dataset) -> list[Sample]:
    ds = load_dataset("folder", image_folder_dataset({"train": 8, "test": 2}))
    return list(ds.train)


def _collect(loader):
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(y)
    return xs, ys


def test_loader_deterministic_across_worker_counts(small_samples):
    spec = PreprocessSpec.for_crop(16)
    runs = []
    for workers in (1, 2, 3):
        loader = DataLoader(small_samples, TrainTransform(spec), batch_size=5, shuffle=True, seed=3, workers=workers)
        loader.set_epoch(2)
        runs.append(_collect(loader))
    for xs, ys in runs[1:]:
        assert len(xs) == len(runs[0][0]) == len(DataLoader(small_samples, TrainTransform(spec), batch_size=5, shuffle=True))
        for a, b in zip(xs, runs[0][0]):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(ys, runs[0][1]):
            np.testing.assert_array_equal(a, b)
    x0, y0 = runs[0][0][0], runs[0][1][0]
    assert x0.shape == (5, 3, 16, 16) and x0.dtype == np.float32 and y0.dtype == np.int64
    assert sorted(np.concatenate(runs[0][1]).tolist()) == sorted(s.label for s in small_samples)


def test_loader_epochs_reshuffle_and_drop_last(small_samples):
    loader = DataLoader(small_samples, TrainTransform(PreprocessSpec.for_crop(8)), batch_size=4, shuffle=True, drop_last=True)
    assert len(loader) == len(small_samples) // 4
    order0 = loader.epoch_order()
    loader.set_epoch(1)
    assert not np.array_equal(order0, loader.epoch_order())
    assert sorted(order0.tolist()) == sorted(loader.epoch_order().tolist())
    xs, _ = _collect(loader)
    assert len(xs) == len(loader) and all(len(x) == 4 for x in xs)
    plain = DataLoader(small_samples, EvalTransform(PreprocessSpec.for_crop(8)), batch_size=4, shuffle=False)
    np.testing.assert_array_equal(np.concatenate(_collect(plain)[1]), [s.label for s in small_samples])


def _with_bad_files(samples: list[Sample], tmp_path: Path) -> tuple[list[Sample], list[str]]:
    bad = []
    for name, content in (("text.jpg", b"not an image"), ("trunc.jpg", None)):
        p = tmp_path / name
        if content is None:
            ok, buf = cv2.imencode(".jpg", _bgr(64, 64))
            content = buf.tobytes()[:300]
        p.write_bytes(content)
        bad.append(str(p))
    return samples[:3] + [Sample(bad[0], 0)] + samples[3:6] + [Sample(bad[1], 1)], bad


def test_loader_skips_and_reports_unreadable_images(small_samples, tmp_path, caplog):
    samples, bad = _with_bad_files(small_samples, tmp_path)
    report = DataReport()
    loader = DataLoader(samples, TrainTransform(PreprocessSpec.for_crop(8)), batch_size=4, shuffle=False, report=report)
    for _ in range(2):  # a second epoch must not duplicate the report entries or the warnings
        xs, ys = _collect(loader)
        assert sum(len(y) for y in ys) == len(samples) - 2
    assert sorted(p for p, _, _ in report.skipped) == sorted(bad)
    assert {p: r for p, r, _ in report.skipped}[bad[1]].startswith("truncated JPEG")
    assert sum("skipping unreadable image" in r.getMessage() for r in caplog.records) == 2


def test_loader_all_bad_batch_is_skipped(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"junk")
    loader = DataLoader([Sample(str(p), 0)] * 3, EvalTransform(PreprocessSpec.for_crop(8)), batch_size=2, shuffle=False)
    assert _collect(loader) == ([], [])
    assert loader.report.skipped == [(str(p), "not a decodable image (OpenCV could not read 4 bytes)", "")]


def test_loader_strict_raises_naming_the_file(small_samples, tmp_path):
    samples, bad = _with_bad_files(small_samples, tmp_path)
    loader = DataLoader(samples, TrainTransform(PreprocessSpec.for_crop(8)), batch_size=4, shuffle=False, strict=True)
    with pytest.raises(ImageDecodeError, match="text.jpg"):
        _collect(loader)


def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tlbench-loader")]


def test_worker_exception_surfaces_in_consumer(small_samples):
    calls = []

    def broken(img, rng):
        calls.append(1)
        if len(calls) > 6:
            raise RuntimeError("transform exploded")
        return np.zeros((3, 4, 4), np.float32)

    loader = DataLoader(small_samples, broken, batch_size=3, shuffle=False, workers=2)
    with pytest.raises(RuntimeError, match="transform exploded"):
        _collect(loader)
    assert not _loader_threads()


def test_abandoned_iteration_stops_workers(small_samples):
    def slow(img, rng):
        time.sleep(0.01)
        return np.zeros((3, 4, 4), np.float32)

    loader = DataLoader(small_samples * 4, slow, batch_size=2, shuffle=True, workers=2)
    it = iter(loader)
    next(it)
    assert _loader_threads()
    del it
    gc.collect()
    assert not _loader_threads()
    for _ in zip(range(2), loader):  # break out of a for loop the usual way
        pass
    gc.collect()
    assert not _loader_threads()


def test_loader_argument_validation(small_samples):
    t = TrainTransform(PreprocessSpec.for_crop(8))
    with pytest.raises(ConfigError, match="batch_size"):
        DataLoader(small_samples, t, batch_size=0, shuffle=False)
    with pytest.raises(ConfigError, match="workers"):
        DataLoader(small_samples, t, batch_size=2, shuffle=False, workers=0)
    with pytest.raises(ConfigError, match="transform must be callable"):
        DataLoader(small_samples, None, batch_size=2, shuffle=False)
