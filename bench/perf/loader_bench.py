"""Data-loader engine: loader img/s per setting and worker count against the training step rate."""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


# The model whose training step rate each row is compared with: the fastest one that a user
# would train at that size is the strictest test of the loader.
TRAIN_MODELS: dict[int, str] = {32: "ResNet18_vd", 64: "ResNet18_vd", 224: "ResNet18_vd"}


def measure_train_rate(model_name: str, crop: int, batch_size: int, steps: int) -> float:
    """Training img/s of ``model_name`` at ``crop`` px on synthetic batches (one warm-up step)."""
    from .train_speed import synthetic_train_step

    step = synthetic_train_step(model_name, crop, batch_size)
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


@dataclass(frozen=True)
class Setting:
    """One benchmark row: a dataset, crop size and transform kind."""

    label: str
    dataset: str
    crop: int
    mode: str  # "train" (random resized crop + flip) or "eval" (resize + center crop)


SETTINGS = (
    Setting("demo", "demo", 32, "train"),
    Setting("demo", "demo", 64, "train"),
    Setting("flowers12", "folder", 224, "train"),
    Setting("flowers12", "folder", 224, "eval"),
)


def _measure(samples, transform, *, batch_size: int, workers: int, images: int, repeats: int) -> list[float]:
    from harness.data import DataLoader

    loader = DataLoader(samples, transform, batch_size=batch_size, shuffle=True, seed=0, workers=workers)
    rates = []
    for rep in range(repeats + 1):  # repetition 0 warms the page cache and is not timed
        loader.set_epoch(rep)
        seen = 0
        start = time.perf_counter()
        for _, labels in loader:
            seen += len(labels)
            if seen >= images:
                break
        elapsed = time.perf_counter() - start
        if rep > 0:
            rates.append(seen / elapsed)
    return rates


def environment() -> dict[str, Any]:
    """The software and hardware the numbers were measured on."""
    import cv2

    import kernels
    from common.machine import machine_facts

    return machine_facts(opencv=cv2.__version__, opencv_threads=cv2.getNumThreads(), preprocess_backend=kernels.backend())


def run_benchmark(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure every setting × worker count; returns one record per row."""
    from harness.data import EvalTransform, TrainTransform, load_dataset
    from harness.preprocess_spec import PreprocessSpec

    rows: list[dict[str, Any]] = []
    cache: dict[str, Optional[Any]] = {}
    train_rates: dict[int, float] = {}
    for setting in SETTINGS:
        if setting.label not in cache:
            if setting.dataset == "demo":
                cache[setting.label] = load_dataset("demo")
            else:
                root = Path(args.flowers_root)
                cache[setting.label] = load_dataset("folder", root) if (root / "train").is_dir() else None
        splits = cache[setting.label]
        if splits is None:
            rows.append({"dataset": setting.label, "crop": setting.crop, "mode": setting.mode,
                         "skipped": f"{args.flowers_root} not found"})
            continue
        spec = PreprocessSpec.for_crop(setting.crop)
        transform = TrainTransform(spec) if setting.mode == "train" else EvalTransform(spec)
        samples = splits.train if setting.mode == "train" else splits.test
        fastest_model = TRAIN_MODELS[setting.crop]
        if setting.crop not in train_rates:
            train_rates[setting.crop] = measure_train_rate(fastest_model, setting.crop, args.batch_size,
                                                           args.train_steps)
        fastest = train_rates[setting.crop]
        rates = {fastest_model: fastest}
        for workers in args.workers:
            measured = _measure(samples, transform, batch_size=args.batch_size, workers=workers,
                                images=args.images, repeats=args.repeats)
            median = statistics.median(measured)
            rows.append({
                "dataset": setting.label, "crop": setting.crop, "mode": setting.mode, "workers": workers,
                "batch_size": args.batch_size, "loader_img_s": median, "runs_img_s": measured,
                "train_rates_img_s": rates, "fastest_model": fastest_model,
                # Share of the training time budget the loader needs if it ran on the same cores.
                "load_share": (fastest / median) if fastest else None,
                "bottleneck": (median < fastest) if fastest else None,
            })
    return rows
