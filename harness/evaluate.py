"""Evaluate an exported model through Paddle Inference, the way it will be deployed.

:func:`evaluate` reads images, preprocesses them with the model's
:class:`~harness.preprocess_spec.PreprocessSpec` (through :func:`kernels.preprocess`:
the fused native kernel when built, the numpy/OpenCV reference otherwise) and runs the
predictor. Worker threads decode and preprocess batches k+1, k+2, ... while the
predictor runs batch k; at most ``workers + prefetch`` batches are in flight, so memory
stays bounded. Unreadable images are skipped and listed, never dropped silently.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from .errors import ConfigError, DatasetError, ImageDecodeError
from .metrics import classification_metrics, confusion_matrix, latency_summary

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Accuracy and speed of one exported-model evaluation.

    ``latency`` summarises the predictor time per batch (ms); ``images_per_sec`` is end to
    end (decode + preprocess + inference over the wall time of the loop, warm-up excluded).
    ``input_wait_s`` is how long inference waited for preprocessed batches in total (near
    zero means the input pipeline kept up) and ``inference_s`` the total predictor time.
    ``logits``, ``labels`` and ``paths`` are kept for callers and left out of :meth:`to_dict`.
    """

    top1: float
    top5: float
    mean_per_class: float
    num_images: int
    num_classes: int
    classes: tuple[str, ...]
    confusion: np.ndarray
    images_per_sec: float
    wall_s: float
    input_wait_s: float
    inference_s: float
    latency: dict[str, float]
    batch_size: int
    workers: int
    preprocess_backend: str
    predictor: dict[str, Any]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    logits: Optional[np.ndarray] = field(default=None, repr=False)
    labels: Optional[np.ndarray] = field(default=None, repr=False)
    paths: list[str] = field(default_factory=list, repr=False)

    @property
    def num_skipped(self) -> int:
        """Number of unreadable images left out."""
        return len(self.skipped)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for ``eval.json``."""
        return {
            "top1": float(self.top1),
            "top5": float(self.top5),
            "mean_per_class": float(self.mean_per_class),
            "num_images": int(self.num_images),
            "num_skipped": self.num_skipped,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "num_classes": int(self.num_classes),
            "classes": list(self.classes),
            "confusion_matrix": self.confusion.astype(int).tolist(),
            "images_per_sec": float(self.images_per_sec),
            "wall_s": float(self.wall_s),
            "input_wait_s": float(self.input_wait_s),
            "inference_s": float(self.inference_s),
            "batch_latency": {k: float(v) for k, v in self.latency.items()},
            "batch_size": int(self.batch_size),
            "workers": int(self.workers),
            "preprocess_backend": self.preprocess_backend,
            "predictor": dict(self.predictor),
        }


def _load_batch(samples: Sequence[Any], predictor: Any, threads: Optional[int]):
    """Decode and preprocess one batch in a worker thread; bad files are returned, not raised."""
    from .data import read_image_rgb

    images, labels, paths, skipped = [], [], [], []
    for sample in samples:
        try:
            images.append(read_image_rgb(sample.path))
        except ImageDecodeError as exc:
            skipped.append((str(sample.path), str(exc)))
            continue
        labels.append(int(sample.label))
        paths.append(str(sample.path))
    batch = predictor.preprocess(images, threads=threads) if images else None
    return batch, np.asarray(labels, np.int64), paths, skipped


def evaluate(
    predictor: Any,
    samples: Sequence[Any],
    classes: Sequence[str],
    *,
    batch_size: Optional[int] = None,
    workers: int = 2,
    prefetch: int = 2,
    warmup: bool = True,
    keep_logits: bool = True,
) -> EvalResult:
    """Top-1/top-5/mean per-class accuracy, confusion matrix, img/s and latency of ``predictor``.

    Args:
        predictor: a :class:`~harness.predictor.Predictor` (anything with ``predict``,
            ``preprocess``, ``describe`` and ``options.batch_size`` works).
        samples: the split to evaluate: :class:`~harness.data.Sample` records (path, label).
        classes: class names, index = label.
        batch_size: images per predictor call (default: the predictor's batch size).
        workers: threads that decode and preprocess batches ahead of inference.
        prefetch: extra batches queued beyond one per worker.
        warmup: run one zero batch first so one-time costs do not count in the timings.
        keep_logits: keep logits, labels and paths on the result.

    Raises:
        ConfigError: bad arguments, or the model's output size differs from ``classes``.
        DatasetError: no image of ``samples`` could be read.
    """
    import kernels


    classes = tuple(classes)
    if not classes:
        raise ConfigError("evaluate needs the class names (got none)")
    batch_size = batch_size or predictor.options.batch_size
    for name, value, low in (("batch_size", batch_size, 1), ("workers", workers, 1), ("prefetch", prefetch, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    samples = list(samples)
    if not samples:
        raise ConfigError("evaluate got no samples (is the split empty?)")
    bad_labels = [s.path for s in samples if not 0 <= int(s.label) < len(classes)]
    if bad_labels:
        raise ConfigError(f"{len(bad_labels)} sample(s) have labels outside 0..{len(classes) - 1}, e.g. {bad_labels[0]}")
    model_classes = getattr(getattr(predictor, "model", None), "num_classes", None)
    if model_classes is not None and model_classes != len(classes):
        raise ConfigError(f"the model has {model_classes} classes but the dataset has {len(classes)}")

    if warmup:
        predictor.warmup(batch_size)
    chunks = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    # With several workers each batch is preprocessed single-threaded and batches run in
    # parallel; with one worker the kernel may use every core itself.
    kernel_threads = 1 if workers > 1 else None
    all_logits, all_labels, all_paths, skipped = [], [], [], []
    latencies: list[float] = []
    wait_s = 0.0
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-io") as pool:
        pending: deque[Future] = deque()
        next_chunk = 0
        try:
            while next_chunk < len(chunks) or pending:
                while next_chunk < len(chunks) and len(pending) < workers + prefetch:
                    pending.append(pool.submit(_load_batch, chunks[next_chunk], predictor, kernel_threads))
                    next_chunk += 1
                t0 = time.perf_counter()
                batch, labels, paths, bad = pending.popleft().result()
                wait_s += time.perf_counter() - t0
                skipped.extend(bad)
                if batch is None:
                    continue
                t0 = time.perf_counter()
                logits = predictor.predict(batch)
                latencies.append(time.perf_counter() - t0)
                all_logits.append(logits)
                all_labels.append(labels)
                all_paths.extend(paths)
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    wall = time.perf_counter() - start
    for path, reason in skipped:
        log.warning("skipped unreadable image %s (%s)", path, reason)
    if not all_logits:
        raise DatasetError(f"none of the {len(samples)} images could be read; first error: {skipped[0][1]}")

    logits = np.concatenate(all_logits)
    labels = np.concatenate(all_labels)
    if logits.shape[1] != len(classes):
        raise ConfigError(f"the model outputs {logits.shape[1]} classes but the dataset has {len(classes)}")
    metrics = classification_metrics(logits, labels, len(classes))
    n = len(labels)
    return EvalResult(
        top1=metrics["top1"],
        top5=metrics["top5"],
        mean_per_class=metrics["mean_per_class"],
        num_images=n,
        num_classes=len(classes),
        classes=classes,
        confusion=confusion_matrix(np.argmax(logits, axis=1), labels, len(classes)),
        images_per_sec=n / wall if wall > 0 else float("nan"),
        wall_s=wall,
        input_wait_s=wait_s,
        inference_s=float(sum(latencies)),
        latency=latency_summary(latencies),
        batch_size=int(batch_size),
        workers=int(workers),
        preprocess_backend=kernels.backend(),
        predictor=predictor.describe(),
        skipped=skipped,
        logits=logits if keep_logits else None,
        labels=labels if keep_logits else None,
        paths=all_paths if keep_logits else [],
    )


__all__ = ["EvalResult", "evaluate"]
