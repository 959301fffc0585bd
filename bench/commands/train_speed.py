"""``bench train-speed``: training throughput with and without the custom depthwise op.

Runs the same training steps in one process with Paddle's grouped convolution
(``TLBENCH_DEPTHWISE_OP=0``) and with ``kernels.paddle_ops``' ``tl_depthwise_conv2d``,
alternating the two within every repetition, and prints images/s side by side. By default the steps
use a fixed random batch (model compute only); with ``--dataset`` they run
through ``harness.train.fine_tune`` (data loading included, one short epoch).
Warm-up steps are excluded; the median over ``--repeats`` is reported with the
environment it was measured in.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

from ._args import add_dataset_arguments

NAME = "train-speed"
HELP = "training img/s with Paddle's depthwise convolution vs tlbench's CPU op"

MODES = {"paddle": "0", "custom": "1"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    from common.errors import ConfigError

    for name in ("image_size", "batch_size", "num_classes", "steps", "repeats"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")


def _set_mode(mode: str) -> None:
    from kernels import paddle_ops

    os.environ[paddle_ops.OPS_ENV] = MODES[mode]


def synthetic_train_step(model_name: str, image_size: int, batch_size: int, num_classes: int = 1000):
    """A callable that runs one Momentum-SGD training step of ``model_name`` on a fixed random batch.

    Each call waits for the step to finish, so wall time around it is the step time.
    """
    import numpy as np
    import paddle

    from harness.models import create_model

    paddle.seed(0)
    model = create_model(model_name, num_classes)
    model.train()
    optimizer = paddle.optimizer.Momentum(learning_rate=1e-3, momentum=0.9, parameters=model.parameters())
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((batch_size, 3, image_size, image_size)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, num_classes, (batch_size,)).astype("int64"))

    def step() -> None:
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss.item())  # waits for the step to finish

    return step


def _synthetic_rates(args: argparse.Namespace, modes: list[str]) -> dict[str, list[float]]:
    step = synthetic_train_step(args.model, args.image_size, args.batch_size, args.num_classes)

    for mode in modes:
        _set_mode(mode)
        for _ in range(args.warmup):
            step()
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    # Modes alternate within each repetition so that load from other processes
    # drifting over time hits both columns alike.
    for _ in range(args.repeats):
        for mode in modes:
            _set_mode(mode)
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[mode].append(args.steps * args.batch_size / (time.perf_counter() - start))
    return rates


def _fine_tune_rates(args: argparse.Namespace, modes: list[str]) -> dict[str, list[float]]:
    from harness.config import TrainConfig
    from harness.train import fine_tune, load_splits

    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="train-speed-") as out_dir:
        cfg = TrainConfig(
            model=args.model, dataset=args.dataset, data_root=args.data_root, image_size=args.image_size,
            batch_size=args.batch_size, epochs=1, max_steps_per_epoch=args.warmup + args.steps,
            threads=args.threads, out_dir=out_dir,
        )
        splits = load_splits(cfg)
        for repeat in range(args.repeats):
            for mode in modes:
                _set_mode(mode)
                seen: list[tuple[float, int]] = []

                def on_step(info, seen=seen) -> None:
                    seen.append((time.perf_counter(), (info.step + 1) * args.batch_size))

                fine_tune(cfg.replace(run_name=f"{mode}-{repeat}"), splits=splits, on_step=on_step)
                # Rate over the steps after warm-up, from the step callbacks' clock.
                (t0, n0), (t1, n1) = seen[max(0, args.warmup - 1)], seen[-1]
                rates[mode].append((n1 - n0) / (t1 - t0) if t1 > t0 else 0.0)
    return rates


def _environment(threads: int | None) -> dict[str, Any]:
    import paddle

    from common.machine import machine_facts

    return machine_facts(paddle=paddle.__version__, threads=threads or os.environ.get("OMP_NUM_THREADS"))


def run(args: argparse.Namespace) -> int:
    _validate(args)
    from harness import runtime
    from kernels import paddle_ops

    runtime.set_paddle_threads(args.threads)
    previous = os.environ.get(paddle_ops.OPS_ENV)
    results: dict[str, Any] = {}
    modes = ["paddle"]
    try:
        paddle_ops.load_ops()
        modes.append("custom")
    except Exception as exc:  # report it, still measure Paddle's op
        results["custom"] = {"error": f"custom op unavailable: {type(exc).__name__}: {exc}"}
    try:
        rates = _fine_tune_rates(args, modes) if args.dataset else _synthetic_rates(args, modes)
    finally:
        if previous is None:
            os.environ.pop(paddle_ops.OPS_ENV, None)
        else:
            os.environ[paddle_ops.OPS_ENV] = previous
    for mode, values in rates.items():
        results[mode] = {"images_per_s": values, "median": statistics.median(values)}
    if "median" in results.get("custom", {}) and results["paddle"]["median"] > 0:
        results["speedup"] = results["custom"]["median"] / results["paddle"]["median"]
    payload = {
        "model": args.model, "image_size": args.image_size, "batch_size": args.batch_size,
        "data": args.dataset or "synthetic", "steps": args.steps, "repeats": args.repeats,
        "results": results, "environment": _environment(args.threads),
    }
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
