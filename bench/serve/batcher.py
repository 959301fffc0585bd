"""Dynamic batching: concurrent requests gathered into batches for one inference thread.

Request handlers put one preprocessed ``3 x crop x crop`` float32 tensor each on an asyncio
queue (a full-resolution image never waits in the queue: 256 queued 40 MP images would hold
30 GB). One collector task takes the first waiting tensor, then gathers more until
``max_batch`` or ``max_wait_ms`` after the first, and hands the batch to a single inference
thread (Paddle Inference). While a batch runs, new requests queue up and form the next batch,
so the batch size grows with the load by itself. When a batch fails, each of its requests is
retried alone, so one input that breaks inference fails only its own request.
"""

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from common.errors import ConfigError

from .errors import ApiError

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 256


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """Batch sizes the server runs: powers of two below ``max_batch``, and ``max_batch``."""
    sizes = [1]
    while sizes[-1] * 2 < max_batch:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_batch:
        sizes.append(max_batch)
    return tuple(sizes)


@dataclass
class ServerStats:
    """Counters the server exposes at ``/stats`` (updated on the event loop thread only)."""

    started_at: float = field(default_factory=time.time)
    requests: collections.Counter = field(default_factory=collections.Counter)
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)
    images: int = 0
    inference_seconds: float = 0.0

    def to_dict(self, queue_depth: int) -> dict[str, Any]:
        """Plain-JSON form."""
        batches = sum(self.batch_sizes.values())
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "requests": {str(k): v for k, v in sorted(self.requests.items())},
            "images": self.images,
            "batches": batches,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "mean_batch_size": (self.images / batches) if batches else 0.0,
            "inference_seconds": round(self.inference_seconds, 6),
            "queue_depth": queue_depth,
        }


@dataclass
class _Pending:
    tensor: np.ndarray  # one preprocessed image, [3, crop, crop] float32
    future: "asyncio.Future[tuple[np.ndarray, int]]"


class DynamicBatcher:
    """Gathers concurrent requests into batches for one inference thread.

    ``infer(tensors) -> logits`` runs on a dedicated thread (Paddle predictors are not
    re-entrant and the math library already uses every core); the collector runs on the
    event loop. The queued items are preprocessed ``[3, crop, crop]`` tensors, never
    full-resolution images, so a full queue stays small. Start with :meth:`start` inside
    the running loop, stop with :meth:`stop`.
    """

    def __init__(
        self,
        infer: Callable[[list[np.ndarray]], np.ndarray],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int = DEFAULT_MAX_QUEUE,
        stats: Optional[ServerStats] = None,
    ):
        """``infer`` maps a list of preprocessed tensors to ``[N, C]`` logits; the rest bound the batches."""
        if max_batch < 1 or max_wait_s < 0 or max_queue < 1:
            raise ConfigError(f"need max_batch >= 1, max_wait_s >= 0, max_queue >= 1; got {max_batch}, {max_wait_s}, {max_queue}")
        self._infer = infer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.stats = stats or ServerStats()
        self._queue: Optional[asyncio.Queue[_Pending]] = None
        self._task: Optional[asyncio.Task] = None
        self._executor: Optional[ThreadPoolExecutor] = None

    @property
    def running(self) -> bool:
        """True while the collector task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        """Start the collector on the running loop and the inference thread."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="batch-collector")

    async def stop(self) -> None:
        """Cancel the collector, fail what is still queued, and join the inference thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(ApiError(503, "server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, tensor: np.ndarray) -> tuple[np.ndarray, int]:
        """Queue one preprocessed ``[3, crop, crop]`` tensor; returns its logits row and its batch size.

        Raises:
            ApiError: 503 when the queue is full or the batcher is not running.
        """
        if self._queue is None or not self.running:
            raise ApiError(503, "the inference worker is not running")
        future: asyncio.Future[tuple[np.ndarray, int]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(tensor, future))
        except asyncio.QueueFull:
            raise ApiError(503, f"server busy: {self.max_queue} requests already queued; retry later") from None
        return await future

    async def _gather(self) -> list[_Pending]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                # Whatever is already waiting joins at once; then wait for stragglers.
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        # A client that went away cancelled its future; do not spend inference on it.
        return [p for p in batch if not p.future.done()]

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            start = time.perf_counter()
            try:
                logits = await loop.run_in_executor(self._executor, self._infer, [p.tensor for p in batch])
            except Exception as exc:  # one failed batch must not stop the server
                if len(batch) == 1:
                    self._fail(batch[0], exc)
                    continue
                # One bad input must not fail its neighbours: find it by running each alone.
                log.warning("inference failed for a batch of %d (%s: %s); retrying each request alone",
                            len(batch), type(exc).__name__, exc)
                for p in batch:
                    if p.future.done():
                        continue
                    start = time.perf_counter()
                    try:
                        row = (await loop.run_in_executor(self._executor, self._infer, [p.tensor]))[0]
                    except Exception as single_exc:  # noqa: BLE001 - answered as this request's 500
                        self._fail(p, single_exc)
                        continue
                    self._record(1, time.perf_counter() - start)
                    if not p.future.done():
                        p.future.set_result((row, 1))
                continue
            self._record(len(batch), time.perf_counter() - start)
            for p, row in zip(batch, logits):
                if not p.future.done():
                    p.future.set_result((row, len(batch)))

    def _record(self, size: int, seconds: float) -> None:
        self.stats.inference_seconds += seconds
        self.stats.batch_sizes[size] += 1
        self.stats.images += size

    @staticmethod
    def _fail(pending: _Pending, exc: BaseException) -> None:
        log.error("inference failed for one request: %s: %s", type(exc).__name__, exc, exc_info=exc)
        if not pending.future.done():
            pending.future.set_exception(ApiError(500, f"inference failed: {type(exc).__name__}: {exc}"))
