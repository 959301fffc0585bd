"""Checks and decoding of one uploaded image, before any of it reaches the model.

The body's format comes from its magic bytes (415 unless JPEG or PNG) and its dimensions,
channels and bit depth from the PNG ``IHDR`` / JPEG ``SOFn`` header. Before any pixel is
decoded, the pixel count is checked against ``max_pixels`` and the memory decoding will take
(decoder output, 16-to-8-bit conversion, RGB copy) against ``max_decode_bytes`` (413), so a
280 kB PNG that declares 6000x6000 16-bit RGBA pixels is known to need 540 MB before it gets
any. A file that passes these checks but does not decode is a 422.

A large JPEG (over :data:`REDUCE_MIN_PIXELS`) at least ``4 x resize_short`` on its short side
is decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain (the largest reduction that keeps
the short side at ``2 x resize_short`` or more), unless the server runs with ``--full-decode``:
the model input then differs slightly from full decode + resize (see the README). Smaller
images are decoded exactly as evaluation decodes them.
"""

import struct
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .errors import ApiError

# 40 MP covers any camera photo (a 45 MP frame is 8192x5464 ≈ 44.8 MP: raise the cap for
# those); decoding it needs 120 MB, which the server can afford a few times at once.
DEFAULT_MAX_PIXELS = 40_000_000
# Decoder memory of one image: a 40 MP 16-bit RGBA PNG needs 600 MB; a 40 MP photo 240 MB.
DEFAULT_MAX_DECODE_BYTES = 1024 * 1024 * 1024
# JPEGs with more pixels than this may be decoded reduced (module docstring).
REDUCE_MIN_PIXELS = 4_000_000
# Images whose decoding needs more than this go to a single decode thread of their own.
LARGE_DECODE_BYTES = 64 * 1024 * 1024

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# JPEG start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) share
# the range but are not frames.
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}


def image_header_size(data: bytes) -> tuple[str, int, int]:
    """``(format, width, height)`` of a JPEG or PNG from its header alone, without decoding.

    Raises:
        ApiError: 415 when the bytes are neither JPEG nor PNG, 422 when the header is
            malformed or truncated.
    """
    if data.startswith(PNG_SIGNATURE):
        # The first chunk must be IHDR: length (4), type (4), width (4), height (4).
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ApiError(422, "malformed PNG: the IHDR header chunk is missing")
        width, height = struct.unpack(">II", data[16:24])
        if width == 0 or height == 0:
            raise ApiError(422, f"malformed PNG: IHDR declares {width}x{height} pixels")
        return "png", int(width), int(height)
    if data.startswith(JPEG_SOI):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                raise ApiError(422, f"malformed JPEG: expected a marker at byte {pos}")
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte before a marker
                pos += 1
                continue
            if marker in JPEG_STANDALONE:
                pos += 2
                continue
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if length < 2:
                raise ApiError(422, f"malformed JPEG: segment length {length} at byte {pos}")
            if marker in JPEG_SOF_MARKERS:
                if pos + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
                if width == 0 or height == 0:
                    raise ApiError(422, f"unsupported JPEG: the frame header declares {width}x{height} pixels")
                return "jpeg", int(width), int(height)
            if marker in (0xDA, 0xD9):  # scan data or end of image before any frame header
                break
            pos += 2 + length
        raise ApiError(422, "malformed JPEG: no frame header (SOF) with the image size")
    raise ApiError(415, "unsupported media type: the body is not a JPEG or PNG image")


@dataclass(frozen=True)
class UploadPlan:
    """What the header of one upload says, and how it will be decoded."""

    kind: str
    width: int
    height: int
    channels: int
    bytes_per_sample: int
    jpeg_reduce: int
    decode_bytes: int

    @property
    def large(self) -> bool:
        """True when decoding needs more than :data:`LARGE_DECODE_BYTES` (the large-image decode thread)."""
        return self.decode_bytes > LARGE_DECODE_BYTES


def header_samples(data: bytes, kind: str) -> tuple[int, int]:
    """``(channels, bytes per sample)`` the decoder will produce for a JPEG or PNG, an upper bound.

    PNG: from ``IHDR``'s colour type and bit depth (a palette may expand to RGBA). JPEG: the
    frame header's component count (1 or 3; CMYK's 4), 8 bits (12-bit JPEGs are decoded to 8).
    """
    if kind == "png":
        bit_depth, colour_type = data[24], data[25]
        channels = {0: 1, 2: 3, 3: 4, 4: 4, 6: 4}.get(colour_type)
        if channels is None or bit_depth not in (1, 2, 4, 8, 16):
            raise ApiError(422, f"malformed PNG: IHDR colour type {colour_type} with bit depth {bit_depth}")
        return channels, 2 if bit_depth == 16 else 1
    pos = _jpeg_sof_offset(data)
    components = data[pos + 9] if pos + 10 <= len(data) else 3
    return max(1, min(int(components), 4)), 1


