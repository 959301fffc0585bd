"""Results that cross stage boundaries (no Paddle needed to read them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
from common.errors import TlbenchError
from .preprocess_spec import PreprocessSpec

CHECKPOINT_NAME = "model.pdparams"
CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"


@dataclass(frozen=True)
class TrainResult:
    """What ``fine_tune`` hands on: where the checkpoint is and how well it did on val."""

    config: TrainConfig
    run_dir: str
    checkpoint: str
    classes: tuple[str, ...]
    history: tuple[dict[str, Any], ...]
    val_metrics: dict[str, float]
    metric: str = "top1"
    data_report: dict[str, Any] = field(default_factory=dict)

    @property
    def preprocess(self) -> PreprocessSpec:
        """Evaluation/deploy preprocessing of the trained model."""
        return self.config.preprocess

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> "TrainResult":
        """Rebuild a TrainResult from a run directory's config.yaml, metrics.json and checkpoint."""
        run_dir = Path(run_dir)
        for name in (CONFIG_NAME, METRICS_NAME, CHECKPOINT_NAME):
            if not (run_dir / name).is_file():
                raise TlbenchError(f"{run_dir} is not a finished training run: {name} is missing")
        config = TrainConfig.from_yaml(run_dir / CONFIG_NAME)
        metrics = json.loads((run_dir / METRICS_NAME).read_text())
        return cls(
            config=config,
            run_dir=str(run_dir),
            checkpoint=str(run_dir / CHECKPOINT_NAME),
            classes=tuple(metrics["classes"]),
            history=tuple(metrics.get("history", [])),
            val_metrics=dict(metrics.get("val", {})),
            metric=metrics.get("metric", "top1"),
            data_report=metrics.get("data_report", {}),
        )
