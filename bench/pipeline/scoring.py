"""How a search scores a model: the dataset splits (loaded once per process), the evaluation
settings, the int8-or-float decision, and the evaluation of an exported model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from harness.config import TrainConfig

# Splits are listed once per process and reused by every trial that runs there.
_SPLITS_CACHE: dict[tuple, Any] = {}


def cached_splits(cfg: TrainConfig):
    """The dataset splits of ``cfg``, loaded once per process."""
    from harness.train import load_splits

    key = (cfg.dataset, cfg.data_root, cfg.train_list, cfg.val_list, cfg.test_list, cfg.val_fraction,
           cfg.test_fraction, cfg.split_seed, cfg.strict_data)
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

    @property
    def int8(self) -> bool:
        """True when models are scored through an int8 export: oneDNN int8 needs a calibrated program."""
        return self.precision == "int8" and self.backend == "cpu"


def quantize_for_scoring(result: Any, out_dir: str | Path, *, threads: Optional[int], splits: Any):
    """The calibrated int8 export of ``result`` in ``out_dir`` (for :attr:`EvalSettings.int8`).

    ``min_agreement`` is 0: a model that quantizes badly gets the low score it earns, not an error.
    """
    from harness.quantize import quantize_int8

    return quantize_int8(result, out_dir, min_agreement=0.0, threads=threads, splits=splits)


def scoring_options(settings: EvalSettings):
    """PredictorOptions of the scoring backend, precision, batch size and threads."""
    from harness.predictor import PredictorOptions

    return PredictorOptions(backend=settings.backend, precision=settings.precision,
                            batch_size=settings.batch_size, threads=settings.threads)


def scoring_predictor(exported, settings: EvalSettings):
    """A predictor of ``exported`` with the scoring settings (:func:`scoring_options`)."""
    from harness.predictor import Predictor

    return Predictor(exported, scoring_options(settings))


def score_exported(exported, samples, classes, settings: EvalSettings, *, predictor=None):
    """Run ``evaluate`` on ``samples`` through ``predictor`` (default: a fresh one of ``exported``).

    Batches are decoded by threads: a search scores a few hundred images per trial, where
    spawning worker processes took longer than the decoding they overlap (same batches, same
    logits).
    """
    from harness.evaluate import evaluate

    predictor = predictor or scoring_predictor(exported, settings)
    return evaluate(predictor, samples, classes, batch_size=settings.batch_size, worker_kind="thread")


def engine_metrics(predictor) -> dict[str, Any]:
    """``{"eval_trt": {...}}`` for a TensorRT predictor (route, engine count, TensorRT/Paddle versions), else ``{}``."""
    facts = getattr(predictor, "engine_facts", dict)()
    return {"eval_trt": facts} if facts else {}
