"""Fused CPU preprocessing kernel vs the numpy/OpenCV reference, and the Python entry point.

The kernel's arithmetic is defined by ``kernels.reference.resize_linear_numpy`` (OpenCV's 8-bit
INTER_LINEAR, transcribed): against it the kernel must be bit-exact. Against ``cv2.resize`` itself
the documented tolerance is one uint8 level (``1 / 255 / min(std)`` after normalization); the
OpenCV wheel pinned here is matched exactly, which ``test_numpy_resize_matches_cv2`` watches.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import kernels
import kernels.fused as fused
import kernels.reference as reference
from kernels import preprocess, preprocess_reference

cv2 = pytest.importorskip("cv2")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
ONE_LEVEL = 1.0 / 255.0 / min(STD) + 1e-6  # one uint8 step in normalized units


@pytest.fixture
def native(monkeypatch, missing_native):
    """The compiled module, with the environment not forcing the reference."""
    monkeypatch.delenv(fused.ENV_VAR, raising=False)
    try:
        from kernels import _C
    except ImportError as exc:
        missing_native(f"kernels._C is not built (pip install -e . with a C++ compiler): {exc}")
    return _C


def test_missing_native_code_fails_only_when_required(monkeypatch, missing_native):
    monkeypatch.setenv("TLBENCH_REQUIRE_NATIVE", "1")
    with pytest.raises(pytest.fail.Exception, match="TLBENCH_REQUIRE_NATIVE is set"):
        missing_native("kernels._C is not built")
    for value in ("", "0", "false"):
        monkeypatch.setenv("TLBENCH_REQUIRE_NATIVE", value)
        with pytest.raises(pytest.skip.Exception):
            missing_native("kernels._C is not built")


@pytest.fixture
def numpy_resize(monkeypatch):
    """Make the reference resize with the numpy transcription of OpenCV instead of cv2."""
    monkeypatch.setattr(reference, "cv2", None)


def _image(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth_image(rng, h, w):
    """Natural-looking content (gradients + blobs) so that errors are not hidden by noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 127 + 60 * np.sin(x / max(w, 1) * 7 + rng.uniform(0, 3)) * np.cos(y / max(h, 1) * 5)
    img = np.stack([base, base[::-1] if h > 1 else base, 255 - base], axis=2)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _run_both(images, resize_short, crop_size, dtype="float32", **kw):
    fast = preprocess(images, resize_short=resize_short, crop_size=crop_size, mean=MEAN, std=STD, dtype=dtype, **kw)
    ref = preprocess_reference(images, resize_short=resize_short, crop_size=crop_size, mean=MEAN, std=STD, dtype=dtype)
    return fast, ref


ODD_SIZES = [(1, 1), (3000, 20), (20, 3000), (17, 5), (5, 17), (2, 3), (224, 224), (375, 500), (512, 768), (1500, 2000)]


def test_numpy_resize_matches_cv2():
    rng = np.random.default_rng(0)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 400, 2))
        new_w, new_h = (int(v) for v in rng.integers(1, 500, 2))
        img = _image(rng, h, w)
        expected = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        got = reference.resize_linear_numpy(img, new_w, new_h)
        diff = np.abs(got.astype(int) - expected.astype(int)).max()
        assert diff <= 1, (h, w, new_w, new_h)
        assert np.array_equal(got, expected), f"OpenCV's INTER_LINEAR changed: {h}x{w} -> {new_h}x{new_w}"


