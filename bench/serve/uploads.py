"""Checks and decoding of one uploaded image, before any of it reaches the model.

The body's format comes from its magic bytes (415 unless JPEG or PNG) and its dimensions from
the PNG ``IHDR`` / JPEG ``SOFn`` header, checked against ``max_pixels`` (413) before any pixel
is decoded, so a small file that declares 50000x50000 pixels never reaches the decoder. A file
that passes these checks but does not decode is a 422.
"""

import struct
from typing import Any

import numpy as np

from .errors import ApiError

# 40 MP covers any camera photo (a 45 MP frame is 8192x5464 ≈ 44.8 MP: raise the cap for
# those); decoding it needs 120 MB, which the server can afford a few times at once.
DEFAULT_MAX_PIXELS = 40_000_000

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


def decode_upload(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Check ``data`` (format, declared size) and decode it to HxWx3 uint8 RGB.

    The decoder is the one the data pipeline and ``read_image_rgb`` use, so the server sees
    the pixels that evaluation saw.

    Raises:
        ApiError: 415 (not JPEG/PNG), 413 (more than ``max_pixels`` declared), 422 (undecodable).
    """
    from harness.data import decode_image_rgb
    from common.errors import ImageDecodeError

    if not data:
        raise ApiError(422, "empty body: send the image bytes, or a multipart form with a file field")
    kind, width, height = image_header_size(data)
    if width * height > max_pixels:
        raise ApiError(
            413, f"image too large: {kind} declares {width}x{height} = {width * height} pixels, "
            f"more than the limit of {max_pixels} (--max-pixels)",
        )
    try:
        image = decode_image_rgb(data, f"uploaded {kind}")
    except ImageDecodeError as exc:
        raise ApiError(422, f"cannot decode the image: {exc}") from None
    if image.shape[0] * image.shape[1] > max_pixels:  # header and pixels disagree
        raise ApiError(413, f"image too large: {image.shape[1]}x{image.shape[0]} pixels (--max-pixels {max_pixels})")
    return image


def prepare_upload(data: bytes, predictor: Any, *, max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Check, decode and preprocess one upload: its ``[3, crop, crop]`` float32 tensor and ``(width, height)``.

    Runs in a decode thread, one image at a time, so that only the small model input waits
    for a batch and a preprocessing failure fails this request alone. The fused kernel
    processes each image independently, so the tensor equals the image's row of a batched
    ``predictor.preprocess``.

    Raises:
        ApiError: as :func:`decode_upload`; 422 when the image cannot be preprocessed
            (e.g. an aspect ratio too extreme to resize).
    """
    image = decode_upload(data, max_pixels=max_pixels)
    try:
        # threads=1: the decode pool already runs several requests side by side.
        tensor = predictor.preprocess([image], threads=1)
    except ValueError as exc:  # kernels report bad images (and ConfigError is one) as ValueError
        raise ApiError(422, f"cannot preprocess the {image.shape[1]}x{image.shape[0]} image: {exc}") from None
    return np.ascontiguousarray(tensor[0]), (int(image.shape[1]), int(image.shape[0]))
