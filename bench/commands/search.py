"""``bench search``: find the best hyperparameters, scoring every trial through its exported model."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

from ._train_args import add_train_arguments, train_config_from_args

NAME = "search"
HELP = "hyperparameter search (fixed, grid, random, bayes, bit) scored on exported models"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("search")
    g.add_argument("--strategy", default="bayes", choices=["fixed", "grid", "random", "bayes", "bit"],
                   help="search strategy (bayes)")
    g.add_argument("--trials", metavar="N", type=int, help="number of trials (default: 20 for random/bayes, all for grid)")
    g.add_argument("--space", help="YAML file that adds or changes search dimensions")
    g.add_argument("--search-seed", type=int, default=0, help="seed of the strategy (0)")
    g.add_argument("--acq-func", default="gp_hedge", choices=["gp_hedge", "EI", "LCB", "PI"],
                   help="bayes acquisition function (gp_hedge)")
    g.add_argument("--n-initial-points", type=int, default=5, help="bayes random points before the GP (5)")
    g.add_argument("--workers", dest="search_workers", metavar="N", type=int, default=1,
                   help="trials at a time, each in its own process (1)")
    g.add_argument("--devices", help="comma-separated GPU ids, one per worker (e.g. 0,1,2,3)")
    g.add_argument("--ray", metavar="ADDRESS", help="run trials as Ray tasks on the cluster at ADDRESS ('local' starts one here; pip install 'tlbench[ray]')")
    g.add_argument("--resume", metavar="DIR", help="continue the search in DIR")
    g.add_argument("--replay", metavar="JOURNAL", help="answer trials from a finished search instead of training")
    g.add_argument("--name", help="search directory name under --out-dir (<dataset>-<strategy>-<time>)")
    g = parser.add_argument_group("scoring and result")
    g.add_argument("--eval-backend", default="cpu", choices=["cpu", "cpu-plain", "gpu", "trt"],
                   help="Paddle Inference backend that scores each trial (cpu)")
    g.add_argument("--eval-precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8"],
                   help="precision of the scoring predictor (fp32)")
    g.add_argument("--eval-batch-size", type=int, default=16, help="batch size of the scoring predictor (16)")
    g.add_argument("--latency-seconds", type=float, default=1.0,
                   help="model-only latency measurement of every trial's export, seconds (1; 0 turns it off)")
    g.add_argument("--latency-batch", type=int, default=1, help="batch size of that measurement (1)")
    g.add_argument("--export-dir", help="where the best model goes (exported_models/<dataset>-<strategy>-best)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --export-dir")
    g.add_argument("--retrain-full", action="store_true",
                   help="retrain the best configuration on train+val before the test evaluation (Kornblith et al.)")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_train_arguments(parser, search=True)


def _typical_image_hw(samples) -> tuple[int, int]:
    """Median height and width of up to 32 images (read from their headers by OpenCV)."""
    import numpy as np

    from harness.data import read_image_rgb

    shapes = [read_image_rgb(s.path).shape[:2] for s in list(samples)[:32]]
    return int(np.median([h for h, _ in shapes])), int(np.median([w for _, w in shapes]))


# Short column headers and states keep the live table readable in an 80-column terminal.
_SHORT_NAMES = {"label_smoothing": "LS", "l2_decay": "l2", "batch_size": "batch", "image_size": "px"}
_STATE_WORDS = {"COMPLETE": "done", "FAILED": "failed", "PRUNED": "pruned", "RUNNING": "running"}


def _trial_table(trials: list, metric: str, space_names: list[str]):
    from rich.table import Table

    best = max((t.value for t in trials if t.value is not None and t.state.name == "COMPLETE"), default=None)
    table = Table(title=f"trials (val {metric}; best {best:.4f})" if best is not None else "trials")
    table.add_column("#", justify="right")
    for name in space_names:
        table.add_column(_SHORT_NAMES.get(name, name), no_wrap=True)
    table.add_column(f"val {metric}", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("time", justify="right")
    table.add_column("state")
    for t in trials:
        p99 = (t.metrics or {}).get("latency_p99_ms")
        secs = (t.timings or {}).get("trial_s")
        style = "bold green" if best is not None and t.value == best and t.state.name == "COMPLETE" else None
        table.add_row(
            str(t.id), *[_fmt(t.params.get(n)) for n in space_names],
            "" if t.value is None else f"{t.value:.4f}",
            "" if p99 is None else f"{p99:.1f}",
            "" if secs is None else f"{secs:.0f}s",
            _STATE_WORDS.get(t.state.name, t.state.name) if not t.error
            else f"{_STATE_WORDS.get(t.state.name, t.state.name)}: {str(t.error)[:40]}",
            style=style,
        )
    return table


def _dataset_metric(meta, base) -> str:
    """The dataset protocol's metric name (reading the file list is cheap; no images are decoded)."""
    if meta.extra.get("settings", {}).get("replay"):
        return "top1"
    from bench.objective import cached_splits

    return cached_splits(base).metric


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _new_search(args: argparse.Namespace):
    """Meta, base config and run directory of a new search (from the flags)."""
    from dataclasses import fields

    from harness.config import TrainConfig
    from search import SearchMeta, default_space, load_space

    base = train_config_from_args(args)
    known = [f.name for f in fields(TrainConfig)]
    space = load_space(args.space, known_fields=known) if args.space else default_space()
    options: dict[str, Any] = {}
    if args.strategy == "bayes":
        options = {"acq_func": args.acq_func, "n_initial_points": args.n_initial_points}
    elif args.strategy == "bit":
        from bench.objective import cached_splits

        splits = cached_splits(base)
        options = {"train_size": len(splits.train), "image_hw": list(_typical_image_hw(splits.train)),
                   "batch_size": base.batch_size}
    name = args.name or f"{base.dataset}-{args.strategy}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    run_dir = Path(base.out_dir) / name
    export_dir = args.export_dir or str(Path("exported_models") / f"{base.dataset}-{args.strategy}-best")
    settings = {
        "eval_backend": args.eval_backend, "eval_precision": args.eval_precision,
        "eval_batch_size": args.eval_batch_size, "export_dir": export_dir, "replay": args.replay,
        "latency_seconds": args.latency_seconds, "latency_batch": args.latency_batch,
    }
    meta = SearchMeta(strategy=args.strategy, space=space, seed=args.search_seed, options=options,
                      dataset=base.dataset, extra={"base_config": base.to_dict(), "settings": settings})
    return meta, run_dir