@pytest.mark.parametrize("simd", [True, False], ids=["simd", "portable"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_bit_exact_at_odd_sizes(native, numpy_resize, simd, dtype):
    rng = np.random.default_rng(1)
    images = [_smooth_image(rng, h, w) for h, w in ODD_SIZES]
    ref = preprocess_reference(images, resize_short=256, crop_size=224, mean=MEAN, std=STD, dtype=dtype)
    out = np.empty_like(ref)
    native.preprocess(images, out, 256, 224, fused._three_floats("m", MEAN), fused._three_floats("s", STD),
                      float(np.float32(1 / 255)), 2, simd)
    for i, (h, w) in enumerate(ODD_SIZES):
        assert np.array_equal(out[i].view(np.uint16 if dtype == "float16" else np.uint32),
                              ref[i].view(np.uint16 if dtype == "float16" else np.uint32)), (h, w)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_within_one_level_of_cv2_reference(native, dtype):
    rng = np.random.default_rng(2)
    images = [_image(rng, h, w) for h, w in ODD_SIZES]
    fast, ref = _run_both(images, 256, 224, dtype=dtype)
    assert fast.dtype == np.dtype(dtype)
    tol = ONE_LEVEL if dtype == "float32" else ONE_LEVEL + 0.01  # half precision of values up to ~2.6
    assert np.max(np.abs(fast.astype(np.float32) - ref.astype(np.float32))) <= tol


def test_random_shapes_and_parameters(native, numpy_resize):
    rng = np.random.default_rng(3)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        crop = int(rng.integers(1, 80))
        resize_short = crop + int(rng.integers(0, 60))
        mean = tuple(rng.uniform(0, 1, 3))
        std = tuple(rng.uniform(0.1, 1, 3))
        scale = float(rng.choice([1 / 255, 1.0, 0.5]))
        img = _image(rng, h, w)
        kw = dict(resize_short=resize_short, crop_size=crop, mean=mean, std=std, scale=scale)
        assert np.array_equal(preprocess([img], **kw), preprocess_reference([img], **kw)), (h, w, kw)


def test_mixed_sizes_in_one_batch_and_threads(native, numpy_resize):
    rng = np.random.default_rng(4)
    sizes = [(224, 224), (17, 5), (600, 400), (1, 1), (300, 1000), (99, 98), (1200, 900)]
    images = [_smooth_image(rng, h, w) for h, w in sizes]
    ref = preprocess_reference(images, resize_short=72, crop_size=64, mean=MEAN, std=STD)
    for threads in (1, 2, 5, None):
        got = preprocess(images, resize_short=72, crop_size=64, mean=MEAN, std=STD, threads=threads)
        assert np.array_equal(got, ref), threads


def test_non_contiguous_and_stacked_input(native):
    rng = np.random.default_rng(5)
    big = _smooth_image(rng, 300, 400)
    views = [big[::2, ::3], big[10:200, 50:330], np.transpose(big, (1, 0, 2)), big[:, ::-1]]
    assert not any(v.flags.c_contiguous for v in views)
    fast, ref = _run_both(views, 64, 56)
    assert np.max(np.abs(fast - ref)) <= ONE_LEVEL
    stacked = np.stack([big, big[::-1]])
    fast, ref = _run_both(stacked, 64, 56)
    assert np.max(np.abs(fast - ref)) <= ONE_LEVEL


def test_out_buffer_is_written_in_place(native):
    rng = np.random.default_rng(6)
    images = [_image(rng, 40, 50), _image(rng, 33, 20)]
    for dtype in (np.float32, np.float16):
        out = np.full((2, 3, 24, 24), np.nan, dtype=dtype)
        result = preprocess(images, resize_short=32, crop_size=24, mean=MEAN, std=STD, dtype=dtype, out=out)
        assert result is out
        assert np.isfinite(out.astype(np.float32)).all()
        ref = preprocess_reference(images, resize_short=32, crop_size=24, mean=MEAN, std=STD, dtype=dtype)
        assert np.max(np.abs(out.astype(np.float32) - ref.astype(np.float32))) <= ONE_LEVEL + 0.01


@pytest.mark.parametrize(
    "out, match",
    [
        (np.empty((2, 3, 24, 25), np.float32), "shape"),
        (np.empty((2, 3, 24, 24), np.float16), "float32"),
        (np.empty((2, 3, 24, 48), np.float32)[..., ::2], "C-contiguous"),
        ([[0.0]], "numpy array"),
    ],
)
def test_bad_out_buffer(out, match):
    images = [np.zeros((30, 30, 3), np.uint8)] * 2
    with pytest.raises(ValueError, match=match):
        preprocess(images, resize_short=32, crop_size=24, mean=MEAN, std=STD, out=out)


@pytest.mark.parametrize(
    "images, match",
    [
        ([np.zeros((8, 8, 3), np.float32)], r"images\[0\] must have dtype uint8"),
        ([np.zeros((8, 8), np.uint8)], r"images\[0\] must be HxWx3 \(RGB\), got shape \(8, 8\)"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 4), np.uint8)], r"images\[1\] must be HxWx3"),
        ([np.zeros((0, 8, 3), np.uint8)], r"images\[0\] is empty"),
        ([[1, 2, 3]], r"images\[0\] must be a numpy array"),
        (np.zeros((8, 8, 3), np.uint8), "NxHxWx3"),
        ("not images", "list of HxWx3"),
    ],
)
def test_bad_images_raise_value_error(images, match):
    with pytest.raises(ValueError, match=match):
        preprocess(images, resize_short=8, crop_size=8, mean=MEAN, std=STD)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(resize_short=8, crop_size=9), r"crop_size \(9\) must not exceed resize_short \(8\)"),
        (dict(resize_short=0, crop_size=1), "resize_short must be a positive integer"),
        (dict(resize_short=8, crop_size=2.5), "crop_size must be a positive integer"),
        (dict(resize_short=8, crop_size=8, std=(1, 0, 1)), "std values must be > 0"),
        (dict(resize_short=8, crop_size=8, mean=(1, 2)), "mean must be 3 finite numbers"),
        (dict(resize_short=8, crop_size=8, dtype="int8"), "dtype must be 'float32' or 'float16'"),
        (dict(resize_short=8, crop_size=8, threads=0), "threads must be a positive integer"),
    ],
)
def test_bad_parameters(kwargs, match):
    args = dict(mean=MEAN, std=STD)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        preprocess([np.zeros((8, 8, 3), np.uint8)], **args)


