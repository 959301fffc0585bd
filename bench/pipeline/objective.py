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
from typing import Any

from harness.config import TrainConfig

from .scoring import (EvalSettings, cached_splits, engine_metrics, quantize_for_scoring, score_exported,
                      scoring_options, scoring_predictor)

log = logging.getLogger(__name__)


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
        from harness.train import fine_tune

        cfg, trial_dir = self._trial_config(params)
        if trial_dir.exists():
            # Left by an interrupted run of this same trial: it runs again from scratch.
            shutil.rmtree(trial_dir)
        splits = cached_splits(cfg)
        t0 = time.perf_counter()
        result = fine_tune(cfg, splits=splits)
        return self._score(result, splits, trial_dir, time.perf_counter() - t0)

    def run_rung(self, params: dict[str, Any], epochs: int, final: bool) -> dict[str, Any]:
        """One rung of a multi-fidelity search: train ``params`` until ``epochs`` and score it.

        The trial's directory keeps the training state after every epoch, so a promoted trial
        (or one whose rung was cut by a stop) continues from it; the schedule runs over the full
        ``epochs`` of the base config. A lower rung is scored with the last epoch's validation
        (the deployment preprocessing, in dygraph); the top rung (``final``) is exported and
        scored through the exported model, as every plain trial is.
        """
        from harness.results import CHECKPOINT_NAME, TrainResult
        from harness.train import fine_tune

        cfg, trial_dir = self._trial_config(params)
        splits = cached_splits(cfg)
        t0 = time.perf_counter()
        if final and (trial_dir / CHECKPOINT_NAME).is_file():
            # Trained in full before a stop cut its scoring: score it again.
            result = TrainResult.from_run_dir(trial_dir)
        else:
            result = fine_tune(cfg, splits=splits, stop_after_epochs=epochs, keep_state=True)
        train_s = time.perf_counter() - t0
        if final:
            return self._score(result, splits, trial_dir, train_s)
        value = result.history[-1][f"val_{splits.metric}"]
        metrics = {"metric": splits.metric, "val_top1": result.history[-1].get("val_top1"),
                   "dygraph_val": value, "train_history": list(result.history)}
        return {"value": float(value), "metrics": metrics, "timings": {"train_s": train_s}}

    def _trial_config(self, params: dict[str, Any]) -> tuple[TrainConfig, Path]:
        from search import current_trial

        ctx = current_trial()
        name = f"trial-{ctx.trial:04d}" if ctx else f"trial-{int(time.time() * 1000)}"
        cfg = self.base.replace(**params).replace(out_dir=str(self.trials_dir), run_name=name)
        if ctx and ctx.device is not None and cfg.device in ("auto", "gpu"):
            # CUDA_VISIBLE_DEVICES already narrows the process to its GPU.
            cfg = cfg.replace(device="gpu")
        return cfg, Path(self.trials_dir) / name

    def _score(self, result: Any, splits: Any, trial_dir: Path, train_s: float) -> dict[str, Any]:
        """Export ``result``, score it on val through the exported model, measure its latency."""
        from harness.export import export, export_with_predictor

        t1 = time.perf_counter()
        for stale in ("exported", "exported-int8"):
            if (trial_dir / stale).exists():  # left by a stop during an earlier scoring of this trial
                shutil.rmtree(trial_dir / stale)
        predictor = None
        if self.evaluation.int8:
            exported = export(result, trial_dir / "exported")
        else:
            # The parity check's predictor is the scoring predictor when their settings agree.
            exported, predictor = export_with_predictor(result, trial_dir / "exported",
                                                        scoring_options(self.evaluation))
        int8: dict[str, Any] = {}
        if self.evaluation.int8:
            # Score the int8 export, keep the float one too.
            float_dir = exported.model_dir
            exported = quantize_for_scoring(result, trial_dir / "exported-int8", threads=self.evaluation.threads,
                                            splits=splits)
            check = (exported.manifest or {}).get("parity", {})
            int8 = {"int8_agreement": check.get("agreement"), "float_exported_dir": str(float_dir)}
        t2 = time.perf_counter()
        # One predictor scores val and then measures latency (building one takes 0.5-2 s).
        predictor = predictor or scoring_predictor(exported, self.evaluation)
        ev = score_exported(exported, splits.val, splits.classes, self.evaluation, predictor=predictor)
        t3 = time.perf_counter()
        latency: dict[str, Any] = {}
        if self.evaluation.latency_seconds > 0:
            from bench.perf.quick import quick_measurement

            latency = quick_measurement(
                predictor, batch_size=self.evaluation.latency_batch,
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
            **engine_metrics(predictor),
            "preprocess_backend": ev.preprocess_backend,
            # Unreadable files, counted once even when training and scoring both met them.
            "skipped_images": len({path for path, _ in ev.skipped}
                                  | {item["path"] for item in result.data_report.get("skipped", [])}),
            "exported_dir": str(exported.model_dir),
            **int8,
            "train_history": list(result.history),
        }
        timings = {"train_s": train_s, "export_s": t2 - t1, "eval_s": t3 - t2, "latency_s": t4 - t3}
        return {"value": float(value), "metrics": metrics, "timings": timings}
