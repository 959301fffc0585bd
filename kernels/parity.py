"""Does the fused path change a model's predictions? Top-1 agreement against the reference path.

The reference path is what training-time evaluation does: OpenCV decode (``IMREAD_COLOR``,
BGR → RGB) and :func:`kernels.preprocess_reference`. The fused path is what deployment does:
:func:`kernels.decode.decode_jpeg` (optionally with DCT-domain downscaling) and
:func:`kernels.preprocess`. Both batches go through the same ``predict`` callable, so any change
of argmax comes from preprocessing alone. Nothing here imports Paddle: pass a predictor's run
function, e.g. ``lambda x: predictor.predict(x)`` returning ``[N, classes]`` scores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

from .decode import _decode_cv2, decode_jpeg
from .fused import preprocess
from .reference import preprocess_reference

ImageSource = Union[str, "os.PathLike[str]", bytes]


@dataclass(frozen=True)
class AgreementReport:
    """Outcome of :func:`top1_agreement`."""

    images: int
    agree: int
    max_abs_input_diff: float  # over the preprocessed batches, normalized units
    backend: str  # kernels.backend() during the run
    fast_decode: bool
    disagreements: list[tuple[str, int, int]] = field(default_factory=list)  # (image, reference, fused)

    @property
    def agreement(self) -> float:
        """Fraction of images whose top-1 class is the same on both paths."""
        return self.agree / self.images if self.images else 1.0


def _read(source: ImageSource) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>", bytes(source)
    path = Path(source)
    return str(path), path.read_bytes()


def top1_agreement(
    predict: Callable[[np.ndarray], np.ndarray],
    sources: Sequence[ImageSource],
    *,
    resize_short: int,
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: float = 1.0 / 255.0,
    batch_size: int = 32,
    fast_decode: bool = False,
) -> AgreementReport:
    """Compare top-1 predictions of the reference and the fused preprocessing paths.

    Args:
        predict: maps a float32 ``[N, 3, crop, crop]`` batch to ``[N, classes]`` scores.
        sources: image files (paths) or their encoded bytes.
        resize_short, crop_size, mean, std, scale: the model's preprocessing
            (``PreprocessSpec`` fields of the same names).
        batch_size: images per ``predict`` call.
        fast_decode: decode with DCT-domain downscaling where it applies (``min_side=resize_short``).

    Returns:
        An :class:`AgreementReport`; ``report.agreement == 1.0`` is the acceptance criterion.
    """
    from . import backend  # noqa: PLC0415 - avoid an import cycle at module load

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    kwargs = dict(resize_short=resize_short, crop_size=crop_size, mean=mean, std=std, scale=scale)
    agree, max_diff, disagreements = 0, 0.0, []
    for start in range(0, len(sources), batch_size):
        names, blobs = zip(*(_read(s) for s in sources[start : start + batch_size]))
        reference = preprocess_reference([_decode_cv2(b) for b in blobs], **kwargs)
        min_side = resize_short if fast_decode else None
        fused = preprocess([decode_jpeg(b, min_side=min_side) for b in blobs], **kwargs)
        max_diff = max(max_diff, float(np.max(np.abs(reference - fused))))
        top_ref = np.argmax(np.asarray(predict(reference)), axis=1)
        top_fused = np.argmax(np.asarray(predict(fused)), axis=1)
        for name, r, f in zip(names, top_ref, top_fused):
            if r == f:
                agree += 1
            else:
                disagreements.append((name, int(r), int(f)))
    return AgreementReport(
        images=len(sources),
        agree=agree,
        max_abs_input_diff=max_diff,
        backend=backend(),
        fast_decode=fast_decode,
        disagreements=disagreements,
    )
