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
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ConfigError
from common.machine import machine_facts

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
    from harness.evaluate import evaluate
    from harness.export import export, resolve_run
    from harness.predictor import Predictor, PredictorOptions, check_backend
    from harness.quantize import quantize_int8
    from harness.train import load_splits

    from bench.perf.quick import quick_measurement

    precisions = _precisions(args.precisions)
    for flag, value in (("--batch-size", args.batch_size), ("--repeats", args.repeats),
                        ("--calibration-images", args.calibration_images)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if not args.duration > 0:
        raise ConfigError(f"--duration must be > 0, got {args.duration}")
    for precision in precisions:
        check_backend("cpu", precision)  # one clear line (e.g. no AVX512-BF16) before any work
    result = resolve_run(args.run)
    splits = load_splits(result.config)
    samples = list(splits.split(args.split))[: args.limit]
    if not samples:
        raise ConfigError(f"split {args.split!r} of the run's dataset {result.config.dataset!r} is empty")

    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        models: dict[str, Any] = {}
        if "fp32" in precisions or "bf16" in precisions:  # bf16 runs the float32 export
            models["fp32"] = export(result, work / "fp32", overwrite=True)
        quant: dict[str, Any] = {}
        if "int8" in precisions:
            models["int8"] = quantize_int8(result, work / "int8", overwrite=True, min_agreement=0.0,
                                           num_calibration=args.calibration_images, algo=args.calibration_algo,
                                           threads=args.threads, splits=splits)
            quant = dict(models["int8"].manifest["quantization"])
        model_for = {p: models["int8" if p == "int8" else "fp32"] for p in precisions}

        rows: dict[str, dict[str, Any]] = {}
        reference = None
        for precision in precisions:
            predictor = Predictor(model_for[precision], PredictorOptions(
                backend="cpu", precision=precision, batch_size=args.batch_size, threads=args.threads))
            ev = evaluate(predictor, samples, splits.classes, batch_size=args.batch_size)
            top = ev.logits.argmax(1)
            if precision == "fp32":
                reference = top
            rows[precision] = {"top1": ev.top1, "mean_per_class": ev.mean_per_class, "num_images": ev.num_images,
                               "agreement_with_fp32": None if reference is None else float(np.mean(top == reference)),
                               "eval_img_per_s": ev.images_per_sec}
            del predictor

        speed: dict[str, dict[int, list[dict[str, float]]]] = {p: {b: [] for b in args.latency_batches} for p in precisions}
        for _ in range(args.repeats):
            for batch in args.latency_batches:
                for precision in precisions:
                    speed[precision][batch].append(quick_measurement(
                        model_for[precision].model_dir, batch_size=batch, duration_s=args.duration,
                        backend="cpu", precision=precision, threads=args.threads))
    for precision in precisions:
        for batch in args.latency_batches:
            runs = speed[precision][batch]
            rows[precision][f"b{batch}"] = {
                "latency_p50_ms": statistics.median(r["latency_p50_ms"] for r in runs),
                "img_per_s": statistics.median(r["img_per_s"] for r in runs),
                "rounds": len(runs),
            }
    if "fp32" in precisions:
        for precision in precisions:
            for batch in args.latency_batches:
                cell = rows[precision][f"b{batch}"]
                cell["speedup_vs_fp32"] = cell["img_per_s"] / rows["fp32"][f"b{batch}"]["img_per_s"]
    record = {
        "run": str(result.run_dir), "model": result.config.model, "image_size": result.preprocess.crop_size,
        "dataset": result.config.dataset, "split": args.split, "precisions": rows, "quantization": quant,
        "latency_batches": list(args.latency_batches), "duration_s": args.duration, "repeats": args.repeats,
        "threads": args.threads, "environment": machine_facts(),
    }
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
