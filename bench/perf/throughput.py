"""Throughput and latency of an exported model, end to end and model-only, beside a naive baseline.

The engine measures *points*: one (pipeline, input, batch size, concurrency) combination each.

- ``ours / jpeg``: JPEG bytes held in memory → :func:`kernels.decode.decode_jpeg` →
  :meth:`Predictor.preprocess <harness.predictor.Predictor.preprocess>` (``kernels.preprocess``:
  the fused kernel when built, the numpy/OpenCV reference otherwise) → ``Predictor.predict`` →
  vectorised softmax + top-k.
- ``ours / tensor``: the model alone, ``Predictor.predict`` on an already preprocessed batch of
  the same images (copy in, run, copy out).
- ``baseline / jpeg``: what PaddleClas's python deploy code does, one image at a time:
  ``cv2.imdecode`` → BGR→RGB → resize short side (``round``) → center crop →
  ``(x * scale - mean) / std`` → HWC→CHW in numpy, ``np.array`` of the batch, then
  ``copy_from_cpu`` → ``run`` → ``copy_to_cpu`` and a per-row ``argsort`` top-k; concurrency 1.

A request is one batch. Concurrency ``c`` means ``c`` client threads, each with its own
predictor (Paddle predictors must not be shared between threads; extra ones are cloned with
``Predictor.clone`` when available, which shares the weights, else built anew), each with
``cores // c`` math-library threads unless told otherwise. A client sends its next request as
soon as the previous one returns (closed loop, like perf_analyzer's concurrency mode).

Client threads live for the whole run (:class:`ClientPool`: a predictor keeps per-thread state,
so a fresh thread's first request is slow). Every point is warmed up (at least one untimed
request per client), then measured for a fixed duration (or a fixed number of requests per
client) in ``repetitions`` rounds; each round measures every point once, in an order that
rotates between rounds, so a change of load from other processes during the run spreads over
all points instead of biasing a few. img/s is reported as the median over repetitions with min
and max; latency percentiles pool every request of every repetition
(:func:`harness.metrics.latency_summary`, linear interpolation, as numpy).

:func:`run_throughput` returns the report as a plain-JSON dict that :func:`validate_report`
checks against :data:`REPORT_SCHEMA`; :func:`write_outputs` writes ``throughput.json``,
``throughput.md`` and two PNG plots.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from common.errors import ConfigError, DatasetError, TlbenchError
from harness.metrics import latency_summary

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
JSON_FILE = "throughput.json"
MARKDOWN_FILE = "throughput.md"
PLOT_LATENCY_FILE = "throughput_vs_p99.png"
PLOT_SPLIT_FILE = "time_split.png"

STAGES = ("decode", "preprocess", "inference", "postprocess")
INPUT_MODES = ("jpeg", "tensor")
PIPELINES = ("ours", "baseline")
LATENCY_KEYS = ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
JPEG_SUFFIXES = (".jpg", ".jpeg")
#: Images compared between ours and the baseline for the top-1 agreement check.
AGREEMENT_IMAGES = 64
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_IMAGES_RELATIVE = Path("..") / "shared" / "datasets" / "flowers12"


class ReportSchemaError(TlbenchError):
    """A throughput report does not follow :data:`REPORT_SCHEMA`."""


# -- configuration -----------------------------------------------------------------------------


def _positive_int_tuple(flag: str, values: Sequence[Any]) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"{flag} takes positive integers, got {list(values)!r}")
        out.append(int(v))
    if not out:
        raise ConfigError(f"{flag} needs at least one value")
    if len(set(out)) != len(out):
        raise ConfigError(f"{flag} lists a value twice: {out}")
    return tuple(out)


@dataclass(frozen=True)
class ThroughputConfig:
    """What ``bench throughput`` measures.

    ``requests`` (per client and repetition) replaces ``duration_s`` when set. ``threads`` is
    the math-library thread count of each predictor; by default ``max(1, cores // concurrency)``.
    ``images_dir`` None means the shared flowers12 folder (see :func:`resolve_images_dir`).
    """

    model_dir: str
    backend: str = "cpu"
    precision: str = "fp32"
    batch_sizes: tuple[int, ...] = (1, 8)
    concurrency: tuple[int, ...] = (1,)
    duration_s: float = 5.0
    warmup_s: float = 1.0
    requests: Optional[int] = None
    repetitions: int = 3
    inputs: tuple[str, ...] = INPUT_MODES
    images_dir: Optional[str] = None
    max_images: int = 256
    baseline: bool = True
    threads: Optional[int] = None
    topk: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", str(self.model_dir))
        object.__setattr__(self, "batch_sizes", _positive_int_tuple("--batch-sizes", tuple(self.batch_sizes)))
        object.__setattr__(self, "concurrency", _positive_int_tuple("--concurrency", tuple(self.concurrency)))
        inputs = tuple(self.inputs)
        if not inputs or any(i not in INPUT_MODES for i in inputs) or len(set(inputs)) != len(inputs):
            raise ConfigError(f"--input must be jpeg, tensor or both, got {list(inputs)!r}")
        object.__setattr__(self, "inputs", inputs)
        for flag, value, low in (("--duration", self.duration_s, 0.0), ("--warmup", self.warmup_s, 0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
                raise ConfigError(f"{flag} must be a finite number of seconds >= {low}, got {value!r}")
        if self.requests is None and self.duration_s <= 0:
            raise ConfigError(f"--duration must be > 0 seconds (or give --requests), got {self.duration_s!r}")
        for flag, value in (("--repetitions", self.repetitions), ("--max-images", self.max_images),
                            ("--topk", self.topk)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {value!r}")
        for flag, value in (("--requests", self.requests), ("--threads", self.threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ConfigError(f"{flag} must be a positive integer, got {value!r}")

    def threads_for(self, concurrency: int, cores: int) -> int:
        """Math-library (and preprocessing) threads of each predictor at ``concurrency`` clients."""
        return int(self.threads) if self.threads else max(1, cores // concurrency)

    @property
    def run_baseline(self) -> bool:
        """The baseline is an end-to-end JPEG pipeline; it runs when JPEG input is measured."""
        return self.baseline and "jpeg" in self.inputs


# -- inputs ------------------------------------------------------------------------------------


def resolve_images_dir(images_dir: Optional[str]) -> Path:
    """The folder to take JPEGs from.

    Without ``images_dir``, ``../shared/datasets/flowers12`` is looked up relative to the
    repository root (where this package lives) and then relative to the working directory.

    Raises:
        DatasetError: the folder does not exist (naming every place that was tried).
    """
    if images_dir is not None:
        path = Path(images_dir).expanduser()
        if not path.is_dir():
            raise DatasetError(f"--images {path} is not a directory (expected a folder of JPEG files)")
        return path
    candidates = [(REPO_ROOT / DEFAULT_IMAGES_RELATIVE).resolve(), (Path.cwd() / DEFAULT_IMAGES_RELATIVE).resolve()]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DatasetError(
        "--images was not given and the default flowers12 folder is absent (looked in "
        + " and ".join(str(c) for c in dict.fromkeys(candidates))
        + "); pass --images DIR with JPEG files"
    )


def load_jpeg_bytes(images_dir: Path, max_images: int) -> list[tuple[str, bytes]]:
    """Up to ``max_images`` JPEG files under ``images_dir`` (sorted, recursive) as (relative name, bytes).

    The files are read once and held in memory, so the measurement never touches the disk.

    Raises:
        DatasetError: no JPEG file was found.
    """
    files = sorted(p for p in Path(images_dir).rglob("*") if p.suffix.lower() in JPEG_SUFFIXES and p.is_file())
    out: list[tuple[str, bytes]] = []
    skipped = 0
    for path in files:
        if len(out) >= max_images:
            break
        data = path.read_bytes()
        if data[:2] != b"\xff\xd8":  # the JPEG SOI marker; a misnamed file would measure another codec
            skipped += 1
            continue
        out.append((str(path.relative_to(images_dir)), data))
    if skipped:
        log.warning("skipped %d file(s) with a .jpg name that are not JPEG data under %s", skipped, images_dir)
    if not out:
        raise DatasetError(f"no JPEG files (*.jpg, *.jpeg) under {images_dir}; pass --images DIR with JPEG files")
    return out


# -- the two preprocessing paths -----------------------------------------------------------------


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


def topk_vectorised(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and class ids of the ``k`` best classes per row, best first (one numpy pass)."""
    k = min(k, logits.shape[1])
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    idx = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(probs, idx, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(top, order, axis=1)


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


# -- clients: one request = one batch ------------------------------------------------------------

StageTimes = tuple[float, float, float, float]


class _JpegClient:
    """Our end-to-end pipeline on a rotating window of in-memory JPEGs."""

    def __init__(self, predictor: Any, jpegs: Sequence[bytes], batch: int, offset: int, threads: int, topk: int):
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
        topk_vectorised(logits, self.topk)
        t4 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3


class _TensorClient:
    """The model alone: the predictor on a preprocessed batch (copy in, run, copy out)."""

    def __init__(self, predictor: Any, batch: np.ndarray):
        self.predictor, self.batch = predictor, batch

    def __call__(self) -> StageTimes:
        t0 = time.perf_counter()
        self.predictor.predict(self.batch)
        return 0.0, 0.0, time.perf_counter() - t0, 0.0


class _BaselineClient(_JpegClient):
    """PaddleClas's python deploy loop: per-image cv2 + numpy, then copy_from_cpu / run / copy_to_cpu."""

    def __init__(self, predictor: Any, jpegs: Sequence[bytes], batch: int, topk: int):
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


def summarize_point(pipeline: str, input_mode: str, batch: int, concurrency: int, threads: int,
                    reps: Sequence[Repetition]) -> dict[str, Any]:
    """The JSON record of one point from its repetitions.

    img/s: median, min, max and every repetition's value; latency: :func:`latency_summary` over
    the requests of all repetitions pooled; split: mean ms per request of each stage (so the
    stages add up to the mean latency up to the loop overhead) and the fractions of their sum.
    """
    if not reps:
        raise ConfigError("summarize_point needs at least one repetition")
    ips = [float(r.images_per_sec) for r in reps]
    latencies = np.concatenate([r.latencies_s for r in reps])
    stages = np.concatenate([r.stages_s for r in reps])
    split_ms = {name: float(stages[:, i].mean() * 1000.0) for i, name in enumerate(STAGES)}
    total = sum(split_ms.values())
    return {
        "pipeline": pipeline,
        "input": input_mode,
        "batch_size": int(batch),
        "concurrency": int(concurrency),
        "threads_per_predictor": int(threads),
        "repetitions": len(reps),
        "requests": int(sum(r.requests for r in reps)),
        "images": int(sum(r.images for r in reps)),
        "wall_s": float(sum(r.wall_s for r in reps)),
        "images_per_sec": float(np.median(ips)),
        "images_per_sec_min": float(min(ips)),
        "images_per_sec_max": float(max(ips)),
        "images_per_sec_runs": ips,
        "latency_ms": {k: float(v) for k, v in latency_summary(latencies).items()},
        "split_ms": split_ms,
        "split_fraction": {k: (v / total if total > 0 else 0.0) for k, v in split_ms.items()},
        # Everything but the model, per image: on a loaded machine this is far steadier than img/s
        # because it does not include the (dominant, noisy) inference time.
        "pipeline_ms_per_image": (split_ms["decode"] + split_ms["preprocess"] + split_ms["postprocess"]) / batch,
        "ratios": {"e2e_over_model": None, "ours_over_baseline": None, "pipeline_speedup_vs_baseline": None},
    }


def add_ratios(points: list[dict[str, Any]]) -> None:
    """Fill each record's ``ratios`` in place.

    ``e2e_over_model``: a JPEG point's img/s over ours/tensor at the same batch size and
    concurrency (the baseline, which runs at concurrency 1, is divided by ours/tensor at
    concurrency 1): how much of the model-only throughput survives end to end.
    ``ours_over_baseline``: ours/jpeg img/s over baseline/jpeg img/s at the same batch size.
    ``pipeline_speedup_vs_baseline``: the baseline's decode + preprocess + postprocess time per
    image over ours at concurrency 1 and the same batch size (the part of the request that the
    pipelines differ in; at higher concurrency the stage times include waiting for a core).
    """
    index = {(p["pipeline"], p["input"], p["batch_size"], p["concurrency"]): p for p in points}
    for p in points:
        if p["input"] != "jpeg":
            continue
        model_only = index.get(("ours", "tensor", p["batch_size"], p["concurrency"]))
        if model_only and model_only["images_per_sec"] > 0:
            p["ratios"]["e2e_over_model"] = p["images_per_sec"] / model_only["images_per_sec"]
        base = index.get(("baseline", "jpeg", p["batch_size"], 1))
        if p["pipeline"] == "ours" and base and base["images_per_sec"] > 0:
            p["ratios"]["ours_over_baseline"] = p["images_per_sec"] / base["images_per_sec"]
        # Only like with like: at concurrency > 1 the stage times include waiting for a core.
        if (p["pipeline"] == "ours" and p["concurrency"] == 1 and base and p.get("pipeline_ms_per_image", 0) > 0
                and "pipeline_ms_per_image" in base):
            p["ratios"]["pipeline_speedup_vs_baseline"] = base["pipeline_ms_per_image"] / p["pipeline_ms_per_image"]


# -- agreement -------------------------------------------------------------------------------------


def prediction_agreement(predictor: Any, jpegs: Sequence[bytes], *, batch: int = 8) -> dict[str, Any]:
    """Top-1 of our pipeline vs the baseline pipeline on the same JPEGs, through the same predictor.

    Rows whose top-2 logit margin is within numerical noise (``harness.export.compare_logits``'s
    tolerance) are counted as ``near_ties``: either side may break them.
    """
    from harness.export import compare_logits
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


# -- environment -----------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_name() -> Optional[str]:
    import paddle

    try:
        if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
            return str(paddle.device.cuda.get_device_name(0))
    except Exception:  # a CUDA build without a driver raises here
        return None
    return None


def environment(cfg: ThroughputConfig, model: Any) -> dict[str, Any]:
    """Machine, software and model facts recorded with every result."""
    import cv2
    import paddle

    import kernels
    from harness.runtime import cpu_count
    from kernels import decode

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    simplejpeg = getattr(decode, "simplejpeg", None)
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": cpu_count(),
        "cpu_logical": os.cpu_count() or 0,
        "load_average": load,
        "gpu": _gpu_name(),
        "os": platform.platform(),
        "python_version": platform.python_version(),
        "paddle_version": paddle.__version__,
        "numpy_version": np.__version__,
        "opencv_version": cv2.__version__,
        "jpeg_decoder": f"simplejpeg {simplejpeg.__version__}" if simplejpeg is not None else f"opencv {cv2.__version__}",
        "backend": cfg.backend,
        "precision": cfg.precision,
        "kernels_backend": kernels.backend(),
        "model_name": model.model_name,
        "model_dir": str(model.model_dir),
        "image_size": int(model.preprocess.crop_size),
        "resize_short": int(model.preprocess.resize_short),
        "num_classes": model.num_classes,
    }


# -- the measurement -------------------------------------------------------------------------------


def _predictor_options(cfg: ThroughputConfig, threads: int):
    from harness.predictor import PredictorOptions

    biggest = max(cfg.batch_sizes)
    # batch_size is only the chunk size of predict(); the biggest batch must run in one call.
    return PredictorOptions(backend=cfg.backend, precision=cfg.precision, batch_size=biggest, threads=threads,
                            trt_min_batch=1, trt_opt_batch=biggest, trt_max_batch=biggest)


def make_predictors(model: Any, options: Any, count: int) -> list[Any]:
    """``count`` predictors for ``count`` client threads: one built, the others cloned when possible.

    ``Predictor.clone`` (``paddle.inference.Predictor.clone`` underneath) shares the weights and
    the configuration; where the predictor class has no ``clone``, each one is built anew.
    """
    from harness.predictor import Predictor

    first = Predictor(model, options)
    out = [first]
    clone = getattr(first, "clone", None)
    for _ in range(count - 1):
        out.append(clone() if callable(clone) else Predictor(model, options))
    return out


def _build_series(cfg: ThroughputConfig, predictors: dict[int, list[Any]], jpegs: Sequence[bytes],
                  cores: int) -> dict[tuple[str, str, int, int], list[Callable[[], StageTimes]]]:
    """(pipeline, input, batch, concurrency) → one client per thread of that concurrency level."""
    from kernels.decode import decode_jpeg

    series: dict[tuple[str, str, int, int], list[Callable[[], StageTimes]]] = {}
    for b in cfg.batch_sizes:
        tensor_batch = None
        if "tensor" in cfg.inputs:
            decoded = [decode_jpeg(jpegs[i % len(jpegs)]) for i in range(b)]
            tensor_batch = predictors[min(predictors)][0].preprocess(decoded)
        for c in sorted(predictors):
            threads = cfg.threads_for(c, cores)
            if c in cfg.concurrency and "jpeg" in cfg.inputs:
                # Clients start at different offsets so they do not decode the same files in step.
                step = max(1, len(jpegs) // c)
                series[("ours", "jpeg", b, c)] = [_JpegClient(p, jpegs, b, i * step, threads, cfg.topk)
                                                  for i, p in enumerate(predictors[c])]
            if c in cfg.concurrency and tensor_batch is not None:
                series[("ours", "tensor", b, c)] = [_TensorClient(p, tensor_batch) for p in predictors[c]]
            if c == 1 and cfg.run_baseline:
                series[("baseline", "jpeg", b, 1)] = [_BaselineClient(predictors[1][0], jpegs, b, cfg.topk)]
    return series


def run_throughput(cfg: ThroughputConfig, *, progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Measure every point of ``cfg`` and return the report (see :data:`REPORT_SCHEMA`).

    Raises:
        ConfigError, BackendUnavailableError: bad flags or a backend this Paddle cannot run
            (checked before anything is loaded).
        ModelError, IntegrityError: the model directory is not a usable export.
        DatasetError: no JPEGs to feed.
    """
    from harness.export import ExportedModel
    from harness.predictor import check_backend
    from harness.runtime import cpu_count

    say = progress or (lambda message: log.info("%s", message))
    check_backend(cfg.backend, cfg.precision)
    model = ExportedModel.load(cfg.model_dir)
    images_dir = resolve_images_dir(cfg.images_dir)
    named = load_jpeg_bytes(images_dir, cfg.max_images)
    jpegs = [data for _, data in named]
    say(f"{len(jpegs)} JPEGs from {images_dir}, {model.model_name} @ {model.preprocess.crop_size} px, "
        f"{cfg.backend}/{cfg.precision}")
    cores = cpu_count()
    env = environment(cfg, model)
    started = _dt.datetime.now(_dt.timezone.utc)

    levels = sorted(set(cfg.concurrency) | ({1} if cfg.run_baseline else set()))
    predictors = {c: make_predictors(model, _predictor_options(cfg, cfg.threads_for(c, cores)), c) for c in levels}
    agreement = None
    if cfg.run_baseline:
        agreement = prediction_agreement(predictors[1][0], jpegs[:AGREEMENT_IMAGES])
        say(f"ours vs baseline: same top-1 on {agreement['top1_agree']}/{agreement['images']} images "
            f"(max |logit diff| {agreement['max_abs_logit_diff']:.3g})")
    series = _build_series(cfg, predictors, jpegs, cores)
    pools = {c: ClientPool(c) for c in levels}
    reps: dict[tuple[str, str, int, int], list[Repetition]] = {key: [] for key in series}
    try:
        for (_, _, b, c), clients in series.items():
            pools[c].warm_up(clients, b, cfg.warmup_s)
        keys = list(series)
        for rep in range(cfg.repetitions):
            # Every point gets one window per round and the order rotates between rounds, so a
            # change of machine load during the run spreads over all points instead of biasing a few.
            shift = rep % len(keys)
            for key in keys[shift:] + keys[:shift]:
                _, _, b, c = key
                reps[key].append(pools[c].run(series[key], b, duration_s=None if cfg.requests else cfg.duration_s,
                                              requests=cfg.requests))
            say(f"round {rep + 1}/{cfg.repetitions} of {len(keys)} points done")
    finally:
        for pool in pools.values():
            pool.close()
    del predictors, series
    points = [summarize_point(p, i, b, c, cfg.threads_for(c, cores), runs) for (p, i, b, c), runs in reps.items()]
    for record in points:
        say(f"{point_label(record)}: {record['images_per_sec']:.1f} img/s, p99 {record['latency_ms']['p99_ms']:.1f} ms")
    add_ratios(points)
    try:
        env["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        env["load_average_end"] = []
    order = {("ours", "jpeg"): 0, ("ours", "tensor"): 1, ("baseline", "jpeg"): 2}
    points.sort(key=lambda p: (order[(p["pipeline"], p["input"])], p["batch_size"], p["concurrency"]))
    config = asdict(cfg)
    config.update(batch_sizes=list(cfg.batch_sizes), concurrency=list(cfg.concurrency), inputs=list(cfg.inputs),
                  images_dir=str(images_dir))
    report = {
        "schema_version": SCHEMA_VERSION,
        "created_at": started.isoformat(timespec="seconds"),
        "environment": env,
        "config": config,
        "images": {"dir": str(images_dir), "count": len(jpegs), "bytes": int(sum(len(d) for d in jpegs))},
        "agreement": agreement,
        "points": points,
    }
    validate_report(report)
    return report


def quick_measurement(model_dir: Any, *, batch_size: int = 1, duration_s: float = 1.0, warmup_s: float = 0.3,
                      backend: str = "cpu", precision: str = "fp32", threads: Optional[int] = None) -> dict[str, float]:
    """A short model-only measurement for a search journal: one client, one batch size, seeded input.

    Returns ``latency_p50_ms``, ``latency_p99_ms`` (per request), ``img_per_s`` and
    ``latency_batch``, the metric keys ``bench report`` reads for its accuracy-vs-latency plot.

    Raises:
        ConfigError, BackendUnavailableError: bad arguments or a backend this Paddle cannot run.
    """
    from harness.predictor import Predictor, PredictorOptions

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not duration_s > 0 or warmup_s < 0:
        raise ConfigError(f"duration_s must be > 0 and warmup_s >= 0, got {duration_s!r} and {warmup_s!r}")
    predictor = Predictor(model_dir, PredictorOptions(backend=backend, precision=precision, batch_size=batch_size,
                                                      threads=threads))
    size = predictor.spec.crop_size
    # Normalised pixels are roughly standard normal; the speed of a dense CNN does not depend on them.
    batch = np.random.default_rng(0).standard_normal((batch_size, 3, size, size)).astype(np.float32)
    client = [_TensorClient(predictor, batch)]
    with ClientPool(1) as pool:
        pool.warm_up(client, batch_size, warmup_s)
        rep = pool.run(client, batch_size, duration_s=duration_s)
    summary = latency_summary(rep.latencies_s)
    return {"latency_p50_ms": summary["p50_ms"], "latency_p99_ms": summary["p99_ms"],
            "img_per_s": float(rep.images_per_sec), "latency_batch": batch_size}


# -- schema ----------------------------------------------------------------------------------------

_NUM = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}
_POS = {"type": "integer", "minimum": 1}
_STR = {"type": "string"}


def _obj(properties: dict[str, Any], required: Optional[Sequence[str]] = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required or properties)}


#: JSON Schema (draft 2020-12 subset: type, required, properties, items, enum, minimum) of throughput.json.
REPORT_SCHEMA: dict[str, Any] = _obj({
    "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
    "created_at": _STR,
    "environment": _obj({
        "cpu_model": _STR, "cpu_cores": _POS, "cpu_logical": _INT,
        "load_average": {"type": "array", "items": _NUM}, "load_average_end": {"type": "array", "items": _NUM},
        "gpu": {"type": ["string", "null"]}, "os": _STR, "python_version": _STR, "paddle_version": _STR,
        "numpy_version": _STR, "opencv_version": _STR, "jpeg_decoder": _STR,
        "backend": _STR, "precision": _STR, "kernels_backend": _STR,
        "model_name": _STR, "model_dir": _STR, "image_size": _POS, "resize_short": _POS,
        "num_classes": {"type": ["integer", "null"]},
    }),
    "config": _obj({
        "model_dir": _STR, "backend": _STR, "precision": _STR,
        "batch_sizes": {"type": "array", "items": _POS}, "concurrency": {"type": "array", "items": _POS},
        "duration_s": _NUM, "warmup_s": _NUM, "requests": {"type": ["integer", "null"]}, "repetitions": _POS,
        "inputs": {"type": "array", "items": {"type": "string", "enum": list(INPUT_MODES)}},
        "images_dir": _STR, "max_images": _POS, "baseline": {"type": "boolean"},
        "threads": {"type": ["integer", "null"]}, "topk": _POS,
    }),
    "images": _obj({"dir": _STR, "count": _POS, "bytes": _INT}),
    "agreement": {"type": ["object", "null"], "properties": {
        "images": _POS, "top1_agree": _INT, "fraction": _NUM, "near_ties": _INT, "disagree_beyond_ties": _INT,
        "max_abs_input_diff": _NUM, "max_abs_logit_diff": _NUM, "logit_tolerance": _NUM,
    }, "required": ["images", "top1_agree", "fraction", "near_ties", "disagree_beyond_ties", "max_abs_logit_diff"]},
    "points": {"type": "array", "items": _obj({
        "pipeline": {"type": "string", "enum": list(PIPELINES)},
        "input": {"type": "string", "enum": list(INPUT_MODES)},
        "batch_size": _POS, "concurrency": _POS, "threads_per_predictor": _POS, "repetitions": _POS,
        "requests": _POS, "images": _POS, "wall_s": _NUM,
        "images_per_sec": _NUM, "images_per_sec_min": _NUM, "images_per_sec_max": _NUM,
        "images_per_sec_runs": {"type": "array", "items": _NUM},
        "latency_ms": _obj({k: _NUM for k in LATENCY_KEYS}),
        "split_ms": _obj({k: _NUM for k in STAGES}),
        "split_fraction": _obj({k: _NUM for k in STAGES}),
        "pipeline_ms_per_image": _NUM,
        "ratios": _obj({"e2e_over_model": {"type": ["number", "null"]},
                        "ours_over_baseline": {"type": ["number", "null"]},
                        "pipeline_speedup_vs_baseline": {"type": ["number", "null"]}}),
    })},
})

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "null": lambda v: v is None,
}


def _check(value: Any, schema: dict[str, Any], where: str) -> None:
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](value) for t in allowed):
            raise ReportSchemaError(f"{where}: expected {' or '.join(allowed)}, got {type(value).__name__} {value!r:.60}")
    if value is None:
        return
    if "enum" in schema and value not in schema["enum"]:
        raise ReportSchemaError(f"{where}: expected one of {schema['enum']}, got {value!r}")
    if "minimum" in schema and value < schema["minimum"]:
        raise ReportSchemaError(f"{where}: expected >= {schema['minimum']}, got {value!r}")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                raise ReportSchemaError(f"{where}: required key {key!r} is missing")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{i}]")


def validate_report(report: Any) -> None:
    """Check ``report`` against :data:`REPORT_SCHEMA`.

    Raises:
        ReportSchemaError: naming the first offending path (e.g. ``throughput.json.points[2].latency_ms``).
    """
    _check(report, REPORT_SCHEMA, JSON_FILE)


# -- outputs ---------------------------------------------------------------------------------------


def point_label(p: dict[str, Any]) -> str:
    """Short name of a point, e.g. ``ours/jpeg b8 c2``."""
    return f"{p['pipeline']}/{p['input']} b{p['batch_size']} c{p['concurrency']}"


def machine_line(env: dict[str, Any]) -> str:
    """One line describing where the numbers were measured."""
    def load(key: str) -> str:
        return ", ".join(f"{x:.1f}" for x in env.get(key, [])) or "n/a"

    gpu = env.get("gpu") or "no GPU"
    return (f"{env['cpu_model']}, {env['cpu_cores']} cores available ({env['cpu_logical']} logical), {gpu}; "
            f"load average (1, 5, 15 min) {load('load_average')} at start, {load('load_average_end')} at end; "
            f"Paddle {env['paddle_version']}, {env['backend']}/{env['precision']}, "
            f"preprocessing kernel {env['kernels_backend']}, decoder {env['jpeg_decoder']}")


def _fmt_ratio(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f}×"


def markdown_report(report: dict[str, Any]) -> str:
    """``throughput.md``: machine, table of every point, ratios, agreement and the plots."""
    env, cfg = report["environment"], report["config"]
    window = f"{cfg['requests']} requests per client" if cfg["requests"] else f"{cfg['duration_s']:g} s"
    lines = [
        f"# Throughput: {env['model_name']} @ {env['image_size']} px, {env['backend']}/{env['precision']}",
        "",
        f"- Machine: {machine_line(env)}.",
        f"- Images: {report['images']['count']} JPEGs from `{report['images']['dir']}`, held in memory.",
        f"- Method: warm-up {cfg['warmup_s']:g} s per point, then {cfg['repetitions']} round(s) that each measure "
        f"every point for {window}, in a rotating order; img/s is the median (min–max) over rounds; latency is per "
        "request (one batch), percentiles over all requests of all rounds; the split is the mean time per request in "
        "each stage. Concurrency c = c client threads, each with its own predictor; the baseline runs at c = 1.",
        f"- Created {report['created_at']}.",
        "",
        "| pipeline | input | batch | conc. | threads | img/s (median) | min–max | mean ms | p50 | p90 | p95 | p99 | max "
        "| decode | preprocess | inference | postprocess | pipeline ms/img | e2e / model | ours / baseline "
        "| pipeline speed-up |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in report["points"]:
        lat, split = p["latency_ms"], p["split_ms"]
        lines.append(
            f"| {p['pipeline']} | {p['input']} | {p['batch_size']} | {p['concurrency']} | {p['threads_per_predictor']} "
            f"| {p['images_per_sec']:.1f} | {p['images_per_sec_min']:.1f}–{p['images_per_sec_max']:.1f} | "
            + " | ".join(f"{lat[k]:.1f}" for k in LATENCY_KEYS) + " | "
            + " | ".join(f"{split[s]:.2f}" for s in STAGES) + f" | {p['pipeline_ms_per_image']:.2f}"
            + f" | {_fmt_ratio(p['ratios']['e2e_over_model'])} | {_fmt_ratio(p['ratios']['ours_over_baseline'])}"
            + f" | {_fmt_ratio(p['ratios']['pipeline_speedup_vs_baseline'])} |"
        )
    lines += ["", "Latency and split columns are milliseconds per request. *e2e / model*: the JPEG point's img/s "
              "over ours/tensor at the same batch and concurrency. *ours / baseline*: ours/jpeg over the baseline "
              "(concurrency 1) at the same batch. *pipeline ms/img*: decode + preprocess + postprocess per image; "
              "*pipeline speed-up*: the baseline's pipeline ms/img over ours at concurrency 1 and the same batch (steadier than the "
              "img/s ratio on a loaded machine, since it leaves out the model time).", ""]
    agreement = report.get("agreement")
    if agreement:
        lines.append(
            f"Predictions: ours and the baseline give the same top-1 on {agreement['top1_agree']} of "
            f"{agreement['images']} images ({agreement['fraction']:.1%}; {agreement['near_ties']} near-ties; "
            f"max |input diff| {agreement.get('max_abs_input_diff', float('nan')):.3g}, "
            f"max |logit diff| {agreement['max_abs_logit_diff']:.3g})."
        )
        lines.append("")
    lines += [f"![throughput vs p99 latency]({PLOT_LATENCY_FILE})", "", f"![time split]({PLOT_SPLIT_FILE})", ""]
    return "\n".join(lines)


_SERIES_STYLE = {("ours", "jpeg"): ("tab:blue", "o"), ("ours", "tensor"): ("tab:green", "s"),
                 ("baseline", "jpeg"): ("tab:red", "^")}
_STAGE_COLOURS = {"decode": "tab:orange", "preprocess": "tab:purple", "inference": "tab:blue",
                  "postprocess": "tab:gray"}


def plot_throughput_vs_latency(report: dict[str, Any], path: Path) -> None:
    """img/s against p99 latency: one colour per pipeline/input; within it one line per concurrency
    through the batch sizes (solid for the lowest concurrency, then dashed, dotted, ...); points are
    labelled ``b<batch> c<concurrency>``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = ("-", "--", ":", "-.")
    levels = sorted({p["concurrency"] for p in report["points"]})
    fig, ax = plt.subplots(figsize=(7.5, 5))
    try:
        for (pipeline, input_mode), (colour, marker) in _SERIES_STYLE.items():
            labelled = False
            for level_index, c in enumerate(levels):
                pts = sorted((p for p in report["points"] if p["pipeline"] == pipeline and p["input"] == input_mode
                              and p["concurrency"] == c), key=lambda p: p["batch_size"])
                if not pts:
                    continue
                xs = [p["latency_ms"]["p99_ms"] for p in pts]
                ys = [p["images_per_sec"] for p in pts]
                ax.plot(xs, ys, marker=marker, color=colour, linestyle=styles[level_index % len(styles)],
                        label=None if labelled else f"{pipeline} / {input_mode}")
                labelled = True
                for p, x, y in zip(pts, xs, ys):
                    ax.annotate(f"b{p['batch_size']} c{p['concurrency']}", (x, y), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
        env = report["environment"]
        ax.set_xlabel("p99 latency per request (ms)")
        ax.set_ylabel("throughput (img/s, median of repetitions)")
        ax.set_title(f"{env['model_name']} @ {env['image_size']} px, {env['backend']}/{env['precision']}, "
                     f"{env['cpu_cores']} cores; line style = concurrency", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def plot_time_split(report: dict[str, Any], path: Path) -> None:
    """Stacked bars of the mean time per image in each stage (request split / batch), one bar per point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["points"]
    labels = [point_label(p) for p in points]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(points) + 2), 5))
    try:
        bottom = np.zeros(len(points))
        for stage in STAGES:
            values = np.array([p["split_ms"][stage] / p["batch_size"] for p in points])
            ax.bar(range(len(points)), values, bottom=bottom, label=stage, color=_STAGE_COLOURS[stage])
            bottom += values
        ax.set_xticks(range(len(points)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("ms per image (mean request time / batch)")
        ax.set_title("where the time goes", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def write_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``throughput.json``, ``throughput.md`` and the two plots into ``out_dir``; returns their paths.

    Raises:
        ReportSchemaError: the report does not follow :data:`REPORT_SCHEMA` (nothing is written).
    """
    validate_report(report)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / JSON_FILE, "markdown": out_dir / MARKDOWN_FILE,
             "plot_latency": out_dir / PLOT_LATENCY_FILE, "plot_split": out_dir / PLOT_SPLIT_FILE}
    paths["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_report(report), encoding="utf-8")
    plot_throughput_vs_latency(report, paths["plot_latency"])
    plot_time_split(report, paths["plot_split"])
    return paths


__all__ = [
    "ClientPool", "JSON_FILE", "MARKDOWN_FILE", "PLOT_LATENCY_FILE", "PLOT_SPLIT_FILE", "REPORT_SCHEMA", "STAGES",
    "Repetition", "ReportSchemaError", "ThroughputConfig", "add_ratios", "baseline_decode", "baseline_preprocess",
    "environment", "load_jpeg_bytes", "machine_line", "make_predictors", "markdown_report", "point_label",
    "prediction_agreement", "quick_measurement", "resolve_images_dir", "run_clients", "run_throughput", "summarize_point",
    "topk_per_row", "topk_vectorised", "validate_report", "write_outputs",
]