def _jpeg_sof_offset(data: bytes) -> int:
    pos = 2
    while pos + 4 <= len(data):
        marker = data[pos + 1]
        if data[pos] != 0xFF:
            break
        if marker == 0xFF:
            pos += 1
            continue
        if marker in JPEG_STANDALONE:
            pos += 2
            continue
        if marker in JPEG_SOF_MARKERS:
            return pos
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return len(data)


def jpeg_reduction(width: int, height: int, resize_short: Optional[int]) -> int:
    """The DCT-domain reduction (1, 2, 4 or 8) for a ``width x height`` JPEG and a model resizing to ``resize_short``.

    The largest factor that leaves the short side at least ``2 * resize_short``; 1 (full
    decode) when ``resize_short`` is None, the image has at most :data:`REDUCE_MIN_PIXELS`,
    or it is not that much larger than the model input.
    """
    if not resize_short or width * height <= REDUCE_MIN_PIXELS:
        return 1
    short = min(width, height)
    factor = 1
    for f in (2, 4, 8):
        if short // f >= 2 * resize_short:
            factor = f
    return factor


def plan_upload(data: bytes, *, max_pixels: int, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
                resize_short: Optional[int] = None) -> UploadPlan:
    """Read the header of ``data`` and check its pixel count and decoding memory, decoding nothing.

    ``resize_short`` (the model's resize, or None for full decode) allows a reduced JPEG decode.

    Raises:
        ApiError: 415 (not JPEG/PNG), 413 (too many pixels, or too much decoding memory), 422 (bad header).
    """
    if not data:
        raise ApiError(422, "empty body: send the image bytes, or a multipart form with a file field")
    kind, width, height = image_header_size(data)
    if width * height > max_pixels:
        raise ApiError(
            413, f"image too large: {kind} declares {width}x{height} = {width * height} pixels, "
            f"more than the limit of {max_pixels} (--max-pixels)",
        )
    channels, bps = header_samples(data, kind)
    reduce = jpeg_reduction(width, height, resize_short) if kind == "jpeg" else 1
    pixels = -(-width // reduce) * -(-height // reduce)
    # Decoder output, the 8-bit copy of a 16-bit image, and the RGB result.
    per_pixel = channels * bps + (channels if bps == 2 else 0) + 3
    decode_bytes = pixels * per_pixel
    if decode_bytes > max_decode_bytes:
        raise ApiError(
            413, f"image too large to decode: {kind} {width}x{height}, {channels} channel(s) of {8 * bps} bits, "
            f"needs {decode_bytes / 2**20:.0f} MiB, more than the limit of {max_decode_bytes / 2**20:.0f} MiB "
            f"(--max-decode-mb)",
        )
    return UploadPlan(kind, width, height, channels, bps, reduce, decode_bytes)


def decode_upload(data: bytes, *, max_pixels: int, plan: Optional[UploadPlan] = None) -> np.ndarray:
    """Check ``data`` (format, declared size, decoding memory) and decode it to HxWx3 uint8 RGB.

    The decoder is the one the data pipeline and ``read_image_rgb`` use, so the server sees
    the pixels that evaluation saw (unless ``plan`` asks for a reduced JPEG decode).

    Raises:
        ApiError: 415 (not JPEG/PNG), 413 (more than ``max_pixels`` declared), 422 (undecodable).
    """
    from harness.data import decode_image_rgb
    from common.errors import ImageDecodeError

    plan = plan or plan_upload(data, max_pixels=max_pixels)
    try:
        image = decode_image_rgb(data, f"uploaded {plan.kind}", jpeg_reduce=plan.jpeg_reduce)
    except ImageDecodeError as exc:
        raise ApiError(422, f"cannot decode the image: {exc}") from None
    if image.shape[0] * image.shape[1] > max_pixels:  # header and pixels disagree
        raise ApiError(413, f"image too large: {image.shape[1]}x{image.shape[0]} pixels (--max-pixels {max_pixels})")
    return image


def prepare_upload(data: bytes, predictor: Any, *, max_pixels: int,
                   plan: Optional[UploadPlan] = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Check, decode and preprocess one upload: its ``[3, crop, crop]`` float32 tensor and ``(width, height)``.

    Runs in a decode thread, one image at a time, so that only the small model input waits
    for a batch and a preprocessing failure fails this request alone. The fused kernel
    processes each image independently, so the tensor equals the image's row of a batched
    ``predictor.preprocess``. ``(width, height)`` is the size the header declares.

    Raises:
        ApiError: as :func:`decode_upload`; 422 when the image cannot be preprocessed
            (e.g. an aspect ratio too extreme to resize).
    """
    plan = plan or plan_upload(data, max_pixels=max_pixels)
    image = decode_upload(data, max_pixels=max_pixels, plan=plan)
    try:
        # threads=1: the decode pool already runs several requests side by side.
        tensor = predictor.preprocess([image], threads=1)
    except ValueError as exc:  # kernels report bad images (and ConfigError is one) as ValueError
        raise ApiError(422, f"cannot preprocess the {image.shape[1]}x{image.shape[0]} image: {exc}") from None
    return np.ascontiguousarray(tensor[0]), (plan.width, plan.height)
