"""``bench search``: find the best hyperparameters, scoring every trial through its exported model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.errors import ConfigError

from ._train_args import add_train_arguments, train_config_from_args

NAME = "search"
HELP = "hyperparameter search (fixed, grid, random, bayes, bit) scored on exported models"

log = logging.getLogger(__name__)


# Flags that define a search. Their defaults apply to a new search; a resumed search takes them
# from its search.json, so on --resume they must not be given.
SEARCH_DEFAULTS: dict[str, Any] = {
    "strategy": "bayes", "space": None, "search_seed": 0, "acq_func": "gp_hedge", "n_initial_points": 5,
    "replay": None, "name": None, "eval_backend": "cpu", "eval_precision": "fp32", "eval_batch_size": 16,
    "latency_seconds": 1.0, "latency_batch": 1, "export_dir": None, "retrain_full": None,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("search")
    g.add_argument("--strategy", choices=["fixed", "grid", "random", "bayes", "bit"], help="search strategy (bayes)")
    g.add_argument("--trials", metavar="N", type=int,
                   help="finished trials wanted in all (default: 20 for random/bayes, every point for grid)")
    g.add_argument("--space", help="YAML file that adds or changes search dimensions")
    g.add_argument("--search-seed", type=int, help="seed of the strategy (0)")
    g.add_argument("--acq-func", choices=["gp_hedge", "EI", "LCB", "PI"], help="bayes acquisition function (gp_hedge)")
    g.add_argument("--n-initial-points", type=int, help="bayes random points before the GP (5)")
    g.add_argument("--workers", dest="search_workers", metavar="N", type=int, default=1,
                   help="trials at a time, each in its own process (1)")
    g.add_argument("--devices", help="comma-separated GPU ids, one per worker (e.g. 0,1,2,3)")
    g.add_argument("--ray", metavar="ADDRESS",
                   help="run trials as Ray tasks on the cluster at ADDRESS ('local' starts one here; pip install 'tlbench[ray]')")
    g.add_argument("--resume", metavar="DIR", help="continue the search in DIR (its settings come from DIR/search.json)")
    g.add_argument("--replay", metavar="JOURNAL", help="answer trials from a finished search instead of training")
    g.add_argument("--name", help="search directory name under --out-dir (<dataset>-<strategy>-<time>)")
    g = parser.add_argument_group("scoring and result")
    g.add_argument("--eval-backend", choices=["cpu", "cpu-plain", "gpu", "trt"],
                   help="Paddle Inference backend that scores each trial (cpu)")
    g.add_argument("--eval-precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="precision of the scoring predictor (fp32); int8 (with --eval-backend cpu) calibrates every "
                        "trial's model on training images and scores its int8 export")
    g.add_argument("--eval-batch-size", type=int, help="batch size of the scoring predictor (16)")
    g.add_argument("--latency-seconds", type=float,
                   help="model-only latency measurement of every trial's export, seconds (1; 0 turns it off)")
    g.add_argument("--latency-batch", type=int, help="batch size of that measurement (1)")
    g.add_argument("--export-dir", help="where the best model goes (exported_models/<dataset>-<strategy>-best)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --export-dir")
    g.add_argument("--retrain-full", action="store_true", default=None,
                   help="retrain the best configuration on train+val before the test evaluation (Kornblith et al.)")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_train_arguments(parser, search=True)


def _search_flag(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name, None)
    return SEARCH_DEFAULTS[name] if value is None else value


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
    from bench.pipeline.objective import cached_splits

    return cached_splits(base).metric


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _new_search(args: argparse.Namespace):
    """Meta and run directory of a new search (from the flags)."""
    from dataclasses import fields

    from harness.config import TrainConfig
    from search import SearchMeta, default_space, load_space

    flag = lambda name: _search_flag(args, name)  # noqa: E731
    strategy = flag("strategy")
    base = train_config_from_args(args)
    known = [f.name for f in fields(TrainConfig)]
    space = load_space(flag("space"), known_fields=known) if flag("space") else default_space()
    options: dict[str, Any] = {}
    if strategy == "bayes":
        options = {"acq_func": flag("acq_func"), "n_initial_points": flag("n_initial_points")}
    elif strategy == "bit":
        from bench.pipeline.objective import cached_splits

        splits = cached_splits(base)
        options = {"train_size": len(splits.train), "image_hw": list(_typical_image_hw(splits.train)),
                   "batch_size": base.batch_size}
    trials = args.trials
    if trials is None and strategy in ("random", "bayes"):
        trials = 20
    if strategy in ("fixed", "bit"):
        trials = 1
    name = flag("name") or f"{base.dataset}-{strategy}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    run_dir = (Path(base.out_dir) / name).resolve()
    export_dir = flag("export_dir") or str(Path("exported_models") / f"{base.dataset}-{strategy}-best")
    settings = {
        "trials": trials,
        "eval_backend": flag("eval_backend"), "eval_precision": flag("eval_precision"),
        "eval_batch_size": flag("eval_batch_size"), "export_dir": str(Path(export_dir).resolve()),
        "replay": str(Path(flag("replay")).resolve()) if flag("replay") else None,
        "latency_seconds": flag("latency_seconds"), "latency_batch": flag("latency_batch"),
        "retrain_full": bool(flag("retrain_full")),
    }
    meta = SearchMeta(strategy=strategy, space=space, seed=flag("search_seed"), options=options,
                      dataset=base.dataset, extra={"base_config": base.to_dict(), "settings": settings})
    return meta, run_dir


def _check_before_start(meta, run_dir: Path, base, settings, n_trials, args) -> Any:
    """Everything that can be checked before the first trial trains; returns the objective.

    A mistake found here leaves no search directory behind, and one found later would
    otherwise fail every trial after its training.
    """
    import dataclasses

    from harness import runtime
    from harness.predictor import PredictorOptions, check_backend

    from bench.pipeline.objective import EvalSettings, TrialObjective, cached_splits

    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {n_trials}")
    if n_trials is None and not meta.build_space().is_discrete and meta.strategy not in ("fixed", "bit"):
        raise ConfigError("--trials is needed: the search space has continuous dimensions")
    if args.search_workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.search_workers}")
    if settings.get("replay"):
        from search.replay import ReplayObjective

        return ReplayObjective(settings["replay"])
    if settings["latency_seconds"] < 0 or settings["latency_batch"] < 1:
        raise ConfigError("--latency-seconds must be >= 0 and --latency-batch >= 1")
    if settings["eval_precision"] == "int8" and settings["eval_backend"] != "cpu":
        raise ConfigError(f"--eval-precision int8 scores with --eval-backend cpu (oneDNN); got {settings['eval_backend']!r}")
    check_backend(settings["eval_backend"], settings["eval_precision"])
    PredictorOptions(backend=settings["eval_backend"], precision=settings["eval_precision"],
                     batch_size=settings["eval_batch_size"])  # validates the batch size
    if not args.devices and not args.ray:
        # Fails now (one line) when --device gpu or --amp cannot run here.
        device = runtime.select_device(base.device)
        if base.amp and not device.startswith("gpu"):
            raise ConfigError(f"--amp {base.amp} needs a GPU; this search would train on {device}")
    splits = cached_splits(base)  # a missing or malformed dataset stops here
    if not splits.val:
        raise ConfigError(f"dataset {splits.name!r} has no validation images to score trials on")
    if args.search_workers > 1 and not args.devices and not args.ray and base.threads is None:
        # Processes sharing the CPU get an equal share of its cores instead of all of them each.
        base = dataclasses.replace(base, threads=max(1, runtime.cpu_count() // args.search_workers))
    evaluation = EvalSettings(settings["eval_backend"], settings["eval_precision"], settings["eval_batch_size"],
                              base.threads, settings["latency_seconds"], settings["latency_batch"])
    return TrialObjective(base, str(run_dir / "trials"), evaluation)


def run(args: argparse.Namespace) -> int:
    import signal

    from rich.console import Console, Group
    from rich.live import Live

    from harness.config import TrainConfig
    from search import Journal, load_meta, run_search

    # With --json, stdout carries only the summary; the live table goes to stderr.
    console = Console(stderr=args.json)
    if args.resume:
        from ._train_args import _FIELDS

        given = [f"--{'data-workers' if f == 'workers' else f.replace('_', '-')}" for f in _FIELDS
                 if getattr(args, f, None) is not None]
        given += [f"--{f.replace('_', '-')}" for f in SEARCH_DEFAULTS if getattr(args, f, None) is not None]
        if given:
            raise ConfigError(
                f"--resume {args.resume} continues that search with the settings in its search.json; "
                f"drop {' '.join(given)} (only --trials, --workers, --devices, --ray, --overwrite, --json apply)"
            )
        run_dir = Path(args.resume).resolve()
        meta = load_meta(run_dir)
    else:
        meta, run_dir = _new_search(args)
    base = TrainConfig.from_dict(meta.extra["base_config"])
    settings = meta.extra["settings"]
    n_trials = args.trials if args.trials is not None else settings.get("trials")
    export_dir = Path(settings["export_dir"])
    if _occupied(export_dir) and not args.overwrite:
        raise ConfigError(f"{export_dir} already exists: pass --overwrite to replace it, or --export-dir")
    objective = _check_before_start(meta, run_dir, base, settings, n_trials, args)
    if meta.strategy == "bit":
        log.info("BiT-HyperRule for %s: %s", base.dataset, make_bit_summary(meta))
    journal = Journal.resume(run_dir) if args.resume else Journal.create(run_dir, meta)

    devices = args.devices.split(",") if args.devices else None
    space_names = list(meta.build_space().names) if meta.strategy != "bit" else ["lr", "image_size", "epochs"]
    metric = {"mean_per_class": "mean per-class accuracy"}.get(_dataset_metric(meta, base), "top-1")
    status = {"running": ""}

    def render():
        trials = [t for t in journal.trials() if t.state.name != "RUNNING"]
        table = _trial_table(trials, metric, space_names)
        return Group(table, status["running"]) if status["running"] else table

    def on_sigterm(signum, frame):
        # kill, timeout, Slurm and Kubernetes stop jobs with SIGTERM: take the Ctrl-C path,
        # which stops the workers and leaves the journal ready for --resume.
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
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
    finally:
        signal.signal(signal.SIGTERM, previous)
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
                                  retrain_full=bool(settings.get("retrain_full")))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        console.print(f"best trial {best.id}: {best.params}  val {best.value:.4f}")
        if summary.get("test"):
            t = summary["test"]
            console.print(f"test top1 {t['top1']:.4f}  top5 {t['top5']:.4f}  mean/class {t['mean_per_class']:.4f}"
                          f"  → {export_dir}")
        console.print(f"report: bench report {run_dir}")
    return 0


def make_bit_summary(meta) -> str:
    """The BiT-HyperRule point as one line (it overrides --epochs and --image-size)."""
    from search import make_strategy

    params = make_strategy("bit", meta.build_space(), seed=meta.seed, **meta.options).ask()
    return ", ".join(f"{k}={v}" for k, v in sorted((params or {}).items()))


def _occupied(path: Path) -> bool:
    """True when ``path`` exists and is not an empty directory."""
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _finish(best, base, export_dir: Path, overwrite: bool, settings, run_dir: Path, console, *,
            retrain_full: bool = False) -> dict[str, Any]:
    """Put the best model in ``export_dir`` (optionally retrained on train+val) and evaluate it once on test.

    The model is assembled in a hidden sibling folder and swapped in at the end, so an existing
    ``export_dir`` is only replaced by a complete model.
    """
    import dataclasses

    from common.errors import TlbenchError
    from harness.export import ExportedModel, export

    from bench.pipeline.objective import EvalSettings, cached_splits, score_exported

    cfg = base.replace(**best.params)
    splits = cached_splits(cfg)
    if _occupied(export_dir) and not overwrite:
        raise ConfigError(f"{export_dir} already exists: pass --overwrite to replace it")
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = export_dir.parent / f".{export_dir.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    if retrain_full:
        from harness.train import fine_tune

        console.print(f"retraining trial {best.id}'s configuration on train+val")
        # Val stays as the per-epoch monitor; it is no longer held out, so only test counts.
        full = dataclasses.replace(splits, train=tuple(splits.train) + tuple(splits.val))
        final_dir = run_dir / "final-train+val"
        if final_dir.exists():
            shutil.rmtree(final_dir)
        result = fine_tune(cfg.replace(out_dir=str(run_dir), run_name=final_dir.name), splits=full)
        if settings["eval_precision"] == "int8" and settings["eval_backend"] == "cpu":
            from harness.quantize import quantize_int8

            quantize_int8(result, staging, min_agreement=0.0, threads=base.threads, splits=full)
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
    if export_dir.exists():
        old = export_dir.parent / f".{export_dir.name}.old-{os.getpid()}"
        export_dir.rename(old)
        staging.rename(export_dir)
        shutil.rmtree(old)
    else:
        staging.rename(export_dir)
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
    result["trained_on"] = "train+val" if retrain_full else "train"
    (run_dir / "test_eval.json").write_text(json.dumps(result, indent=2, default=str))
    (export_dir / "test_eval.json").write_text(json.dumps(result, indent=2, default=str))
    return {"top1": ev.top1, "top5": ev.top5, "mean_per_class": ev.mean_per_class, "num_images": ev.num_images}
