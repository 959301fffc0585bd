"""Exported-evaluation engine: harness.evaluate against a naive cv2/numpy loop, one batch at a time."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.paths import BENCHMARK_DATASET
from common.errors import ConfigError

# Without --dataset/--data-root: the benchmark image set as a folder dataset.
DEFAULT_DATASET = "folder"


def naive_preprocess(path: str, resize_short: int, crop: int, mean: np.ndarray, std: np.ndarray, scale: float) -> np.ndarray:
    """One image the way PaddleClas's deploy ops do it: cv2 read, BGR→RGB, numpy ops, CHW float32."""
    import cv2

    from bench.perf.baseline import baseline_preprocess

    img = cv2.imread(path)
    if img is None:
        raise ConfigError(f"cv2.imread could not read {path}")
    return baseline_preprocess(img[:, :, ::-1], resize_short, crop, mean, std, scale)


def naive_loop(predictor: Any, paths: Sequence[str], batch_size: int) -> tuple[np.ndarray, float]:
    """Logits of ``paths`` through the naive loop and its wall time in seconds."""
    spec = predictor.spec
    mean = np.asarray(spec.mean, np.float32).reshape(1, 1, 3)
    std = np.asarray(spec.std, np.float32).reshape(1, 1, 3)
    outputs = []
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        batch = np.array([naive_preprocess(p, spec.resize_short, spec.crop_size, mean, std, spec.scale)
                          for p in paths[i : i + batch_size]])
        outputs.append(predictor.predict(batch))
    return np.concatenate(outputs), time.perf_counter() - start


def build_random_export(arch: str, image_size: int, classes: Sequence[str], workdir: Path) -> Path:
    """Export a randomly initialised ``arch`` for ``classes`` into ``workdir`` and return its directory."""
    import paddle

    from harness.config import TrainConfig
    from harness.export import export
    from harness.models import create_model
    from harness.results import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME

    run_dir = workdir / f"{arch}_random"
    run_dir.mkdir(parents=True)
    paddle.seed(0)
    model = create_model(arch, len(classes))
    paddle.save(model.state_dict(), str(run_dir / CHECKPOINT_NAME))
    TrainConfig(model=arch, dataset="folder", image_size=image_size, epochs=1).write_yaml(run_dir / CONFIG_NAME)
    (run_dir / METRICS_NAME).write_text(json.dumps({"classes": list(classes), "history": [], "val": {}, "metric": "top1"}))
    return export(run_dir, workdir / "export").model_dir


def environment(predictor: Any) -> dict[str, Any]:
    """Machine facts plus the predictor's description (backend, precision, model, Paddle)."""
    import kernels

    from common.machine import machine_facts

    return machine_facts(kernels_backend=kernels.backend(), **predictor.describe())


def run_benchmark(args: argparse.Namespace, options: Any) -> dict[str, Any]:
    """Time ``evaluate`` and the naive loop ``args.repeats`` times on one split with a predictor of
    ``options`` (a ``PredictorOptions``); returns the record."""
    from harness.data import load_dataset
    from harness.evaluate import evaluate
    from harness.predictor import Predictor

    dataset, data_root = args.dataset or DEFAULT_DATASET, args.data_root or str(BENCHMARK_DATASET)
    splits = load_dataset(dataset, data_root)
    samples = list(splits.split(args.split))[: args.limit or None]
    if not samples:
        raise ConfigError(f"split {args.split!r} of {data_root} is empty")
    with tempfile.TemporaryDirectory(prefix="tlbench-eval-bench-") as tmp:
        model_dir = Path(args.model) if args.model else build_random_export(args.arch, args.image_size, splits.classes, Path(tmp))
        predictor = Predictor(model_dir, options)
        predictor.warmup()
        paths = [s.path for s in samples]
        ours_ips, naive_ips, ours, naive_logits = [], [], None, None
        ours_wait, ours_infer = [], []
        for _ in range(args.repeats):
            ours = evaluate(predictor, samples, splits.classes, batch_size=args.batch_size, workers=args.workers,
                            warmup=False)
            ours_ips.append(ours.images_per_sec)
            ours_wait.append(ours.input_wait_s)
            ours_infer.append(ours.inference_s)
            naive_logits, naive_s = naive_loop(predictor, paths, args.batch_size)
            naive_ips.append(len(paths) / naive_s)
        if ours.num_skipped:
            raise ConfigError(f"{ours.num_skipped} unreadable image(s) in the split; the pipelines would not see the same images")
        agree = float(np.mean(np.argmax(ours.logits, 1) == np.argmax(naive_logits, 1)))
        record = {
            "model_dir": str(model_dir) if args.model else f"(random-init {args.arch}, {args.image_size} px)",
            "dataset": dataset, "data_root": data_root, "split": args.split, "num_images": len(paths),
            "batch_size": args.batch_size, "workers": args.workers, "repeats": args.repeats,
            "ours_images_per_sec": float(np.median(ours_ips)), "naive_images_per_sec": float(np.median(naive_ips)),
            "ours_runs": ours_ips, "naive_runs": naive_ips,
            "ours_input_wait_s": float(np.median(ours_wait)), "ours_inference_s": float(np.median(ours_infer)),
            "image_size": int(predictor.spec.crop_size), "argmax_agreement": agree, "ours_top1": ours.top1,
            "naive_top1": float(np.mean(np.argmax(naive_logits, 1) == ours.labels)),
            "environment": environment(predictor),
        }
        record["ratio"] = record["ours_images_per_sec"] / record["naive_images_per_sec"]
    return record
