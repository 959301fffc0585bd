"""Classification metrics and latency statistics in numpy (no Paddle)."""

from __future__ import annotations

import numpy as np

from common.validate import positive_int


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, shifted by the maximum so large logits do not overflow.

    float32 and float64 inputs keep their dtype; anything else is computed in float64.
    """
    x = np.asarray(logits)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest scores, best first (``k`` is capped at the count).

    Works on a vector ``[C]`` or per row of ``[N, C]``; equal scores are ordered by the lower
    index, so the result does not depend on the partition's order.
    """
    s = np.asarray(scores)
    if s.ndim not in (1, 2):
        raise ValueError(f"expected scores [C] or [N, C], got shape {s.shape}")
    k = positive_int(k, "k", error=ValueError)
    rows = s.reshape(1, -1) if s.ndim == 1 else s
    k = min(k, rows.shape[1])
    if k == rows.shape[1]:
        order = np.argsort(-rows, axis=1, kind="stable")
    else:
        # Partition first (linear time), then sort only the k candidates, lower index first on ties.
        idx = np.sort(np.argpartition(-rows, k - 1, axis=1)[:, :k], axis=1)
        top = np.take_along_axis(rows, idx, axis=1)
        order = np.take_along_axis(idx, np.argsort(-top, axis=1, kind="stable"), axis=1)
        # A tie at the k-th score may have left a lower index outside the candidates: sort those rows fully.
        kth = np.take_along_axis(rows, order[:, -1:], axis=1)
        ambiguous = (rows >= kth).sum(axis=1) > k
        if ambiguous.any():
            order[ambiguous] = np.argsort(-rows[ambiguous], axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(rows, order, axis=1)
    if s.ndim == 1:
        return order[0], values[0]
    return order, values


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits (k is capped at the class count)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"expected logits [N, C] and labels [N], got {logits.shape} and {labels.shape}")
    if len(labels) == 0:
        return float("nan")
    top, _ = topk(logits, k)
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[true, predicted]`` counts as int64."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return cm


def mean_per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean over classes present in ``labels`` of each class's recall."""
    cm = confusion_matrix(predictions, labels, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def classification_metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """top1, top5 and mean_per_class accuracy of ``logits`` against ``labels``."""
    predictions = np.argmax(logits, axis=1)
    return {
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "mean_per_class": mean_per_class_accuracy(predictions, labels, num_classes),
    }


def latency_summary(seconds) -> dict[str, float]:
    """Mean, p50, p90, p95, p99 and max of latencies in milliseconds (linear-interpolated percentiles)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {k: float("nan") for k in ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")}
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {
        "mean_ms": float(ms.mean()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(ms.max()),
    }
