"""Evaluate an exported model through Paddle Inference, the way it will be deployed.

:func:`evaluate` reads images, preprocesses them with the model's
:class:`~harness.preprocess_spec.PreprocessSpec` (through :func:`kernels.preprocess`:
the fused native kernel when built, the numpy/OpenCV reference otherwise) and runs the
predictor. Worker processes decode and preprocess batches k+1, k+2, ... straight into a
ring of shared-memory batch buffers while the predictor runs batch k from its buffer; at
most ``workers + prefetch`` batches are in flight, so memory stays bounded. Processes,
not threads: Paddle's ``predictor.run`` holds the GIL, so a Python thread barely moves
while inference runs. Unreadable images are skipped and listed, never dropped silently.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from typing import Any, Optional, Sequence

import numpy as np

from common.errors import ConfigError, DatasetError, ImageDecodeError
from common.validate import int_at_least
from .metrics import classification_metrics, confusion_matrix, latency_summary
from .preprocess_spec import PreprocessSpec

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
    worker_kind: str
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
            "worker_kind": self.worker_kind,
            "preprocess_backend": self.preprocess_backend,
            "predictor": dict(self.predictor),
        }


WORKER_KINDS = ("auto", "process", "thread")
# Below this many batches, spawning worker processes costs more than it overlaps.
AUTO_PROCESS_MIN_BATCHES = 4


def _decode_samples(samples: Sequence[tuple[str, int]]):
    """Decode one batch's files; unreadable ones are returned as (path, reason), not raised."""
    from .data import read_image_rgb

    images, labels, paths, skipped = [], [], [], []
    for path, label in samples:
        try:
            images.append(read_image_rgb(path))
        except ImageDecodeError as exc:
            skipped.append((str(path), str(exc)))
            continue
        labels.append(int(label))
        paths.append(str(path))
    return images, np.asarray(labels, np.int64), paths, skipped


def _preprocess_into(images: list, spec: PreprocessSpec, out: Optional[np.ndarray], threads: Optional[int]) -> np.ndarray:
    import kernels

    return kernels.preprocess(
        images, resize_short=spec.resize_short, crop_size=spec.crop_size, mean=spec.mean, std=spec.std,
        scale=spec.scale, threads=threads, out=out,
    )


def _thread_batch(samples: Sequence[tuple[str, int]], spec: PreprocessSpec, threads: Optional[int]):
    """Thread worker: decode + preprocess one batch into a new array."""
    images, labels, paths, skipped = _decode_samples(samples)
    batch = _preprocess_into(images, spec, None, threads) if images else None
    return batch, labels, paths, skipped


# Per worker process: shared-memory slots attached so far, by name.
_ATTACHED: dict[str, tuple[Any, np.ndarray]] = {}


def _process_init() -> None:
    """Worker-process set-up: one OpenCV thread each, so workers do not oversubscribe the cores."""
    import cv2

    cv2.setNumThreads(1)


