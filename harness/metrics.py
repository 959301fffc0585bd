"""Classification metrics and latency statistics in numpy (no Paddle)."""

from __future__ import annotations

import numpy as np


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits (k is capped at the class count)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"expected logits [N, C] and labels [N], got {logits.shape} and {labels.shape}")
    if len(labels) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
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
