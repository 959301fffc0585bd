"""int8 engine: a run's float32, bf16 and int8 exports evaluated and timed side by side on CPU."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.errors import ConfigError
from common.machine import machine_facts

def run_benchmark(args: argparse.Namespace, precisions: Sequence[str]) -> dict[str, Any]:
    """Export and quantize the run, evaluate and time each of ``precisions``; returns the record."""
    from harness.evaluate import evaluate
    from harness.export import export, resolve_run
    from harness.predictor import Predictor, PredictorOptions, check_backend
    from harness.quantize import quantize_int8
    from harness.train import load_splits

    from bench.perf.quick import quick_measurement

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
    return record
