"""The naive baseline: PaddleClas's python deploy pipeline, one image at a time in cv2 + numpy,
and the check that it and our pipeline predict the same classes through the same predictor."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from common.errors import ConfigError, DatasetError

#: Images compared between ours and the baseline for the top-1 agreement check.
AGREEMENT_IMAGES = 64


def baseline_decode(data: bytes) -> np.ndarray:
    """``cv2.imdecode`` as PaddleClas reads images (BGR, 3 channels), then BGR→RGB as its deploy code does."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cv2.imdecode could not decode {len(data)} bytes of image data")
    return img[:, :, ::-1]


def baseline_preprocess(img: np.ndarray, resize_short: int, crop_size: int, mean: np.ndarray, std: np.ndarray,
                        scale: float) -> np.ndarray:
    """One RGB image through PaddleClas's deploy op chain in numpy: CHW float32.

    ``ResizeImage``: short side to ``resize_short`` with ``int(round(...))`` sizes and cv2
    INTER_LINEAR; ``CropImage``: offset ``(size - crop) // 2``; ``NormalizeImage`` in HWC:
    ``(x.astype(float32) * scale - mean) / std``; ``ToCHWImage``: transpose.
    """
    import cv2

    h, w = img.shape[:2]
    percent = float(resize_short) / min(h, w)
    img = cv2.resize(img, (int(round(w * percent)), int(round(h * percent))), interpolation=cv2.INTER_LINEAR)
    h, w = img.shape[:2]
    top, left = (h - crop_size) // 2, (w - crop_size) // 2
    img = img[top : top + crop_size, left : left + crop_size, :]
    img = (img.astype("float32") * np.float32(scale) - mean) / std
    return img.transpose((2, 0, 1))


def topk_per_row(logits: np.ndarray, k: int, classes: Optional[Sequence[str]]) -> list[dict[str, Any]]:
    """PaddleClas's ``Topk`` post-process: softmax, then a full ``argsort`` per row and a dict per image."""
    out = []
    for row in logits:
        e = np.exp(row - row.max())
        probs = e / e.sum()
        index = probs.argsort(axis=0)[-k:][::-1].astype("int32")
        out.append({
            "class_ids": index.tolist(),
            "scores": np.around(probs[index], decimals=5).tolist(),
            "label_names": [classes[i] for i in index] if classes else [],
        })
    return out



def prediction_agreement(predictor: Any, jpegs: Sequence[bytes], *, batch: int = 8) -> dict[str, Any]:
    """Top-1 of our pipeline vs the baseline pipeline on the same JPEGs, through the same predictor.

    Rows whose top-2 logit margin is within numerical noise (``harness.parity.compare_logits``'s
    tolerance) are counted as ``near_ties``: either side may break them.
    """
    from harness.parity import compare_logits
    from kernels.decode import decode_jpeg

    if not jpegs:
        raise ConfigError("prediction_agreement needs at least one image")
    spec = predictor.spec
    mean = np.asarray(spec.mean, np.float32).reshape(1, 1, 3)
    std = np.asarray(spec.std, np.float32).reshape(1, 1, 3)
    ours, base, max_input_diff = [], [], 0.0
    for i in range(0, len(jpegs), batch):
        chunk = jpegs[i : i + batch]
        ours_in = predictor.preprocess([decode_jpeg(d) for d in chunk])
        base_in = np.array([baseline_preprocess(baseline_decode(d), spec.resize_short, spec.crop_size, mean, std,
                                                spec.scale) for d in chunk])
        max_input_diff = max(max_input_diff, float(np.abs(ours_in - base_in).max()))
        ours.append(predictor.predict(ours_in))
        base.append(predictor.predict(base_in))
    base_logits, ours_logits = np.concatenate(base), np.concatenate(ours)
    diff, tolerance, agree, ties, bad = compare_logits(base_logits, ours_logits)
    n = len(base_logits)
    return {
        "images": n,
        "top1_agree": int(agree),
        "fraction": agree / n,
        "near_ties": int(ties),
        "disagree_beyond_ties": len(bad),
        "max_abs_input_diff": max_input_diff,
        "max_abs_logit_diff": float(diff),
        "logit_tolerance": float(tolerance),
    }