def test_reference_raises_when_crop_does_not_fit():
    with pytest.raises(ValueError, match="smaller than"):
        preprocess_reference([np.zeros((10, 10, 3), np.uint8)], resize_short=8, crop_size=9, mean=MEAN, std=STD)


def test_empty_batch():
    out = preprocess([], resize_short=8, crop_size=8, mean=MEAN, std=STD)
    assert out.shape == (0, 3, 8, 8)


def test_backend_and_env_var_forces_reference(native, monkeypatch):
    assert kernels.backend() == "cpu-native"
    calls = []
    monkeypatch.setattr(native, "preprocess", lambda *a, **k: calls.append(a))
    images = [np.full((9, 7, 3), 200, np.uint8)]
    preprocess(images, resize_short=8, crop_size=8, mean=MEAN, std=STD)
    assert len(calls) == 1  # the native module is what runs by default
    monkeypatch.setenv(fused.ENV_VAR, "reference")
    assert kernels.backend() == "reference"
    got = preprocess(images, resize_short=8, crop_size=8, mean=MEAN, std=STD)
    assert len(calls) == 1
    assert np.array_equal(got, preprocess_reference(images, resize_short=8, crop_size=8, mean=MEAN, std=STD))
    monkeypatch.setenv(fused.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="TLBENCH_KERNELS"):
        kernels.backend()


def test_import_error_falls_back_to_reference(monkeypatch):
    monkeypatch.delenv(fused.ENV_VAR, raising=False)
    monkeypatch.setitem(sys.modules, "kernels._C", None)  # makes `from . import _C` raise ImportError
    monkeypatch.delattr(kernels, "_C", raising=False)
    monkeypatch.setattr(fused, "_native_loaded", False)
    monkeypatch.setattr(fused, "_native", None)
    assert kernels.backend() == "reference"
    images = [np.full((12, 9, 3), 77, np.uint8)]
    got = preprocess(images, resize_short=8, crop_size=8, mean=MEAN, std=STD)
    assert np.array_equal(got, preprocess_reference(images, resize_short=8, crop_size=8, mean=MEAN, std=STD))
    monkeypatch.setattr(fused, "_native_loaded", False)  # let later tests load the real module