def _attach(name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in _ATTACHED:
        # Spawned workers share the parent's resource tracker, which already holds this
        # block; the parent unlinks it when the evaluation ends.
        shm = shared_memory.SharedMemory(name=name)
        _ATTACHED[name] = (shm, np.ndarray(shape, np.float32, buffer=shm.buf))
    return _ATTACHED[name][1]


def _ping() -> int:
    """No-op task: returns once a worker process is up."""
    return 0


def _process_batch(samples: Sequence[tuple[str, int]], spec: PreprocessSpec, slot_name: str, slot_shape: tuple[int, ...]):
    """Process worker: decode + preprocess one batch straight into a shared-memory slot."""
    images, labels, paths, skipped = _decode_samples(samples)
    if images:
        _preprocess_into(images, spec, _attach(slot_name, slot_shape)[: len(images)], 1)
    return len(images), labels, paths, skipped


class _SlotRing:
    """Shared-memory batch buffers that worker processes fill and the predictor reads in place."""

    def __init__(self, count: int, shape: tuple[int, ...]) -> None:
        self.shape = shape
        nbytes = int(np.prod(shape)) * 4
        self.blocks = []
        try:
            for _ in range(count):
                self.blocks.append(shared_memory.SharedMemory(create=True, size=nbytes))
        except BaseException:
            self.close()
            raise
        self.views = [np.ndarray(shape, np.float32, buffer=b.buf) for b in self.blocks]
        self.free: deque[int] = deque(range(count))

    def close(self) -> None:
        self.views = []
        for block in self.blocks:
            try:
                block.close()
            except BufferError:
                # A traceback still references a view; the mapping goes when it does.
                pass
            try:
                block.unlink()
            except FileNotFoundError:
                pass
        self.blocks = []


def evaluate(
    predictor: Any,
    samples: Sequence[Any],
    classes: Sequence[str],
    *,
    batch_size: Optional[int] = None,
    workers: int = 2,
    worker_kind: str = "auto",
    prefetch: int = 2,
    warmup: bool = True,
    keep_logits: bool = True,
) -> EvalResult:
    """Top-1/top-5/mean per-class accuracy, confusion matrix, img/s and latency of ``predictor``.

    Args:
        predictor: a :class:`~harness.predictor.Predictor` (anything with ``spec``,
            ``predict``, ``warmup``, ``describe`` and ``options.batch_size`` works).
        samples: the split to evaluate: :class:`~harness.data.Sample` records (path, label).
        classes: class names, index = label.
        batch_size: images per predictor call (default: the predictor's batch size).
        workers: how many workers decode and preprocess batches ahead of inference.
        worker_kind: ``"process"``: spawned worker processes write batches into
            shared memory that the predictor reads in place; needed for real overlap,
            because Paddle's ``predictor.run`` holds the GIL (measured: a Python thread
            gets ~3 % of its idle progress during a run). ``"thread"``: a thread pool,
            cheaper to start, for small evaluations. ``"auto"`` (default): processes from
            4 batches on, threads below. Process workers are spawned, so a calling
            script needs the usual ``if __name__ == "__main__":`` guard.
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
    if worker_kind not in WORKER_KINDS:
        raise ConfigError(f"worker_kind must be one of {WORKER_KINDS}, got {worker_kind!r}")
    for name, value, low in (("batch_size", batch_size, 1), ("workers", workers, 1), ("prefetch", prefetch, 0)):
        int_at_least(value, name, low)
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
    chunks = [[(str(s.path), int(s.label)) for s in samples[i : i + batch_size]]
              for i in range(0, len(samples), batch_size)]
    if worker_kind == "auto":
        worker_kind = "process" if len(chunks) >= AUTO_PROCESS_MIN_BATCHES else "thread"
    spec = predictor.spec
    all_logits, all_labels, all_paths, skipped = [], [], [], []
    latencies: list[float] = []
    wait_s = 0.0

    def infer(batch: np.ndarray, labels: np.ndarray, paths: list) -> None:
        t0 = time.perf_counter()
        logits = predictor.predict(batch)
        latencies.append(time.perf_counter() - t0)
        all_logits.append(logits)
        all_labels.append(labels)
        all_paths.extend(paths)

    in_flight = workers + prefetch
    start = time.perf_counter()
    if worker_kind == "thread":
        # With several workers each batch is preprocessed single-threaded and batches run
        # in parallel; with one worker the kernel may use every core itself.
        kernel_threads = 1 if workers > 1 else None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-io") as pool:
            pending: deque[Future] = deque()
            next_chunk = 0
            try:
                while next_chunk < len(chunks) or pending:
                    while next_chunk < len(chunks) and len(pending) < in_flight:
                        pending.append(pool.submit(_thread_batch, chunks[next_chunk], spec, kernel_threads))
                        next_chunk += 1
                    t0 = time.perf_counter()
                    batch, labels, paths, bad = pending.popleft().result()
                    wait_s += time.perf_counter() - t0
                    skipped.extend(bad)
                    if batch is not None:
                        infer(batch, labels, paths)
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
    else:
        ring = _SlotRing(in_flight, (batch_size, 3, spec.crop_size, spec.crop_size))
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                     initializer=_process_init) as pool:
                # Start the workers before the clock: spawning is a one-time cost.
                for f in [pool.submit(_ping) for _ in range(workers)]:
                    f.result()
                start = time.perf_counter()
                pending_slots: deque[tuple[int, Future]] = deque()
                next_chunk = 0
                try:
                    while next_chunk < len(chunks) or pending_slots:
                        while next_chunk < len(chunks) and ring.free:
                            slot = ring.free.popleft()
                            future = pool.submit(_process_batch, chunks[next_chunk], spec, ring.blocks[slot].name,
                                                 ring.shape)
                            pending_slots.append((slot, future))
                            next_chunk += 1
                        t0 = time.perf_counter()
                        slot, future = pending_slots.popleft()
                        n, labels, paths, bad = future.result()
                        wait_s += time.perf_counter() - t0
                        skipped.extend(bad)
                        if n:
                            infer(ring.views[slot][:n], labels, paths)
                        ring.free.append(slot)
                except BaseException:
                    for _, f in pending_slots:
                        f.cancel()
                    raise
        finally:
            ring.close()
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
        worker_kind=worker_kind,
        preprocess_backend=kernels.backend(),
        predictor=predictor.describe(),
        skipped=skipped,
        logits=logits if keep_logits else None,
        labels=labels if keep_logits else None,
        paths=all_paths if keep_logits else [],
    )


__all__ = ["EvalResult", "evaluate"]
