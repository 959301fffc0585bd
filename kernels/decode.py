"""JPEG decoding for the preprocessing pipeline, and conversion of any image to RGB uint8.

:func:`decode_jpeg` decodes with simplejpeg (libjpeg-turbo's TurboJPEG API) when it is installed
and with OpenCV otherwise; both give bit-identical full-size RGB pixels (libjpeg-turbo, accurate
integer IDCT, fancy upsampling; checked on flowers12 in the tests), simplejpeg about 1.3× faster
because it writes RGB directly.

EXIF orientation: :func:`decode_jpeg` applies it, like ``cv2.imread(IMREAD_COLOR)`` in
PaddleClas's deploy scripts: a JPEG whose EXIF orientation is not 1 skips simplejpeg (which
ignores the tag) and is decoded by ``cv2.imdecode(IMREAD_COLOR)``, which rotates/flips it.
The training and evaluation path does NOT: ``harness.data.decode_image_rgb`` /
``read_image_rgb`` decode with ``IMREAD_UNCHANGED``, which ignores EXIF, and so does
``bench serve``, which uses that decoder. For a JPEG with an EXIF rotation, ``decode_jpeg``
therefore returns differently oriented pixels (possibly transposed HxW) than the data the
model was trained and evaluated on; for every other image the pixels are identical.

With ``min_side`` set and a source at least twice as large as needed, it decodes at a reduced
size in the DCT domain (libjpeg-turbo scaling by M/8), which is 3× faster for 2000×1500 images
and much less aliased than bilinear downscaling, but NOT the same pixels as full decode + resize:
it changes the model input by several uint8 levels on average (see kernels/README.md), so use it
only where top-1 agreement has been checked (:func:`kernels.parity.top1_agreement`).
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from common.validate import optional_positive_int

try:
    import simplejpeg
except ImportError:  # pragma: no cover - exercised only where simplejpeg is missing
    simplejpeg = None

log = logging.getLogger(__name__)

#: DCT-domain downscaling is used only when the short side is at least this many times min_side.
DCT_SCALE_MIN_RATIO = 2


def _decode_cv2(data: bytes) -> np.ndarray:
    import cv2  # noqa: PLC0415 - OpenCV is only needed for the fallback

    # IMREAD_COLOR as PaddleClas's deploy scripts read images: 3 channels, 8 bits, EXIF orientation
    # applied (unlike the training data path's IMREAD_UNCHANGED, see the module docstring).
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError(f"could not decode image ({len(data)} bytes): not a supported image format")
    return to_rgb_uint8(arr, bgr=True)


def exif_orientation(data: bytes) -> int:
    """EXIF orientation tag (1-8) of a JPEG, 1 when absent or unreadable."""
    # APP1 "Exif" segments sit right after SOI; walk the markers instead of searching the file.
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            tiff = pos + 10
            order = "little" if data[tiff : tiff + 2] == b"II" else "big"
            ifd = tiff + int.from_bytes(data[tiff + 4 : tiff + 8], order)
            count = int.from_bytes(data[ifd : ifd + 2], order)
            for k in range(count):
                entry = ifd + 2 + 12 * k
                if int.from_bytes(data[entry : entry + 2], order) == 0x0112:
                    value = int.from_bytes(data[entry + 8 : entry + 10], order)
                    return value if 1 <= value <= 8 else 1
            return 1
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no more headers
            break
        pos += 2 + length
    return 1


def decode_jpeg(data: bytes, *, min_side: Optional[int] = None) -> np.ndarray:
    """Decode image bytes (JPEG fast path; PNG etc. through OpenCV) into HxWx3 uint8 RGB.

    EXIF orientation is applied (see the module docstring: the training data path does not).

    Args:
        data: the encoded file contents.
        min_side: short-side length the image will be resized to (``resize_short``). When given
            and the image's short side is at least ``2 * min_side``, the JPEG is decoded at the
            smallest libjpeg-turbo scale (M/8) whose short side is still >= ``min_side``.

    Raises:
        ValueError: the bytes are not a decodable image, or ``min_side`` is not a positive int.
    """
    optional_positive_int(min_side, "min_side", error=ValueError)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"data must be bytes, got {type(data).__name__}")
    # simplejpeg ignores EXIF orientation; rotated photos go through OpenCV, which applies it.
    if simplejpeg is not None and simplejpeg.is_jpeg(data) and exif_orientation(data) == 1:
        try:
            if min_side is not None:
                h, w, _, _ = simplejpeg.decode_jpeg_header(data)
                if min(h, w) >= DCT_SCALE_MIN_RATIO * min_side:
                    return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=min_side, min_width=min_side)
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError as exc:  # e.g. CMYK or damaged JPEGs: OpenCV handles or reports them
            log.debug("simplejpeg could not decode (%s); trying OpenCV", exc)
    return _decode_cv2(bytes(data))


def to_rgb_uint8(image: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """Convert gray (HxW, HxWx1), RGB(A) or BGR(A) arrays, 8- or 16-bit, to HxWx3 uint8 RGB.

    16-bit values are scaled by 1/256 (``>> 8``), as OpenCV does for 8-bit reads; an alpha
    channel is dropped. ``bgr=True`` says the channels are in OpenCV's BGR(A) order.
    """
    arr = np.asarray(image)
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 or uint16 image, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {arr.shape}")
    if arr.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    rgb = arr[:, :, 2::-1] if bgr else arr[:, :, :3]
    return np.ascontiguousarray(rgb)
