"""Decoding any image file into 3-channel RGB uint8 with OpenCV."""

from __future__ import annotations

import os

import cv2
import numpy as np

from common.errors import ImageDecodeError

_JPEG_SOI = b"\xff\xd8"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


def _jpeg_is_truncated(data: bytes) -> bool:
    # Depending on the build, libjpeg pads a truncated scan with gray and only warns,
    # so imdecode may "succeed"; checked before decoding, which also saves the work.
    # Inside entropy-coded data 0xFF is always followed by 0x00 or a restart marker,
    # so an end-of-image marker must follow the last start-of-scan in a complete file.
    sos = data.rfind(_JPEG_SOS)
    if sos < 0:
        return True
    return data.find(_JPEG_EOI, sos + 2) < 0


def _to_uint8(img: np.ndarray, path: str) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # Divide by 257 so that 65535 maps to 255 exactly (a shift by 8 would give 255 too,
        # but rounds every mid-tone down). In bands of rows: the uint32 temporaries of a whole
        # 36 MP RGBA image would take 1.2 GB.
        out = np.empty(img.shape, np.uint8)
        step = max(1, (1 << 22) // max(1, img[0].size))
        for r in range(0, img.shape[0], step):
            out[r : r + step] = (img[r : r + step].astype(np.uint32) + 128) // 257
        return out
    if img.dtype in (np.float32, np.float64):
        return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ImageDecodeError(f"{path}: unsupported pixel type {img.dtype}")


_REDUCED_JPEG_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_image_rgb(data: bytes | np.ndarray, path: str = "<memory>", *, jpeg_reduce: int = 1) -> np.ndarray:
    """Decode encoded image bytes into an ``HxWx3`` uint8 RGB array (see :func:`read_image_rgb`).

    ``jpeg_reduce`` 2, 4 or 8 decodes a JPEG at that fraction of its size in the DCT domain
    (libjpeg's scaled IDCT; EXIF orientation still ignored): less memory and time, but not
    the pixels of a full decode followed by a resize. Other formats ignore it.
    """
    if jpeg_reduce not in (1, 2, 4, 8):
        raise ValueError(f"jpeg_reduce must be 1, 2, 4 or 8, got {jpeg_reduce!r}")
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if buf.size == 0:
        raise ImageDecodeError(f"{path}: empty file")
    is_jpeg = buf.size >= 2 and bytes(buf[:2]) == _JPEG_SOI
    if is_jpeg and _jpeg_is_truncated(buf.tobytes()):
        raise ImageDecodeError(f"{path}: truncated JPEG (no end-of-image marker after the last scan)")
    flags = cv2.IMREAD_UNCHANGED
    if is_jpeg and jpeg_reduce > 1:
        flags = _REDUCED_JPEG_FLAGS[jpeg_reduce] | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as exc:  # OpenCV raises on some malformed headers instead of returning None
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ImageDecodeError(f"{path}: not a decodable image ({reason})") from exc
    if img is None or img.size == 0:
        raise ImageDecodeError(f"{path}: not a decodable image (OpenCV could not read {buf.size} bytes)")
    img = _to_uint8(img, path)
    if img.ndim == 2:
        rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 1:
        rgb = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 2:
        # Gray + alpha: the alpha channel is dropped, as OpenCV's IMREAD_COLOR does.
        rgb = cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 3:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        raise ImageDecodeError(f"{path}: unsupported image shape {img.shape}")
    return np.ascontiguousarray(rgb)


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``HxWx3`` uint8 RGB.

    Decodes with ``cv2.imdecode(IMREAD_UNCHANGED)`` from the file's bytes, so the file
    extension does not matter (a PNG named ``.jpg`` works) and non-ASCII paths work.
    Grayscale is replicated to 3 channels, alpha is dropped, 16-bit and float images
    are scaled to 8 bits. EXIF orientation is not applied (``IMREAD_UNCHANGED`` ignores it).

    Raises:
        ImageDecodeError: naming ``path``, when the file is missing, empty, truncated or
            not an image.
    """
    path = os.fspath(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    return decode_image_rgb(data, path)


_PROBE_WHOLE_BYTES = 256 * 1024
_PROBE_END_BYTES = 64 * 1024
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _known_format(head: bytes) -> str | None:
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == _PNG_MAGIC:
        return "png"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if len(head) >= 2 and head[0:1] == b"P" and head[1:2] in b"123456":
        return "pnm"
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xff\x4f\xff\x51":
        return "jp2"
    return None


def probe_image_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a usable image, or None when it looks like one; nothing is decoded.

    Cheap structural checks that catch what makes most dataset files unusable: a format
    that is not an image, a JPEG cut off before its end-of-image marker, a PNG without its
    ``IEND`` chunk. Small files are read whole; of larger ones only the first and last
    64 KiB. A file of no format known here is decoded in full as the final word (OpenCV
    reads a few more). A file that passes can still fail to decode (damaged entropy data);
    the loader then drops it.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return "empty file"
            if size <= _PROBE_WHOLE_BYTES:
                head = tail = f.read()
                whole = True
            else:
                head = f.read(_PROBE_END_BYTES)
                f.seek(size - _PROBE_END_BYTES)
                tail = f.read()
                whole = False
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    kind = _known_format(head)
    if kind == "jpeg":
        if whole:
            return "truncated JPEG (no end-of-image marker after the last scan)" if _jpeg_is_truncated(head) else None
        # In entropy-coded data 0xFF is followed by 0x00 or a restart marker, so an end-of-image
        # marker near the end of a large file means the last scan was completed.
        return None if _JPEG_EOI in tail else "truncated JPEG (no end-of-image marker near the end of the file)"
    if kind == "png":
        return None if b"IEND" in tail else "truncated PNG (no IEND chunk)"
    if kind is not None:
        return None
    try:
        decode_image_rgb(np.fromfile(path, dtype=np.uint8), path)
    except ImageDecodeError as exc:
        reason = str(exc)
        return reason[len(path) + 2:] if reason.startswith(f"{path}: ") else reason
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    return None
