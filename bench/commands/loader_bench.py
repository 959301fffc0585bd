"""``bench loader-bench``: is data loading fast enough to keep training fed?

Measures the loader's img/s (decode + augmentation + batching, in worker threads) at
the demo settings and at 224 px on flowers12, with 1 and 2 workers, and compares it
with the training step rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json

from bench.paths import BENCHMARK_DATASET
from bench.perf.loader_bench import TRAIN_MODELS, environment, run_benchmark
from common.errors import ConfigError
from common.validate import at_least

NAME = "loader-bench"
HELP = "measure data-loader img/s against the training step rate (is loading the bottleneck?)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``loader-bench`` flags."""
    parser.add_argument("--flowers-root", default=str(BENCHMARK_DATASET),
                        help="flowers12 image folders (train/ and test/) for the 224-px rows")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker thread counts to compare")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--train-steps", type=int, default=3,
                        help="timed training steps per size for the step-rate column (default 3)")
    parser.add_argument("--images", type=int, default=320, help="images loaded per repetition")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per row (median reported)")
    parser.add_argument("--json", action="store_true", help="print results as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print a rich table (or JSON with ``--json``)."""
    for name in ("batch_size", "images", "repeats", "train_steps"):
        at_least(getattr(args, name), f"--{name.replace('_', '-')}", 1)
    if any(w < 1 for w in args.workers):
        raise ConfigError(f"--workers must all be >= 1, got {args.workers}")
    rows = run_benchmark(args)
    env = environment()
    if args.json:
        print(json.dumps({"environment": env, "results": rows}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Data loader throughput vs training step rate")
    for col, right in (("dataset", False), ("px", True), ("transform", False), ("workers", True),
                       ("loader img/s", True), ("train img/s", True), ("model", False), ("load %", True),
                       ("bottleneck", False)):
        table.add_column(col, justify="right" if right else "left")
    for r in rows:
        if "skipped" in r:
            table.add_row(r["dataset"], str(r["crop"]), r["mode"], "-", "-", "-", "-", "-", f"skipped: {r['skipped']}")
            continue
        model = r["fastest_model"]
        train = f"{r['train_rates_img_s'][model]:.1f}" if model else "-"
        verdict = "-" if r["bottleneck"] is None else ("[red]yes[/red]" if r["bottleneck"] else "[green]no[/green]")
        share = f"{100 * r['load_share']:.1f}" if r["load_share"] is not None else "-"
        table.add_row(r["dataset"], str(r["crop"]), r["mode"], str(r["workers"]), f"{r['loader_img_s']:.0f}",
                      train, model or "-", share, verdict)
    console = Console()
    console.print(table)
    console.print(
        f"batch {args.batch_size}, {args.images} images × {args.repeats} runs (median); "
        f"{env['cpu_logical']} CPUs, OpenCV {env['opencv']}, numpy {env['numpy_version']}, preprocess {env['preprocess_backend']}. "
        f"Train img/s: {', '.join(sorted(set(TRAIN_MODELS.values())))} training steps on synthetic batches, "
        "measured in this run on the same cores. "
        "load % = train img/s / loader img/s: the share of the step time loading would cost on the same cores."
    )
    return 0
