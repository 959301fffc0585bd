"""``bench trial-speed``: search trials timed with this code and with a baseline, side by side."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ._args import add_dataset_arguments

NAME = "trial-speed"
HELP = "time search trials with this code and with a baseline installation (speed-up, val top-1, img/s)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bench.paths import BENCHMARK_DATASET

    add_dataset_arguments(parser, dataset_absent="default folder", data_root_absent=f"default {BENCHMARK_DATASET}")
    parser.add_argument("--baseline-bench", metavar="PATH",
                        help="`bench` of the baseline installation, e.g. a git worktree of an older commit with "
                             "its own venv (default: this code with TLBENCH_FAST_TRIALS=0)")
    parser.add_argument("--points", choices=["corners", "fixed"], default="corners",
                        help="corners: lr {0.1, 0.0001} x mixup {on, off}; fixed: lr 0.003 only (corners)")
    parser.add_argument("--recipe", choices=["reference", "none"], default="reference",
                        help="reference: Lite0 from ImageNet weights, 96 px, 8 epochs, --freeze 4, --val-fraction "
                             "0.2, no latency measurement; none: only the flags after --flags (reference)")
    parser.add_argument("--flags", nargs=argparse.REMAINDER, default=[],
                        help="further `bench search` flags for both runs, after the recipe's (they win)")
    parser.add_argument("--order", choices=["baseline-first", "new-first", "abba"], default="abba",
                        help="order of the timed searches; abba runs baseline, new, new, baseline and times each "
                             "trial as the mean of its two passes, so a linear drift of the machine's speed "
                             "costs both sides alike (abba)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[], metavar="SEED",
                        help="train every point with each of these training seeds and compare val top-1 by its "
                             "mean over the seeds (per point: both means, SDs, |difference| and its standard "
                             "error); default: the recipe's seed only")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="skip the untimed one-step trial per side that builds its native op first")
    parser.add_argument("--baseline-runs", nargs="+", metavar="DIR", default=None,
                        help="run nothing: compare finished searches instead, these for the baseline (with "
                             "--new-runs); trials pair by their parameters and training seed")
    parser.add_argument("--new-runs", nargs="+", metavar="DIR", default=None,
                        help="the finished searches of this code, with --baseline-runs")
    parser.add_argument("--out-dir", help="keep both searches and trial_speed.json here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def run(args: argparse.Namespace) -> int:
    from bench.paths import BENCHMARK_DATASET
    from bench.perf.trial_speed import REFERENCE_RECIPE, TrialSpeedConfig, compare_runs, compare_trials
    from common.errors import ConfigError

    dataset = args.dataset or "folder"
    data_root = args.data_root or (str(BENCHMARK_DATASET) if args.dataset is None else None)
    out_dir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="trial-speed-"))
    if (args.baseline_runs is None) != (args.new_runs is None):
        raise ConfigError("--baseline-runs and --new-runs go together: the finished searches of both sides")
    if args.baseline_runs is not None:
        result = compare_runs(args.baseline_runs, args.new_runs)
    else:
        recipe = (list(REFERENCE_RECIPE) if args.recipe == "reference" else []) + list(args.flags)
        result = compare_trials(TrialSpeedConfig(
            dataset=dataset, data_root=data_root, out_dir=out_dir, points=args.points, recipe=recipe,
            baseline_bench=args.baseline_bench, order=args.order, warm_up=args.warm_up, seeds=tuple(args.seeds),
        ))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "trial_speed.json").write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"search trials: {result['baseline']} vs this code")
    for col in ("point", "baseline s", "new s", "speed-up", "baseline val", "new val", "|Δ| pts",
                "train img/s before → after"):
        table.add_column(col, justify="left" if col == "point" else "right")
    for r in result["rows"]:
        table.add_row(
            ", ".join(f"{k}={v}" for k, v in r["params"].items()), f"{r['baseline_s']:.1f}", f"{r['new_s']:.1f}",
            f"{r['speedup']:.2f}x", f"{r['baseline_val_top1']:.4f}", f"{r['new_val_top1']:.4f}",
            f"{r['abs_diff_points']:.2f}",
            f"{r['baseline_train_images_per_s']:.1f} → {r['new_train_images_per_s']:.1f}",
        )
    console = Console()
    console.print(table)
    console.print(f"median speed-up {result['median_speedup']:.2f}x, total {result['total_speedup']:.2f}x; "
                  f"mean |Δ val top-1| {result['mean_abs_diff_points']:.2f} points; written {out_dir / 'trial_speed.json'}")
    if args.baseline_runs is not None:
        console.print("[yellow]times come from searches run separately, not side by side: compare accuracy here, "
                      "and speed with a run of both sides[/yellow]")
    if "seed_means" in result:
        for p in result["seed_means"]["points"]:
            se = "" if p["se_diff_points"] is None else f" (standard error {p['se_diff_points']:.2f})"
            console.print(f"  {p['params']}: val top-1 mean over seeds {p['seeds']}: {p['mean_baseline']:.4f} → "
                          f"{p['mean_new']:.4f}, |Δ| {p['abs_diff_points']:.2f} points{se}")
        console.print(f"mean |Δ| of seed means over the points: {result['seed_means']['mean_abs_diff_points']:.2f} points")
    for i, p in enumerate(result.get("per_pass", []), 1):
        console.print(f"  pass {i} alone: median speed-up {p['median_speedup']:.2f}x, total {p['total_speedup']:.2f}x")
    console.print(f"environment: {result['environment']}")
    return 0
