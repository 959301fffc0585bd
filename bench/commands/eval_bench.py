"""``bench eval-bench``: our exported evaluation vs the naive PaddleClas-style loop, in one run.

Both pipelines run the same Paddle Inference predictor on the same images; only the
input path differs:

- ours: :func:`harness.evaluate.evaluate` (worker threads decode and preprocess batch
  k+1 with :func:`kernels.preprocess` while the predictor runs batch k);
- naive: what PaddleClas's ``predict_cls.py`` does, one batch at a time on one thread:
  ``cv2.imread`` → BGR→RGB → resize short side → center crop → ``(x * scale - mean) / std``
  → HWC→CHW in numpy, ``np.array`` of the batch, ``copy_from_cpu`` → ``run`` → ``copy_to_cpu``.

Without ``--model`` a randomly initialised ResNet50_vd is exported first (the speed of a
ResNet50_vd does not depend on its weights). This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.errors import ConfigError

from bench.paths import BENCHMARK_DATASET

from ._args import add_dataset_arguments
from .eval import add_predictor_arguments, predictor_options

NAME = "eval-bench"
HELP = "benchmark exported evaluation: our pipeline vs the naive cv2/numpy loop (img/s and ratio)"
# Without --dataset/--data-root: the benchmark image set as a folder dataset.
DEFAULT_DATASET = "folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench eval-bench``."""
    parser.add_argument("--model", default=None, help="export directory; default: export a random-init ResNet50_vd first")
    parser.add_argument("--arch", default="ResNet50_vd", help="model built when --model is not given (default ResNet50_vd)")
    parser.add_argument("--image-size", type=int, default=224, help="input size of the built model (default 224)")
    add_dataset_arguments(parser, dataset_absent=f"default {DEFAULT_DATASET}",
                          data_root_absent=f"default {BENCHMARK_DATASET}")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default test)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images of the split")
    parser.add_argument("--workers", type=int, default=2, help="decode/preprocess threads of our pipeline (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two pipelines this many times; medians reported")
    parser.add_argument("--out-dir", default=None, help="also write eval_bench.json here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_predictor_arguments(parser)


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


def _build_random_export(arch: str, image_size: int, classes: Sequence[str], workdir: Path) -> Path:
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


def _environment(predictor: Any) -> dict[str, Any]:
    import kernels

    from common.machine import machine_facts

    return machine_facts(kernels_backend=kernels.backend(), **predictor.describe())


def run(args: argparse.Namespace) -> int:
    """Run both pipelines, check they agree, print img/s and the ratio."""
    from harness.data import load_dataset
    from harness.evaluate import evaluate
    from harness.predictor import Predictor

    for flag, value in (("--limit", args.limit), ("--repeats", args.repeats), ("--workers", args.workers),
                        ("--image-size", args.image_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    dataset, data_root = args.dataset or DEFAULT_DATASET, args.data_root or str(BENCHMARK_DATASET)
    splits = load_dataset(dataset, data_root)
    samples = list(splits.split(args.split))[: args.limit or None]
    if not samples:
        raise ConfigError(f"split {args.split!r} of {data_root} is empty")
    with tempfile.TemporaryDirectory(prefix="tlbench-eval-bench-") as tmp:
        model_dir = Path(args.model) if args.model else _build_random_export(args.arch, args.image_size, splits.classes, Path(tmp))
        predictor = Predictor(model_dir, predictor_options(args))
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
            "argmax_agreement": agree, "ours_top1": ours.top1,
            "naive_top1": float(np.mean(np.argmax(naive_logits, 1) == ours.labels)),
            "environment": _environment(predictor),
        }
        record["ratio"] = record["ours_images_per_sec"] / record["naive_images_per_sec"]
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_bench.json").write_text(json.dumps(record, indent=2) + "\n")
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    env = record["environment"]
    table = Table(title=f"exported evaluation, {env['model_name']} @ {predictor.spec.crop_size} px, {len(paths)} images, "
                        f"{env['backend']}/{env['precision']}, batch {args.batch_size}", title_justify="left")
    table.add_column("pipeline")
    table.add_column("img/s", justify="right")
    table.add_column("top-1", justify="right")
    table.add_row(f"ours (evaluate, {args.workers} workers, {env['kernels_backend']} preprocessing)",
                  f"{record['ours_images_per_sec']:.1f}", f"{record['ours_top1']:.4f}")
    table.add_row("naive (cv2 + numpy, one batch at a time)", f"{record['naive_images_per_sec']:.1f}",
                  f"{record['naive_top1']:.4f}")
    console = Console()
    console.print(table)
    console.print(f"ratio ours / naive: [bold]{record['ratio']:.2f}x[/bold]; same argmax on {agree:.1%} of images; "
                  f"{env['cpu_model']}, {env['cpu_cores']} cores, Paddle {env['paddle_version']}")
    return 0
