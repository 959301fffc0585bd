"""Training-speed engine: img/s of a training step with Paddle's depthwise convolution vs tlbench's CPU op."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any


MODES = {"paddle": "0", "custom": "1"}


def _set_mode(mode: str) -> None:
    from harness.models import ops as paddle_ops

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


def environment(threads: int | None) -> dict[str, Any]:
    """Machine facts plus Paddle's version and the thread count used."""
    import paddle

    from common.machine import machine_facts

    return machine_facts(paddle=paddle.__version__, threads=threads or os.environ.get("OMP_NUM_THREADS"))


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measure training img/s with Paddle's depthwise op and with ours; returns the JSON payload."""
    from harness import runtime
    from harness.models import ops as paddle_ops

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
        "results": results, "environment": environment(args.threads),
    }
    return payload