def run(args: argparse.Namespace) -> int:
    from rich.console import Console, Group
    from rich.live import Live

    from harness.config import TrainConfig
    from search import Journal, load_meta, run_search

    from bench.objective import EvalSettings, TrialObjective

    # With --json, stdout carries only the summary; the live table goes to stderr.
    console = Console(stderr=args.json)
    if args.resume:
        from ._train_args import _FIELDS

        ignored = [f"--{f.replace('_', '-')}" for f in _FIELDS if getattr(args, f, None) is not None]
        ignored += ["--space"] if args.space else []
        if ignored:
            raise ConfigError(
                f"--resume {args.resume} continues that search with the settings in its search.json; "
                f"drop {' '.join(ignored)} (only --trials, --workers, --devices, --ray, --overwrite apply)"
            )
        meta = load_meta(args.resume)
        run_dir = Path(args.resume)
        journal = Journal.resume(run_dir)
    else:
        meta, run_dir = _new_search(args)
        journal = None
    base = TrainConfig.from_dict(meta.extra["base_config"])
    settings = meta.extra["settings"]
    export_dir = Path(settings["export_dir"])
    if export_dir.exists() and any(export_dir.iterdir()) and not args.overwrite:
        raise ConfigError(f"{export_dir} already exists: pass --overwrite to replace it, or --export-dir")
    if journal is None:
        journal = Journal.create(run_dir, meta)
    n_trials = args.trials
    if n_trials is None and meta.strategy in ("random", "bayes"):
        n_trials = 20
    if meta.strategy in ("fixed", "bit"):
        n_trials = 1

    if settings.get("replay"):
        from search.replay import ReplayObjective

        objective: Any = ReplayObjective(settings["replay"])
    else:
        evaluation = EvalSettings(settings["eval_backend"], settings["eval_precision"], settings["eval_batch_size"],
                                  base.threads, settings.get("latency_seconds", 1.0), settings.get("latency_batch", 1))
        objective = TrialObjective(base, str(run_dir / "trials"), evaluation)
    devices = args.devices.split(",") if args.devices else None
    space_names = list(meta.build_space().names) if meta.strategy not in ("bit",) else ["lr", "image_size", "epochs"]
    metric = {"mean_per_class": "mean per-class accuracy"}.get(_dataset_metric(meta, base), "top-1")
    status = {"running": ""}

    def render():
        trials = [t for t in journal.trials() if t.state.name != "RUNNING"]
        table = _trial_table(trials, metric, space_names)
        return Group(table, status["running"]) if status["running"] else table

    with journal, Live(render(), console=console, refresh_per_second=1, transient=False,
                       redirect_stderr=False) as live:
        def on_start(trial) -> None:
            status["running"] = f"running trial {trial.id}: {trial.params}"
            live.update(render())

        def on_end(trial) -> None:
            status["running"] = ""
            live.update(render())

        result = run_search(
            objective, journal.rebuild_strategy(), journal, n_trials=n_trials,
            workers=args.search_workers, devices=devices, backend="ray" if args.ray else "process",
            ray_address=args.ray, on_trial_start=on_start, on_trial_end=on_end,
        )
    console.print()
    if result.interrupted:
        console.print(f"[yellow]interrupted[/yellow]; resume with: {result.resume_hint}")
        return 130
    best = result.best
    summary: dict[str, Any] = {"run_dir": str(run_dir), "strategy": meta.strategy,
                               "trials": len(result.trials), "best": None}
    if best is None:
        console.print("[red]no trial completed[/red]; see the journal for the errors")
        return 1
    summary["best"] = {"trial": best.id, "params": best.params, "val": best.value}
    if not settings.get("replay"):
        summary["test"] = _finish(best, base, export_dir, args.overwrite, settings, run_dir, console,
                                  retrain_full=args.retrain_full)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        console.print(f"best trial {best.id}: {best.params}  val {best.value:.4f}")
        if "test" in summary:
            t = summary["test"]
            console.print(f"test top1 {t['top1']:.4f}  top5 {t['top5']:.4f}  mean/class {t['mean_per_class']:.4f}"
                          f"  → {export_dir}")
        console.print(f"report: bench report {run_dir}")
    return 0


