"""The decoded-image cache: keyed on content, bounded in bytes, read-only, errors name the file."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import ConfigError, ImageDecodeError
from harness.data import read_image_rgb
from harness.data.image_cache import DecodedImageCache, configured_cache_bytes, shared_cache


def test_hits_return_the_decoded_pixels(write_image, tmp_path):
    path = write_image(tmp_path / "a.png", size=(10, 12), seed=1)
    cache = DecodedImageCache(1 << 20)
    first = cache.read(path)
    second = cache.read(path)
    assert second is first and (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first, read_image_rgb(path))
    with pytest.raises(ValueError):
        first[0, 0, 0] = 1  # read-only: a transform writing in place would corrupt later trials


def test_keyed_on_content_not_path(write_image, tmp_path):
    a = write_image(tmp_path / "a.png", seed=1)
    copy = tmp_path / "copy.png"
    copy.write_bytes(a.read_bytes())
    cache = DecodedImageCache(1 << 20)
    assert cache.read(copy) is cache.read(a)
    write_image(a, seed=2)  # the file changes on disk: decoded again
    changed = cache.read(a)
    np.testing.assert_array_equal(changed, read_image_rgb(a))
    assert cache.misses == 2 and len(cache) == 2


def test_bounded_in_bytes_least_recent_first(write_image, tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", size=(10, 10), seed=i) for i in range(4)]
    cache = DecodedImageCache(2 * 10 * 10 * 3)  # room for two images
    for p in paths[:3]:
        cache.read(p)
    assert len(cache) == 2 and cache.nbytes == 600
    cache.read(paths[2])
    assert cache.hits == 1
    cache.read(paths[0])  # evicted earlier: decoded again
    assert cache.misses == 4
    assert DecodedImageCache(0).read(paths[0]).shape == (10, 10, 3)  # a zero bound stores nothing


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    cache = DecodedImageCache(1 << 20)
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        cache.read(bad)
    with pytest.raises(ImageDecodeError, match="missing.jpg"):
        cache.read(tmp_path / "missing.jpg")
    with pytest.raises(ConfigError, match="max_bytes"):
        DecodedImageCache(-1)


def test_environment_sets_the_bound(monkeypatch):
    monkeypatch.setenv("TLBENCH_DECODE_CACHE_MB", "2")
    assert configured_cache_bytes() == 2 << 20
    assert shared_cache().max_bytes == 2 << 20
    monkeypatch.setenv("TLBENCH_DECODE_CACHE_MB", "0")
    assert shared_cache() is None
    monkeypatch.setenv("TLBENCH_DECODE_CACHE_MB", "lots")
    with pytest.raises(ConfigError, match="TLBENCH_DECODE_CACHE_MB"):
        configured_cache_bytes()
    monkeypatch.setenv("TLBENCH_DECODE_CACHE_MB", "64")
    monkeypatch.setenv("TLBENCH_FAST_TRIALS", "0")
    assert shared_cache() is None


def test_loader_reads_through_the_cache(image_folder_dataset):
    from harness.data import DataLoader, load_dataset
    from harness.data.transforms import EvalTransform
    from harness.preprocess_spec import PreprocessSpec

    splits = load_dataset("folder", image_folder_dataset({"train": 4, "test": 2}))
    cache = DecodedImageCache(1 << 24)
    spec = PreprocessSpec(crop_size=16, resize_short=18)
    loader = DataLoader(splits.test, EvalTransform(spec), batch_size=4, shuffle=False, cache=cache)
    plain = DataLoader(splits.test, EvalTransform(spec), batch_size=4, shuffle=False)
    first = [b for b, _ in loader]
    second = [b for b, _ in loader]
    reference = [b for b, _ in plain]
    for a, b, c in zip(first, second, reference):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    assert cache.misses == len(splits.test) and cache.hits == len(splits.test)
