"""``bench int8-bench``: float32, bfloat16 and int8 of one training run, side by side on CPU.

From a training run it makes the float32 export and the int8 export (post-training
calibration, :func:`harness.quantize.quantize_int8`), then in one process

- evaluates every precision on the same split (top-1, mean per-class accuracy, agreement
  of the top-1 class with float32, end-to-end img/s through :func:`harness.evaluate.evaluate`);
- measures model-only latency and throughput at each ``--latency-batches`` size, the
  precisions taking turns for ``--repeats`` rounds (the machine's noise hits all of them),
  and reports the medians and the speed-up over float32.

This is a benchmark, not a test: it prints what it measured and writes ``int8_bench.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.perf.int8_bench import run_benchmark
from common.errors import ConfigError
from common.validate import at_least

from .throughput import _int_list

NAME = "int8-bench"
HELP = "accuracy and speed of a run's float32, bf16 and int8 exports on CPU, side by side"
RESULT_FILE = "int8_bench.json"
PRECISIONS = ("fp32", "bf16", "int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench int8-bench``."""
    from harness.quantize import ALGOS, DEFAULT_ALGO, DEFAULT_CALIBRATION_IMAGES

    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="training run directory (from bench train)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="split of the run's dataset to evaluate (default test)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of the split")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help="comma-separated subset of fp32,bf16,int8 (default all; bf16 needs AVX512-BF16)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of the evaluation (default 8)")
    parser.add_argument("--latency-batches", type=_int_list("--latency-batches"), default=(1, 8), metavar="B1,B2",
                        help="batch sizes of the model-only measurement (default 1,8)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the measurement; medians reported (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of every predictor (default: all cores)")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        help=f"training images to calibrate int8 on (default {DEFAULT_CALIBRATION_IMAGES})")
    parser.add_argument("--calibration-algo", default=DEFAULT_ALGO, choices=ALGOS,
                        help=f"int8 activation-scale algorithm (default {DEFAULT_ALGO})")
    parser.add_argument("--work-dir", default=None, help="keep the two exports here (default: a temporary folder)")
    parser.add_argument("--out-dir", default=None, help=f"also write {RESULT_FILE} here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _precisions(text: str) -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PRECISIONS]
    if not chosen or unknown:
        raise ConfigError(f"--precisions takes a comma-separated subset of {','.join(PRECISIONS)}, got {text!r}")
    # float32 first: it is the reference of the agreement column.
    return tuple(p for p in PRECISIONS if p in chosen)


def run(args: argparse.Namespace) -> int:
    """Export, quantize, evaluate and time every precision; print a table (or JSON)."""
    precisions = _precisions(args.precisions)
    for flag, value in (("--batch-size", args.batch_size), ("--repeats", args.repeats),
                        ("--calibration-images", args.calibration_images)):
        at_least(value, flag, 1)
    if args.limit is not None:
        at_least(args.limit, "--limit", 1)
    if not args.duration > 0:
        raise ConfigError(f"--duration must be > 0, got {args.duration}")
    record = run_benchmark(args, precisions)
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    _print_table(record, args)
    return 0


def _print_table(record: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = record["precisions"]
    n = next(iter(rows.values()))["num_images"]
    table = Table(title=f"{record['model']} @ {record['image_size']} px on {record['dataset']}/{record['split']} "
                        f"({n} images), CPU, medians of {record['repeats']} rounds", title_justify="left")
    for column in ("precision", "top-1", "agree", "eval img/s"):
        table.add_column(column, justify="right" if column != "precision" else "left")
    for batch in record["latency_batches"]:
        table.add_column(f"b{batch} ms", justify="right")
        table.add_column(f"b{batch} ×fp32", justify="right")
    for precision, row in rows.items():
        agree = row["agreement_with_fp32"]
        cells = [precision, f"{row['top1']:.4f}", "-" if agree is None else f"{agree:.1%}", f"{row['eval_img_per_s']:.0f}"]
        for batch in record["latency_batches"]:
            cell = row[f"b{batch}"]
            cells += [f"{cell['latency_p50_ms']:.2f}", f"{cell['speedup_vs_fp32']:.2f}" if "speedup_vs_fp32" in cell else "-"]
        table.add_row(*cells)
    console = Console()
    console.print(table)
    console.print("agree: share of images with float32's top-1 class; eval img/s: end to end (decode, preprocess, "
                  "inference); bN ms: model-only p50 latency of a batch of N; ×fp32: its img/s over float32's")
    if record["quantization"]:
        q = record["quantization"]
        console.print(f"int8: {q['algo']} calibration on {q['calibration_images']} training images in "
                      f"{q['calibration_seconds']} s")
    if args.out_dir:
        console.print(f"wrote {Path(args.out_dir) / RESULT_FILE}")
