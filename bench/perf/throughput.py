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
checks against :data:`~bench.perf.schema.REPORT_SCHEMA`; :func:`bench.perf.outputs.write_outputs`
writes ``throughput.json``, ``throughput.md`` and two PNG plots.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from common.errors import ConfigError
from common.machine import machine_facts, usable_cores
from common.validate import positive_int
from harness.metrics import latency_summary

from .baseline import AGREEMENT_IMAGES, prediction_agreement
from .clients import BaselineClient, ClientPool, JpegClient, Repetition, StageTimes, TensorClient
from .inputs import load_jpeg_bytes, resolve_images_dir
from .schema import INPUT_MODES, SCHEMA_VERSION, STAGES, point_label, validate_report

log = logging.getLogger(__name__)


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
            positive_int(value, flag)
        for flag, value in (("--requests", self.requests), ("--threads", self.threads)):
            if value is not None:
                positive_int(value, flag)

    def threads_for(self, concurrency: int, cores: int) -> int:
        """Math-library (and preprocessing) threads of each predictor at ``concurrency`` clients."""
        return int(self.threads) if self.threads else max(1, cores // concurrency)

    @property
    def run_baseline(self) -> bool:
        """The baseline is an end-to-end JPEG pipeline; it runs when JPEG input is measured."""
        return self.baseline and "jpeg" in self.inputs


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


# -- environment -----------------------------------------------------------------------------------


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
    from kernels import decode

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    simplejpeg = getattr(decode, "simplejpeg", None)
    return machine_facts(
        load_average=load,
        gpu=_gpu_name(),
        paddle_version=paddle.__version__,
        opencv_version=cv2.__version__,
        jpeg_decoder=f"simplejpeg {simplejpeg.__version__}" if simplejpeg is not None else f"opencv {cv2.__version__}",
        backend=cfg.backend,
        precision=cfg.precision,
        kernels_backend=kernels.backend(),
        model_name=model.model_name,
        model_dir=str(model.model_dir),
        image_size=int(model.preprocess.crop_size),
        resize_short=int(model.preprocess.resize_short),
        num_classes=model.num_classes,
    )


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
                series[("ours", "jpeg", b, c)] = [JpegClient(p, jpegs, b, i * step, threads, cfg.topk)
                                                  for i, p in enumerate(predictors[c])]
            if c in cfg.concurrency and tensor_batch is not None:
                series[("ours", "tensor", b, c)] = [TensorClient(p, tensor_batch) for p in predictors[c]]
            if c == 1 and cfg.run_baseline:
                series[("baseline", "jpeg", b, 1)] = [BaselineClient(predictors[1][0], jpegs, b, cfg.topk)]
    return series


def run_throughput(cfg: ThroughputConfig, *, progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Measure every point of ``cfg`` and return the report (see :data:`REPORT_SCHEMA`).

    Raises:
        ConfigError, BackendUnavailableError: bad flags or a backend this Paddle cannot run
            (checked before anything is loaded).
        ModelError, IntegrityError: the model directory is not a usable export.
        DatasetError: no JPEGs to feed.
    """
    from harness.artifact import ExportedModel
    from harness.predictor import check_backend
    say = progress or (lambda message: log.info("%s", message))
    check_backend(cfg.backend, cfg.precision)
    model = ExportedModel.load(cfg.model_dir)
    images_dir = resolve_images_dir(cfg.images_dir)
    named = load_jpeg_bytes(images_dir, cfg.max_images)
    jpegs = [data for _, data in named]
    say(f"{len(jpegs)} JPEGs from {images_dir}, {model.model_name} @ {model.preprocess.crop_size} px, "
        f"{cfg.backend}/{cfg.precision}")
    cores = usable_cores()
    env = environment(cfg, model)
    started = _dt.datetime.now(_dt.timezone.utc)

    levels = sorted(set(cfg.concurrency) | ({1} if cfg.run_baseline else set()))
    predictors = {c: make_predictors(model, _predictor_options(cfg, cfg.threads_for(c, cores)), c) for c in levels}
    # TensorRT: the route, engine count and TensorRT/Paddle versions of what was measured.
    env.update(getattr(predictors[levels[0]][0], "engine_facts", dict)())
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


__all__ = [
    "ThroughputConfig", "add_ratios", "environment", "make_predictors", "run_throughput", "summarize_point",
]
