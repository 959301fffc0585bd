"""``bench train-speed``: training throughput with and without the custom depthwise op.

Runs the same training steps in one process with Paddle's grouped convolution
(``TLBENCH_DEPTHWISE_OP=0``) and with ``harness.models.ops``' ``tl_depthwise_conv2d``,
alternating the two within every repetition, and prints images/s side by side. By default the steps
use a fixed random batch (model compute only); with ``--dataset`` they run
through ``harness.train.fine_tune`` (data loading included, one short epoch).
Warm-up steps are excluded; the median over ``--repeats`` is reported with the
environment it was measured in.
"""

from __future__ import annotations

import argparse
import json

from bench.perf.train_speed import run_benchmark

from ._args import add_dataset_arguments

NAME = "train-speed"
HELP = "training img/s with Paddle's depthwise convolution vs tlbench's CPU op"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``train-speed`` flags."""
    parser.add_argument("--model", default="EfficientNet_Lite0", help="registered model name")
    parser.add_argument("--image-size", type=int, default=128, help="square input size in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=12, help="classifier size for synthetic batches")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repetition")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    add_dataset_arguments(parser, dataset_absent="time harness.train.fine_tune on it instead of synthetic batches")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _validate(args: argparse.Namespace) -> None:
    from common.validate import at_least

    for name in ("image_size", "batch_size", "num_classes", "steps", "repeats"):
        at_least(getattr(args, name), f"--{name.replace('_', '-')}", 1)
    at_least(args.warmup, "--warmup", 0)


def run(args: argparse.Namespace) -> int:
    """Measure both modes and print a table (or JSON with ``--json``)."""
    _validate(args)
    payload = run_benchmark(args)
    results = payload["results"]
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.model} training, {args.image_size}px, batch {args.batch_size}, {payload['data']}")
    table.add_column("depthwise conv")
    table.add_column("median img/s", justify="right")
    table.add_column("runs (img/s)")
    for mode, res in results.items():
        if mode == "speedup":
            continue
        if "error" in res:
            table.add_row(mode, "-", res["error"])
        else:
            table.add_row(mode, f"{res['median']:.1f}", ", ".join(f"{r:.1f}" for r in res["images_per_s"]))
    console = Console()
    console.print(table)
    if "speedup" in results:
        console.print(f"speed-up with the custom op: {results['speedup']:.2f}x")
    console.print(f"environment: {payload['environment']}")
    return 0
