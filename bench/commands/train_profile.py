"""``bench train-profile``: where one training step's time goes, by phase and by operator kind."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "train-profile"
HELP = "break a training step down: prefix/forward/backward/optimizer and Paddle operators by kind"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="EfficientNet_Lite0", help="registered model name (EfficientNet_Lite0)")
    parser.add_argument("--pretrained", default=None, help="weights to start from (e.g. imagenet; default none)")
    parser.add_argument("--image-size", type=int, default=96, help="square input size in pixels (96)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (32)")
    parser.add_argument("--freeze", type=int, default=0, help="frozen groups, as TrainConfig.freeze (0)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--steps", type=int, default=5, help="timed and profiled steps (5)")
    parser.add_argument("--no-fast", dest="fast", action="store_false",
                        help="the whole model in dygraph (as TLBENCH_FAST_TRIALS=0)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from common.machine import machine_facts
    from common.validate import at_least

    for name in ("image_size", "batch_size", "steps"):
        at_least(getattr(args, name), f"--{name.replace('_', '-')}", 1)
    at_least(args.freeze, "--freeze", 0)
    from bench.perf.train_profile import profile_train_step

    result = profile_train_step(args.model, args.image_size, batch_size=args.batch_size, freeze=args.freeze,
                                threads=args.threads, fast=args.fast, steps=args.steps, pretrained=args.pretrained)
    result["environment"] = machine_facts()
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    title = (f"{args.model} {args.image_size}px batch {args.batch_size} freeze {args.freeze}, "
             f"{result['threads']} threads: {result['step_ms']:.0f} ms/step, {result['images_per_s']:.1f} img/s")
    table = Table(title=title)
    table.add_column("operator kind")
    table.add_column("ms/step", justify="right")
    table.add_column("share", justify="right")
    for kind, ms in result["operators_ms"].items():
        table.add_row(kind, f"{ms:.1f}", f"{result['operators_share'][kind]:.0%}")
    console = Console()
    console.print(table)
    console.print("phases (median ms): " + ", ".join(f"{k[:-3]} {v:.1f}" for k, v in result["phases_ms"].items()))
    return 0
