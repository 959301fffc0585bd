"""The search objective: fine-tune on train → export → score the exported model on val.

It lives in ``bench.pipeline`` because it joins the two lower layers: ``search`` calls it
without knowing Paddle, and it calls ``harness`` without knowing the search.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from harness.config import TrainConfig

log = logging.getLogger(__name__)

# Splits are listed once per process and reused by every trial that runs there.
_SPLITS_CACHE: dict[tuple, Any] = {}


def cached_splits(cfg: TrainConfig):
    """The dataset splits of ``cfg``, loaded once per process."""
    from harness.train import load_splits

    key = (cfg.dataset, cfg.data_root, cfg.train_list, cfg.val_list, cfg.test_list, cfg.val_fraction,
           cfg.split_seed, cfg.strict_data)
    if key not in _SPLITS_CACHE:
        _SPLITS_CACHE[key] = load_splits(cfg)
    return _SPLITS_CACHE[key]


@dataclass(frozen=True)
class EvalSettings:
    """How trials are scored: Paddle Inference backend, precision and batch size."""

    backend: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 16
    threads: Optional[int] = None
    # Model-only latency measurement of every trial's export (0 turns it off).
    latency_seconds: float = 1.0
    latency_batch: int = 1


def score_exported(exported, samples, classes, settings: EvalSettings):
    """Run ``evaluate`` on ``samples`` through a fresh predictor of ``exported``."""
    from harness.evaluate import evaluate
    from harness.predictor import Predictor, PredictorOptions

    predictor = Predictor(exported, PredictorOptions(
        backend=settings.backend, precision=settings.precision, batch_size=settings.batch_size,
        threads=settings.threads,
    ))
    return evaluate(predictor, samples, classes, batch_size=settings.batch_size)


@dataclass(frozen=True)
class TrialObjective:
    """``objective(params) -> {"value", "metrics", "timings"}`` for ``search.run_search``.

    ``params`` are applied with ``base.replace(**params)`` (an unknown key fails at once). The
    value is the exported model's val metric in the dataset's protocol (top-1 or mean per-class
    accuracy). Picklable, so trials can run in worker processes.
    """

    base: TrainConfig
    trials_dir: str
    evaluation: EvalSettings = EvalSettings()

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        from harness.export import export
        from harness.train import fine_tune
        from search import current_trial

        ctx = current_trial()
        name = f"trial-{ctx.trial:04d}" if ctx else f"trial-{int(time.time() * 1000)}"
        trial_dir = Path(self.trials_dir) / name
        if trial_dir.exists():
            # Left by an interrupted run of this same trial: it runs again from scratch.
            shutil.rmtree(trial_dir)
        cfg = self.base.replace(**params).replace(out_dir=str(self.trials_dir), run_name=name)
        if ctx and ctx.device is not None and cfg.device in ("auto", "gpu"):
            # CUDA_VISIBLE_DEVICES already narrows the process to its GPU.
            cfg = cfg.replace(device="gpu")
        splits = cached_splits(cfg)

        t0 = time.perf_counter()
        result = fine_tune(cfg, splits=splits)
        t1 = time.perf_counter()
        exported = export(result, trial_dir / "exported")
        int8: dict[str, Any] = {}
        if self.evaluation.precision == "int8" and self.evaluation.backend == "cpu":
            # oneDNN int8 needs a calibrated program: score the int8 export, keep the float one too.
            from harness.quantize import quantize_int8

            float_dir = exported.model_dir
            # min_agreement 0: a trial that quantizes badly gets the low score it earns, not an error.
            exported = quantize_int8(result, trial_dir / "exported-int8", min_agreement=0.0,
                                     threads=self.evaluation.threads, splits=splits)
            check = (exported.manifest or {}).get("parity", {})
            int8 = {"int8_agreement": check.get("agreement"), "float_exported_dir": str(float_dir)}
        t2 = time.perf_counter()
        ev = score_exported(exported, splits.val, splits.classes, self.evaluation)
        t3 = time.perf_counter()
        latency: dict[str, Any] = {}
        if self.evaluation.latency_seconds > 0:
            from bench.perf.quick import quick_measurement

            latency = quick_measurement(
                exported.model_dir, batch_size=self.evaluation.latency_batch,
                duration_s=self.evaluation.latency_seconds, backend=self.evaluation.backend,
                precision=self.evaluation.precision, threads=self.evaluation.threads,
            )
        t4 = time.perf_counter()

        value = {"top1": ev.top1, "mean_per_class": ev.mean_per_class}[splits.metric]
        metrics = {
            "metric": splits.metric,
            "val_top1": ev.top1,
            "val_top5": ev.top5,
            "val_mean_per_class": ev.mean_per_class,
            "dygraph_val": result.val_metrics.get(splits.metric),
            "eval_images_per_s": ev.images_per_sec,
            "eval_latency_p99_ms": ev.latency.get("p99_ms"),
            "eval_batch": ev.batch_size,
            # Model-only latency at latency_batch (what bench report plots against accuracy).
            **latency,
            "eval_backend": f"{self.evaluation.backend}/{self.evaluation.precision}",
            "preprocess_backend": ev.preprocess_backend,
            # Unreadable files, counted once even when training and scoring both met them.
            "skipped_images": len({path for path, _ in ev.skipped}
                                  | {item["path"] for item in result.data_report.get("skipped", [])}),
            "exported_dir": str(exported.model_dir),
            **int8,
            "train_history": list(result.history),
        }
        timings = {"train_s": t1 - t0, "export_s": t2 - t1, "eval_s": t3 - t2, "latency_s": t4 - t3}
        return {"value": float(value), "metrics": metrics, "timings": timings}