def _finish(best, base, export_dir: Path, overwrite: bool, settings, run_dir: Path, console, *,
            retrain_full: bool = False) -> dict[str, Any]:
    """Put the best model in ``export_dir`` (optionally retrained on train+val) and evaluate it once on test."""
    import dataclasses

    from harness.export import ExportedModel, export

    from bench.objective import EvalSettings, cached_splits, score_exported

    cfg = base.replace(**best.params)
    splits = cached_splits(cfg)
    if export_dir.exists():
        if not overwrite:
            raise ConfigError(f"{export_dir} already exists: pass --overwrite to replace it")
        shutil.rmtree(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    if retrain_full:
        from harness.train import fine_tune

        console.print(f"retraining trial {best.id}'s configuration on train+val")
        # Val stays as the per-epoch monitor; it is no longer held out, so only test counts.
        full = dataclasses.replace(splits, train=tuple(splits.train) + tuple(splits.val))
        final_dir = run_dir / "final-train+val"
        if final_dir.exists():
            shutil.rmtree(final_dir)
        result = fine_tune(cfg.replace(out_dir=str(run_dir), run_name=final_dir.name), splits=full)
        exported = export(result, export_dir)
    else:
        shutil.copytree(Path(best.metrics["exported_dir"]), export_dir)
        exported = ExportedModel.load(export_dir)
    evaluation = EvalSettings(settings["eval_backend"], settings["eval_precision"], settings["eval_batch_size"],
                              base.threads)
    if not splits.test:
        console.print("[yellow]the dataset has no test split: no test evaluation[/yellow]")
        return {}
    ev = score_exported(exported, splits.test, splits.classes, evaluation)
    result = ev.to_dict()
    result["trial"] = best.id
    result["params"] = best.params
    (run_dir / "test_eval.json").write_text(json.dumps(result, indent=2, default=str))
    (export_dir / "test_eval.json").write_text(json.dumps(result, indent=2, default=str))
    return {"top1": ev.top1, "top5": ev.top5, "mean_per_class": ev.mean_per_class, "num_images": ev.num_images}