def test_float_to_half_matches_numpy(native):
    rng = np.random.default_rng(7)
    specials = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, 6.1e-5, 5.96e-8, 2.98e-8,
                         2.99e-8, 1e-10, np.inf, -np.inf], np.float32)
    ties = (np.arange(1, 2049, dtype=np.float32) + np.float32(0.5)) * np.float32(2.0 ** -10)  # halfway cases
    values = np.concatenate([specials, ties, rng.normal(0, 3, 20000).astype(np.float32),
                             (rng.normal(0, 1, 5000) * 1e-6).astype(np.float32)])
    got = native.float_to_half_bits(values)
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16).view(np.uint16)
    assert np.array_equal(got, expected)
    assert (native.float_to_half_bits(np.array([np.nan], np.float32))[0] & 0x7C00) == 0x7C00


def test_numpy_resize_window_is_a_slice():
    rng = np.random.default_rng(8)
    img = _image(rng, 37, 51)
    full = reference.resize_linear_numpy(img, 90, 65)
    assert np.array_equal(reference.resize_linear_numpy(img, 90, 65, window=(7, 11, 40, 50)), full[7:47, 11:61])


def test_geometry_helper_matches_reference_crop():
    for h, w in ODD_SIZES:
        new_h, new_w, top, left = reference.resize_crop_geometry(h, w, 256, 224)
        resized = reference.resize_short_side(np.zeros((h, w, 3), np.uint8), 256)
        assert resized.shape[:2] == (new_h, new_w)
        assert min(new_h, new_w) == 256 and top >= 0 and left >= 0


@pytest.mark.parametrize("use_cv2", [True, False], ids=["cv2", "numpy"])
def test_reference_refuses_extreme_aspect_ratios_with_value_error(monkeypatch, use_cv2):
    if not use_cv2:
        monkeypatch.setattr(reference, "cv2", None)
    # 1x200000 resized to short side 256 would be 256x51200000 (39 GB): refused before any allocation.
    strip = np.zeros((1, 200_000, 3), np.uint8)
    with pytest.raises(ValueError, match=r"1x200000 .*256x51200000"):
        preprocess_reference([strip], resize_short=256, crop_size=224, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"200000x1 "):
        preprocess_reference([strip.transpose(1, 0, 2)], resize_short=256, crop_size=224, mean=MEAN, std=STD)
    # Up to the limit the reference still resizes first, as PaddleClas does.
    wide = np.full((1, reference.MAX_RESIZED_SIDE // 32, 3), 100, np.uint8)
    out = preprocess_reference([wide], resize_short=32, crop_size=32, mean=MEAN, std=STD)
    assert out.shape == (1, 3, 32, 32) and np.isfinite(out).all()


def test_decode_jpeg_applies_exif_orientation_and_the_training_decoder_does_not():
    import struct

    from harness.data import decode_image_rgb
    from kernels.decode import decode_jpeg, exif_orientation

    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10] = 255
    ok, encoded = cv2.imencode(".jpg", img)
    # An APP1 Exif segment (big-endian TIFF, one IFD entry) with orientation 6 (rotate 90° clockwise).
    tiff = (b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHI", 0x0112, 3, 1)
            + struct.pack(">HH", 6, 0) + struct.pack(">I", 0))
    app1 = b"Exif\x00\x00" + tiff
    data = encoded.tobytes()[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + encoded.tobytes()[2:]
    assert exif_orientation(data) == 6
    rotated = decode_jpeg(data)
    assert rotated.shape == (40, 20, 3) and rotated[:10].mean() > 200 and rotated[-10:].mean() < 50
    as_trained = decode_image_rgb(data)
    assert as_trained.shape == (20, 40, 3) and as_trained[:, :10].mean() > 200
    assert "does NOT" in kernels.decode.__doc__ and "IMREAD_UNCHANGED" in kernels.decode.__doc__
