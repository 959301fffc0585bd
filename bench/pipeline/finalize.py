"""Finalizing a search: the best trial's model goes to the export directory (optionally
retrained on train+val first) and is evaluated once on the test split."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from common.errors import ConfigError, TlbenchError

from .scoring import EvalSettings, cached_splits, quantize_for_scoring, score_exported

log = logging.getLogger(__name__)


def occupied(path: Path) -> bool:
    """True when ``path`` exists and is not an empty directory."""
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def finalize_best(best, base, export_dir: Path, overwrite: bool, settings: dict[str, Any], run_dir: Path, *,
                  retrain_full: bool = False, say: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Put the best model in ``export_dir`` (optionally retrained on train+val) and evaluate it once on test.

    The model is assembled in a hidden sibling folder and swapped in at the end, so an existing
    ``export_dir`` is only replaced by a complete model. ``say`` receives progress lines (rich
    markup). Returns the test metrics (top1, top5, mean_per_class, num_images), or ``{}`` when
    the dataset has no test split.

    Raises:
        ConfigError: ``export_dir`` is occupied and ``overwrite`` is false.
        TlbenchError: the best trial's exported model is missing.
    """
    from harness.artifact import ExportedModel, swap_into_place
    from harness.export import export

    say = say or (lambda message: log.info("%s", message))
    cfg = base.replace(**best.params)
    splits = cached_splits(cfg)
    if occupied(export_dir) and not overwrite:
        raise ConfigError(f"{export_dir} already exists: pass --overwrite to replace it")
    evaluation = EvalSettings(settings["eval_backend"], settings["eval_precision"], settings["eval_batch_size"],
                              base.threads)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = export_dir.parent / f".{export_dir.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    if retrain_full:
        from harness.train import fine_tune

        say(f"retraining trial {best.id}'s configuration on train+val")
        # Val stays as the per-epoch monitor; it is no longer held out, so only test counts.
        full = dataclasses.replace(splits, train=tuple(splits.train) + tuple(splits.val))
        final_dir = run_dir / "final-train+val"
        if final_dir.exists():
            shutil.rmtree(final_dir)
        result = fine_tune(cfg.replace(out_dir=str(run_dir), run_name=final_dir.name), splits=full)
        if evaluation.int8:
            quantize_for_scoring(result, staging, threads=base.threads, splits=full)
        else:
            export(result, staging)
        manifest_path = staging / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        # The val metrics were measured on images this model trained on.
        manifest["trained_on"] = "train+val"
        manifest["metrics"] = {"val_not_held_out": manifest.get("metrics")}
        manifest_path.write_text(json.dumps(manifest, indent=2))
    else:
        source = Path(best.metrics["exported_dir"])
        if not (source / "manifest.json").is_file():
            raise TlbenchError(f"the exported model of trial {best.id} is missing: {source}")
        shutil.copytree(source, staging)
    swap_into_place(staging, export_dir)
    exported = ExportedModel.load(export_dir)
    if not splits.test:
        say("[yellow]the dataset has no test split: no test evaluation[/yellow]")
        return {}
    ev = score_exported(exported, splits.test, splits.classes, evaluation)
    result = ev.to_dict()
    result["trial"] = best.id
    result["params"] = best.params
    result["trained_on"] = "train+val" if retrain_full else "train"
    (run_dir / "test_eval.json").write_text(json.dumps(result, indent=2, default=str))
    (export_dir / "test_eval.json").write_text(json.dumps(result, indent=2, default=str))
    return {"top1": ev.top1, "top5": ev.top5, "mean_per_class": ev.mean_per_class, "num_images": ev.num_images}
