"""JPEG decode helper (simplejpeg fast path vs OpenCV) and the top-1 agreement check."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from kernels import decode, parity, preprocess_reference

cv2 = pytest.importorskip("cv2")

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flowers12"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _jpeg(h, w, seed=0, quality=90):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), (x + y) % 256], axis=2)
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _cv2_rgb(data):
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _with_exif_orientation(data: bytes, orientation: int) -> bytes:
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    payload = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_full_decode_identical_to_opencv():
    blobs = [_jpeg(37, 53, seed=1), _jpeg(224, 224, seed=2)]
    if FLOWERS.is_dir():
        blobs += [p.read_bytes() for p in sorted(FLOWERS.glob("test/*/*.jpg"))[:6]]
    for blob in blobs:
        assert np.array_equal(decode.decode_jpeg(blob), _cv2_rgb(blob))


def test_dct_downscale_only_when_twice_as_large():
    big = _jpeg(1000, 1200, seed=3)
    small = decode.decode_jpeg(big, min_side=256)
    if decode.simplejpeg is None:  # OpenCV fallback: always full size
        assert small.shape[:2] == (1000, 1200)
        return
    assert small.shape[:2] == (375, 450)  # libjpeg-turbo 3/8 is the smallest scale keeping >= 256
    assert decode.decode_jpeg(big, min_side=501).shape[:2] == (1000, 1200)  # less than 2x: full decode
    assert decode.decode_jpeg(big, min_side=None).shape[:2] == (1000, 1200)
    # The downscaled decode is close to full decode + the reference resize, not equal to it.
    kw = dict(resize_short=256, crop_size=224, mean=MEAN, std=STD)
    a = preprocess_reference([small], **kw)
    b = preprocess_reference([_cv2_rgb(big)], **kw)
    assert 0 < np.mean(np.abs(a - b)) < 0.2


def test_exif_orientation_is_applied_like_imread():
    blob = _with_exif_orientation(_jpeg(30, 50, seed=4), 6)
    assert decode.exif_orientation(blob) == 6
    assert decode.exif_orientation(_jpeg(8, 8)) == 1
    got = decode.decode_jpeg(blob)
    assert got.shape[:2] == (50, 30)
    assert np.array_equal(got, _cv2_rgb(blob))


def test_png_gray_and_errors():
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6)
    png = cv2.imencode(".png", gray)[1].tobytes()
    assert np.array_equal(decode.decode_jpeg(png), np.repeat(gray[:, :, None], 3, axis=2))
    with pytest.raises(ValueError, match="could not decode"):
        decode.decode_jpeg(b"not an image at all")
    with pytest.raises(ValueError, match="min_side"):
        decode.decode_jpeg(png, min_side=0)


def test_to_rgb_uint8():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 2], rgba[..., 3] = 10, 30, 255
    assert decode.to_rgb_uint8(rgba)[0, 0].tolist() == [10, 0, 30]
    assert decode.to_rgb_uint8(rgba, bgr=True)[0, 0].tolist() == [30, 0, 10]
    assert decode.to_rgb_uint8(np.full((2, 2), 4096, np.uint16))[0, 0].tolist() == [16, 16, 16]
    with pytest.raises(ValueError, match="uint8 or uint16"):
        decode.to_rgb_uint8(np.zeros((2, 2, 3), np.float32))


def test_top1_agreement_report(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(_jpeg(60 + 7 * i, 80, seed=10 + i))
        paths.append(p)
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3 * 8 * 8, 4)).astype(np.float32)

    def predict(batch):
        pooled = batch.reshape(len(batch), 3, 8, 4, 8, 4).mean(axis=(3, 5)).reshape(len(batch), -1)
        return pooled @ weights

    report = parity.top1_agreement(predict, paths, resize_short=36, crop_size=32, mean=MEAN, std=STD, batch_size=2)
    assert report.images == 5 and report.agreement == 1.0 and not report.disagreements
    assert report.max_abs_input_diff <= 1 / 255 / min(STD) + 1e-6

    def unstable(batch):  # argmax decided by the tiniest input change: any difference shows up
        return np.stack([batch.reshape(len(batch), -1).sum(1) % 1e-3, np.full(len(batch), 5e-4)], axis=1)

    shifted = parity.top1_agreement(unstable, [p.read_bytes() for p in paths], resize_short=36, crop_size=32,
                                    mean=MEAN, std=STD)
    assert shifted.images == 5
    assert shifted.agree + len(shifted.disagreements) == 5
