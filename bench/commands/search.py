"""``bench search``: find the best hyperparameters, scoring every trial through its exported model."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from common.errors import ConfigError, Terminated
from search.strategies import BAYES_N_INITIAL_POINTS

from ._train_args import add_train_arguments, train_config_from_args

NAME = "search"
HELP = "hyperparameter search (fixed, grid, random, bayes, bit, asha, bohb) scored on exported models"

log = logging.getLogger(__name__)


# Flags that define a search. Their defaults apply to a new search; a resumed search takes them
# from its search.json, so on --resume they must not be given.
SEARCH_DEFAULTS: dict[str, Any] = {
    "strategy": "bayes", "space": None, "search_seed": 0, "acq_func": "gp_hedge",
    "n_initial_points": BAYES_N_INITIAL_POINTS,
    "min_epochs": 1, "eta": 2,
    "bit_budget": "rule", "replay": None, "name": None, "eval_backend": "cpu", "eval_precision": "fp32", "eval_batch_size": 16,
    "latency_seconds": 1.0, "latency_batch": 1, "export_dir": None, "retrain_full": None,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("search")
    g.add_argument("--strategy", choices=["fixed", "grid", "random", "bayes", "bit", "asha", "bohb"],
                   help="search strategy (bayes); asha and bohb are multi-fidelity: trials start with --min-epochs "
                        "and the best continue from their checkpoints to --epochs")
    g.add_argument("--trials", metavar="N", type=int,
                   help="finished trials wanted in all (default: 20 for random/bayes, every point for grid); for "
                        "asha/bohb the configurations to start (default 40)")
    g.add_argument("--min-epochs", type=int, help="asha/bohb: epochs of the lowest rung (1)")
    g.add_argument("--eta", type=int, help="asha/bohb: reduction factor; rungs are min-epochs x eta^k up to --epochs (2)")
    g.add_argument("--space", help="YAML file that adds or changes search dimensions")
    g.add_argument("--search-seed", type=int, help="seed of the strategy (0)")
    g.add_argument("--acq-func", choices=["gp_hedge", "EI", "LCB", "PI"], help="bayes acquisition function (gp_hedge)")
    g.add_argument("--n-initial-points", type=int, help="bayes random points before the GP (5)")
    g.add_argument("--bit-budget", choices=["rule", "recipe"],
                   help="bit: 'rule' trains the rule's steps at its resolution (384 px for images over 96x96); "
                        "'recipe' uses the rule's lr, momentum, decay, schedule and mixup at --epochs and "
                        "--image-size (rule)")
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


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def run(args: argparse.Namespace) -> int:
    import signal

    from rich.console import Console, Group
    from rich.live import Live

    from harness.config import TrainConfig
    from search import Journal, SearchExistsError, load_meta, run_search, strategy_for
    from search.mf_runner import multi_fidelity_strategy_for, run_multi_fidelity_search
    from search.multifidelity import is_multi_fidelity

    from bench.pipeline.finalize import finalize_best, occupied
    from bench.pipeline.presets import bit_columns, bit_summary
    from bench.pipeline.setup import dataset_metric, new_search, prepare_objective

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
        base = train_config_from_args(args)
        meta, run_dir = new_search(base, {name: _search_flag(args, name) for name in SEARCH_DEFAULTS}, args.trials)
    base = TrainConfig.from_dict(meta.extra["base_config"])
    settings = meta.extra["settings"]
    n_trials = args.trials if args.trials is not None else settings.get("trials")
    export_dir = Path(settings["export_dir"])
    if occupied(export_dir) and not args.overwrite:
        raise ConfigError(f"{export_dir} already exists: pass --overwrite to replace it, or --export-dir")
    objective = prepare_objective(meta, run_dir, base, settings, n_trials, workers=args.search_workers,
                                  devices=args.devices, ray=args.ray)
    if meta.strategy == "bit":
        log.info("BiT-HyperRule for %s: %s", base.dataset, bit_summary(meta))
    try:
        journal = Journal.resume(run_dir) if args.resume else Journal.create(run_dir, meta)
    except SearchExistsError as exc:
        raise SearchExistsError(f"{exc} (resume it with `bench search --resume {run_dir}`)") from None

    devices = args.devices.split(",") if args.devices else None
    space_names = list(meta.build_space().names) if meta.strategy != "bit" else bit_columns(meta)
    metric = {"mean_per_class": "mean per-class accuracy"}.get(dataset_metric(meta, base), "top-1")
    status = {"running": ""}

    def render():
        trials = [t for t in journal.trials() if t.state.name != "RUNNING"]
        table = _trial_table(trials, metric, space_names)
        return Group(table, status["running"]) if status["running"] else table

    terminated: list = []

    def on_sigterm(signum, frame):
        # kill, timeout, Slurm and Kubernetes stop jobs with SIGTERM: take the Ctrl-C path,
        # which stops the workers and leaves the journal ready for --resume.
        terminated.append(signum)
        raise Terminated()

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

            runner, strategy = run_search, None
            if is_multi_fidelity(journal.meta.strategy):
                runner, strategy = run_multi_fidelity_search, multi_fidelity_strategy_for(journal.meta)
            result = runner(
                objective, strategy or strategy_for(journal.meta), journal, n_trials=n_trials,
                workers=args.search_workers, devices=devices, backend="ray" if args.ray else "process",
                ray_address=args.ray, on_trial_start=on_start, on_trial_end=on_end,
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print()
    if result.interrupted:
        console.print(f"[yellow]{'terminated' if terminated else 'interrupted'}[/yellow]; resume with: "
                      f"bench search --resume {result.run_dir}")
        return 143 if terminated else 130
    best = result.best
    summary: dict[str, Any] = {"run_dir": str(run_dir), "strategy": meta.strategy,
                               "trials": len(result.trials), "best": None}
    if best is None:
        console.print("[red]no trial completed[/red]; see the journal for the errors")
        return 1
    summary["best"] = {"trial": best.id, "params": best.params, "val": best.value}
    if not settings.get("replay"):
        summary["test"] = finalize_best(best, base, export_dir, args.overwrite, settings, run_dir,
                                        retrain_full=bool(settings.get("retrain_full")), say=console.print)
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
