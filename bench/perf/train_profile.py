"""Where a training step's time goes: wall-clock phases and Paddle operators grouped by kind.

:func:`profile_train_step` builds the step a trial runs (frozen prefix through oneDNN when
``fast`` and ``freeze`` are set, else the whole model in dygraph), times its phases with
``perf_counter`` (prefix, forward, backward, optimizer), then records a few steps with
``paddle.profiler`` and sums the host time of every operator event by kind (dense
convolution, depthwise convolution, matmul, batch norm, activation, layout, optimizer,
other). Operator events nest (a backward node contains its kernels), so the kinds are taken
from the outermost events only and the shares add up to the profiled operator time.
"""

from __future__ import annotations

import glob
import json
import os
import re
import statistics
import tempfile
import time
from typing import Any, Optional

FAST_TRIALS_ENV = "TLBENCH_FAST_TRIALS"

# Operator name fragments (lower case) → kind, first match wins.
OP_KINDS = (
    ("depthwise", "depthwise convolution"),
    ("conv2d", "dense convolution"),
    ("matmul", "matmul (1x1 convolution)"),
    ("batch_norm", "batch norm"),
    ("batchnorm", "batch norm"),
    ("relu", "activation"),
    ("momentum", "optimizer"),
    ("reshape", "layout"),
    ("transpose", "layout"),
    ("pool", "pooling"),
)


def op_kind(name: str) -> str:
    """The kind of a profiler operator event (``"conv2d dygraph"``, ``"Global_Conv2dGradNodeFinal"``...)."""
    lowered = name.lower()
    for fragment, kind in OP_KINDS:
        if fragment in lowered:
            return kind
    return "other"


def _outermost_operator_time(events: list[dict[str, Any]]) -> dict[str, float]:
    ops = sorted((e for e in events if e.get("cat") == "Operator" and "dur" in e), key=lambda e: (e["ts"], -e["dur"]))
    totals: dict[str, float] = {}
    end_of_current = -1.0
    for event in ops:
        if event["ts"] < end_of_current:
            continue  # nested inside the previous outermost operator
        end_of_current = event["ts"] + event["dur"]
        name = re.sub(r"\[[^\]]*\]$", "", event["name"]).strip()
        kind = op_kind(name)
        totals[kind] = totals.get(kind, 0.0) + event["dur"] / 1000.0
    return totals


def profile_train_step(model_name: str, image_size: int, *, batch_size: int = 32, freeze: int = 0,
                       threads: Optional[int] = None, fast: bool = True, steps: int = 5, warmup: int = 2,
                       pretrained: Optional[str] = None, num_classes: int = 12, seed: int = 0) -> dict[str, Any]:
    """Phase times (median over ``steps``) and operator time by kind for one training step."""
    import numpy as np
    import paddle
    import paddle.profiler as profiler

    from harness import runtime
    from harness.models import create_model, freeze_stages

    # The variable's name is spelled out so that this module also profiles older installations
    # (run with their Python, fast=False), which ignore it.
    previous = os.environ.get(FAST_TRIALS_ENV)
    os.environ[FAST_TRIALS_ENV] = "1" if fast else "0"
    try:
        threads = runtime.set_paddle_threads(threads)
        paddle.seed(seed)
        model = create_model(model_name, num_classes, pretrained=pretrained)
        if freeze:
            freeze_stages(model, freeze)
        model.train()
        prefix = None
        if fast and freeze:
            from harness.prefix import frozen_prefix

            prefix = frozen_prefix(model, freeze, image_size, threads=threads)
        trainable = [p for p in model.parameters() if not p.stop_gradient]
        optimizer = paddle.optimizer.Momentum(learning_rate=1e-3, momentum=0.9, parameters=trainable,
                                              weight_decay=paddle.regularizer.L2Decay(1e-4))
        rng = np.random.default_rng(seed)
        images = rng.standard_normal((batch_size, 3, image_size, image_size)).astype(np.float32)
        labels = paddle.to_tensor(rng.integers(0, num_classes, (batch_size,)).astype(np.int64))

        def step() -> dict[str, float]:
            t0 = time.perf_counter()
            if prefix is not None:
                x = paddle.to_tensor(prefix(images))
                t1 = time.perf_counter()
                logits = model.forward_suffix(x, freeze)
            else:
                t1 = t0
                logits = model(paddle.to_tensor(images))
            loss = paddle.nn.functional.cross_entropy(logits, labels)
            float(loss.item())
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            optimizer.step()
            optimizer.clear_grad()
            t4 = time.perf_counter()
            return {"prefix_ms": (t1 - t0) * 1e3, "forward_ms": (t2 - t1) * 1e3, "backward_ms": (t3 - t2) * 1e3,
                    "optimizer_ms": (t4 - t3) * 1e3}

        for _ in range(warmup):
            step()
        phases = [step() for _ in range(steps)]
        median = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
        step_ms = statistics.median(sum(p.values()) for p in phases)
        with tempfile.TemporaryDirectory(prefix="train-profile-") as trace_dir:
            prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU],
                                     on_trace_ready=profiler.export_chrome_tracing(trace_dir))
            prof.start()
            for _ in range(steps):
                step()
                prof.step()
            prof.stop()
            trace_file = sorted(glob.glob(os.path.join(trace_dir, "*.json")))[-1]
            with open(trace_file, encoding="utf-8") as f:
                trace = json.load(f)
        events = trace["traceEvents"] if isinstance(trace, dict) else trace
        kinds = {k: v / steps for k, v in _outermost_operator_time(events).items()}
        total = sum(kinds.values()) or 1.0
        return {
            "model": model_name, "image_size": image_size, "batch_size": batch_size, "freeze": freeze,
            "threads": threads, "fast": fast, "steps": steps, "pretrained": pretrained,
            "step_ms": step_ms, "images_per_s": batch_size / step_ms * 1e3, "phases_ms": median,
            "operators_ms": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
            "operators_share": {k: v / total for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        }
    finally:
        if previous is None:
            os.environ.pop(FAST_TRIALS_ENV, None)
        else:
            os.environ[FAST_TRIALS_ENV] = previous
