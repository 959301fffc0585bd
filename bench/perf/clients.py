"""Clients (one request = one batch) and the closed-loop runner that times them.

:class:`JpegClient` is our end-to-end pipeline, :class:`TensorClient` the model alone and
:class:`BaselineClient` the PaddleClas-style loop; :class:`ClientPool` runs one client per
long-lived thread for a duration or a number of requests and returns a :class:`Repetition`.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from common.errors import ConfigError
from harness.metrics import softmax, topk

from .baseline import baseline_decode, baseline_preprocess, topk_per_row
from .schema import STAGES


# -- clients: one request = one batch ------------------------------------------------------------

StageTimes = tuple[float, float, float, float]


class JpegClient:
    """Our end-to-end pipeline on a rotating window of in-memory JPEGs."""

    def __init__(self, predictor: Any, jpegs: Sequence[bytes], batch: int, offset: int, threads: int, topk: int):
        """Send ``batch`` images per request, starting at ``jpegs[offset]``, preprocessing on ``threads``."""
        from kernels.decode import decode_jpeg

        self._decode = decode_jpeg
        self.predictor, self.jpegs, self.batch, self.pos, self.threads, self.topk = (
            predictor, jpegs, batch, offset, threads, topk)

    def _next_bytes(self) -> list[bytes]:
        n = len(self.jpegs)
        items = [self.jpegs[(self.pos + i) % n] for i in range(self.batch)]
        self.pos = (self.pos + self.batch) % n
        return items

    def __call__(self) -> StageTimes:
        data = self._next_bytes()
        t0 = time.perf_counter()
        images = [self._decode(d) for d in data]
        t1 = time.perf_counter()
        batch = self.predictor.preprocess(images, threads=self.threads)
        t2 = time.perf_counter()
        logits = self.predictor.predict(batch)
        t3 = time.perf_counter()
        topk(softmax(logits), self.topk)
        t4 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3


class TensorClient:
    """The model alone: the predictor on a preprocessed batch (copy in, run, copy out)."""

    def __init__(self, predictor: Any, batch: np.ndarray):
        """Send the same preprocessed ``batch`` with every request."""
        self.predictor, self.batch = predictor, batch

    def __call__(self) -> StageTimes:
        t0 = time.perf_counter()
        self.predictor.predict(self.batch)
        return 0.0, 0.0, time.perf_counter() - t0, 0.0


class BaselineClient(JpegClient):
    """PaddleClas's python deploy loop: per-image cv2 + numpy, then copy_from_cpu / run / copy_to_cpu."""

    def __init__(self, predictor: Any, jpegs: Sequence[bytes], batch: int, topk: int):
        """Send ``batch`` images per request from the start of ``jpegs``, one thread, PaddleClas's way."""
        super().__init__(predictor, jpegs, batch, 0, 1, topk)
        spec = predictor.spec
        self.mean = np.asarray(spec.mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(spec.std, np.float32).reshape(1, 1, 3)
        self.classes = predictor.model.classes

    def __call__(self) -> StageTimes:
        spec = self.predictor.spec
        data = self._next_bytes()
        t0 = time.perf_counter()
        images = [baseline_decode(d) for d in data]
        t1 = time.perf_counter()
        batch = np.array([baseline_preprocess(img, spec.resize_short, spec.crop_size, self.mean, self.std, spec.scale)
                          for img in images])
        t2 = time.perf_counter()
        logits = self.predictor.predict(batch)
        t3 = time.perf_counter()
        topk_per_row(logits, self.topk, self.classes)
        t4 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3


# -- the closed-loop runner ----------------------------------------------------------------------


@dataclass
class Repetition:
    """One timed window of one point: every request's latency and stage times, and the img/s."""

    images: int
    requests: int
    wall_s: float
    latencies_s: np.ndarray
    stages_s: np.ndarray  # [requests, len(STAGES)]

    @property
    def images_per_sec(self) -> float:
        """Images completed per second of wall time."""
        return self.images / self.wall_s if self.wall_s > 0 else float("nan")


class ClientPool:
    """Long-lived client threads; thread ``i`` runs client ``i`` of every measurement it is given.

    The threads persist for the whole run because a predictor keeps per-thread state (OpenMP
    teams, oneDNN primitives): measured here, a fresh thread's first ResNet50_vd request was
    35-50 ms slower than the next ones, so a new thread per repetition would bill that cost to
    the measurement instead of the warm-up.
    """

    def __init__(self, size: int):
        """Start ``size`` idle client threads."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"a client pool needs a positive number of threads, got {size!r}")
        self.size = size
        self._inbox: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(size)]
        self._threads = [threading.Thread(target=self._serve, args=(i,), name=f"throughput-client-{i}", daemon=True)
                         for i in range(size)]
        for t in self._threads:
            t.start()

    def _serve(self, i: int) -> None:
        while True:
            job = self._inbox[i].get()
            if job is None:
                return
            job(i)

    def run(self, clients: Sequence[Callable[[], StageTimes]], batch: int, *, duration_s: Optional[float] = None,
            requests: Optional[int] = None) -> Repetition:
        """Run ``clients[i]`` on thread ``i``, closed loop, for ``duration_s`` or ``requests`` requests each.

        All clients start together (a barrier); a request started before the deadline is
        completed and counted. The wall time runs from the common start to the last completion,
        so img/s is what the clients together sustained.

        Raises:
            ConfigError: neither or both of ``duration_s`` and ``requests``, or not one client per thread.
            Exception: the first exception a client raised.
        """
        if (duration_s is None) == (requests is None):
            raise ConfigError("a measurement needs exactly one of duration_s and requests")
        n = len(clients)
        if n != self.size:
            raise ConfigError(f"this client pool has {self.size} thread(s) but got {n} client(s)")
        barrier = threading.Barrier(n + 1)
        finished = threading.Semaphore(0)
        clock = {"start": 0.0}
        rows: list[list[tuple[float, float, StageTimes]]] = [[] for _ in range(n)]
        errors: list[BaseException] = []

        def job(i: int) -> None:
            try:
                barrier.wait()
                deadline = clock["start"] + duration_s if duration_s is not None else math.inf
                mine, client = rows[i], clients[i]
                while (len(mine) < requests) if requests is not None else (time.perf_counter() < deadline or not mine):
                    t0 = time.perf_counter()
                    stages = client()
                    mine.append((t0, time.perf_counter(), stages))
            except BaseException as exc:  # handed to the calling thread below
                errors.append(exc)
            finally:
                finished.release()

        for inbox in self._inbox:
            inbox.put(job)
        clock["start"] = time.perf_counter()
        barrier.wait()
        for _ in range(n):
            finished.acquire()
        if errors:
            raise errors[0]
        flat = [r for mine in rows for r in mine]
        return Repetition(
            images=batch * len(flat),
            requests=len(flat),
            wall_s=max(r[1] for r in flat) - clock["start"],
            latencies_s=np.array([r[1] - r[0] for r in flat], np.float64),
            stages_s=np.array([r[2] for r in flat], np.float64).reshape(len(flat), len(STAGES)),
        )

    def warm_up(self, clients: Sequence[Callable[[], StageTimes]], batch: int, seconds: float) -> None:
        """Untimed requests for ``seconds``, at least one per client (oneDNN primitives, caches, engines)."""
        if seconds > 0:
            self.run(clients, batch, duration_s=seconds)
        else:
            self.run(clients, batch, requests=1)

    def close(self) -> None:
        """Stop the threads (after any measurement in progress)."""
        for inbox in self._inbox:
            inbox.put(None)
        for t in self._threads:
            t.join()

    def __enter__(self) -> "ClientPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_clients(clients: Sequence[Callable[[], StageTimes]], batch: int, *, duration_s: Optional[float] = None,
                requests: Optional[int] = None) -> Repetition:
    """One measurement of ``clients`` on fresh threads (see :meth:`ClientPool.run`)."""
    if not clients:
        raise ConfigError("a measurement needs at least one client")
    with ClientPool(len(clients)) as pool:
        return pool.run(clients, batch, duration_s=duration_s, requests=requests)
