"""A threaded, deterministic, bounded-prefetch batch loader.

Batches are decoded and transformed by worker threads (OpenCV and numpy release
the GIL) while the consumer trains on earlier ones. Every sample draws its
augmentation from its own generator seeded with ``(seed, epoch, index)``, so the
output does not depend on the number of workers or on thread timing.
"""

from __future__ import annotations

import collections
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from common.errors import ConfigError, ImageDecodeError
from common.validate import non_negative_int, positive_int

from .image_cache import DecodedImageCache
from .image_io import read_image_rgb
from .types import DataReport, Sample

log = logging.getLogger(__name__)

Transform = Callable[..., np.ndarray]


class _Cancelled(Exception):
    """Raised inside a worker when the iteration that submitted its batch was abandoned."""


class DataLoader:
    """Iterate over ``(images [N,3,H,W] float32, labels [N] int64)`` batches of ``samples``.

    ``transform(img, rng)`` turns one decoded RGB image into a CHW float32 array; a
    transform with a ``batch(list_of_images)`` method (e.g. ``EvalTransform``) gets the
    whole decoded batch at once instead. An image that cannot be decoded is left out
    of its batch, recorded in ``report.skipped`` and logged once; with ``strict=True``
    the iteration raises :class:`ImageDecodeError` naming the file instead. Because of
    skipping, a batch may be smaller than ``batch_size`` and ``len()`` is an upper bound.
    With a ``cache`` (:class:`~harness.data.image_cache.DecodedImageCache`) each file is
    decoded once for every loader that shares the cache. ``split`` names the split the
    samples belong to in the report (and takes a dropped file off that split's count).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Transform,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        workers: int = 2,
        drop_last: bool = False,
        report: Optional[DataReport] = None,
        strict: bool = False,
        prefetch: Optional[int] = None,
        cache: Optional[DecodedImageCache] = None,
        split: str = "",
    ) -> None:
        positive_int(batch_size, "batch_size", integral_float=True)
        positive_int(workers, "workers", integral_float=True)
        if prefetch is not None:
            positive_int(prefetch, "prefetch", integral_float=True)
        if not callable(transform):
            raise ConfigError(f"transform must be callable, got {type(transform).__name__}")
        self.samples = tuple(samples)
        self.transform = transform
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.workers = int(workers)
        self.drop_last = bool(drop_last)
        self.report = report if report is not None else DataReport()
        self.strict = bool(strict)
        # Enough batches in flight to keep every worker busy while the consumer holds one.
        self.prefetch = int(prefetch) if prefetch is not None else 2 * self.workers
        self.cache = cache
        self.split = str(split)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle order and augmentations the next iteration produces."""
        non_negative_int(epoch, "epoch", integral_float=True)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.samples)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_order(self, epoch: Optional[int] = None) -> np.ndarray:
        """Sample indices in the order epoch ``epoch`` (default: the current one) visits them."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.samples)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def _batches(self) -> list[np.ndarray]:
        order = self.epoch_order()
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def _decode(self, index: int) -> Optional[np.ndarray]:
        sample = self.samples[index]
        try:
            return self.cache.read(sample.path) if self.cache is not None else read_image_rgb(sample.path)
        except ImageDecodeError as exc:
            if self.strict:
                raise
            reason = str(exc)
            prefix = f"{sample.path}: "
            if reason.startswith(prefix):
                reason = reason[len(prefix) :]
            if self.report.add_skipped(sample.path, reason, self.split):
                where = f" ({self.split} split)" if self.split else ""
                log.warning("skipping unreadable image %s%s (%s)", sample.path, where, reason)
            return None

    def _load_batch(self, indices: np.ndarray, epoch: int, stop: threading.Event) -> tuple[np.ndarray, np.ndarray]:
        images: list[np.ndarray] = []
        labels: list[int] = []
        batched = getattr(self.transform, "batch", None)
        for index in indices:
            if stop.is_set():
                raise _Cancelled()
            img = self._decode(int(index))
            if img is None:
                continue
            if batched is None:
                rng = np.random.default_rng([self.seed, epoch, int(index)])
                images.append(self.transform(img, rng))
            else:
                images.append(img)
            labels.append(self.samples[int(index)].label)
        if batched is not None:
            array = np.asarray(batched(images), dtype=np.float32)
        elif images:
            array = np.stack(images).astype(np.float32, copy=False)
        else:
            array = np.empty((0, 0, 0, 0), np.float32)
        return array, np.asarray(labels, dtype=np.int64)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        batches = self._batches()
        epoch = self.epoch
        stop = threading.Event()
        pending: collections.deque[Future] = collections.deque()
        executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tlbench-loader")
        next_batch = 0
        try:
            while next_batch < len(batches) or pending:
                while next_batch < len(batches) and len(pending) < self.prefetch:
                    pending.append(executor.submit(self._load_batch, batches[next_batch], epoch, stop))
                    next_batch += 1
                # result() re-raises a worker's exception here, in the consumer thread.
                images, labels = pending.popleft().result()
                if len(labels) == 0:
                    continue  # every image of this batch was unreadable (already reported)
                yield images, labels
        finally:
            # Runs on normal exhaustion, on an exception and when the consumer abandons the
            # generator (break / close / garbage collection): stop the workers promptly.
            stop.set()
            for fut in pending:
                fut.cancel()
            executor.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return (
            f"DataLoader({len(self.samples)} samples, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"workers={self.workers}, transform={self.transform!r})"
        )
