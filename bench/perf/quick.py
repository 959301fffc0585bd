"""A short model-only latency measurement, light enough for every trial of a search."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from common.errors import ConfigError
from common.validate import positive_int
from harness.metrics import latency_summary

from .clients import ClientPool, TensorClient

def quick_measurement(model: Any, *, batch_size: int = 1, duration_s: float = 1.0, warmup_s: float = 0.3,
                      backend: str = "cpu", precision: str = "fp32", threads: Optional[int] = None) -> dict[str, float]:
    """A short model-only measurement for a search journal: one client, one batch size, seeded input.

    ``model`` is an export directory (a predictor is built with ``backend``, ``precision`` and
    ``threads``) or a :class:`~harness.predictor.Predictor` to reuse.

    Returns ``latency_p50_ms``, ``latency_p99_ms`` (per request), ``img_per_s`` and
    ``latency_batch``, the metric keys ``bench report`` reads for its accuracy-vs-latency plot.

    Raises:
        ConfigError, BackendUnavailableError: bad arguments or a backend this Paddle cannot run.
    """
    from harness.predictor import Predictor, PredictorOptions

    positive_int(batch_size, "batch_size")
    if not duration_s > 0 or warmup_s < 0:
        raise ConfigError(f"duration_s must be > 0 and warmup_s >= 0, got {duration_s!r} and {warmup_s!r}")
    if isinstance(model, Predictor):
        predictor = model
    else:
        predictor = Predictor(model, PredictorOptions(backend=backend, precision=precision, batch_size=batch_size,
                                                      threads=threads))
    size = predictor.spec.crop_size
    # Normalised pixels are roughly standard normal; the speed of a dense CNN does not depend on them.
    batch = np.random.default_rng(0).standard_normal((batch_size, 3, size, size)).astype(np.float32)
    client = [TensorClient(predictor, batch)]
    with ClientPool(1) as pool:
        pool.warm_up(client, batch_size, warmup_s)
        rep = pool.run(client, batch_size, duration_s=duration_s)
    summary = latency_summary(rep.latencies_s)
    return {"latency_p50_ms": summary["p50_ms"], "latency_p99_ms": summary["p99_ms"],
            "img_per_s": float(rep.images_per_sec), "latency_batch": batch_size}
