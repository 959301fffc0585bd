"""Analytic objectives with a known optimum, for tests, examples and dry runs (no training).

:func:`analytic_value` is a smooth function of ``log10(lr)`` and ``log10(l2_decay)`` with
boolean bonuses; on the seed's grid its maximum, 0.91, is at lr=0.01, l2_decay=3e-5,
label_smoothing=True, mixup=False.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any, Optional

from common.errors import TlbenchError

from .space import point_key

ANALYTIC_OPTIMUM = {"lr": 0.01, "l2_decay": 3e-5, "label_smoothing": True, "mixup": False}


def analytic_value(params: Mapping[str, Any]) -> float:
    """Peaked "accuracy" in (0, 0.91]: best at :data:`ANALYTIC_OPTIMUM`."""
    x = math.log10(float(params["lr"])) - math.log10(0.01)
    y = math.log10(max(float(params["l2_decay"]), 1e-8)) - math.log10(3e-5)
    value = 0.9 - 0.08 * x * x - 0.03 * y * y + 0.004 * x * y
    value += 0.01 * bool(params.get("label_smoothing", False)) - 0.005 * bool(params.get("mixup", False))
    return max(value, 0.01)


class AnalyticObjective:
    """Picklable objective around :func:`analytic_value`.

    ``sleep_s`` makes each trial take that long (to test interruption); ``fail_on`` is a list of
    points that raise ``RuntimeError``; metrics include a synthetic ``latency_p99_ms`` that grows
    with the learning rate's exponent so reports have a trade-off to plot. ``record_context`` adds
    the trial context (worker slot, device, process id) to the metrics. ``crash_on`` points end
    the process at once (``os._exit``), like a worker killed for memory.
    """

    def __init__(self, sleep_s: float = 0.0, fail_on: Optional[list[Mapping[str, Any]]] = None,
                 record_context: bool = False, crash_on: Optional[list[Mapping[str, Any]]] = None) -> None:
        self.sleep_s = float(sleep_s)
        self._fail = {point_key(p) for p in (fail_on or [])}
        self._crash = {point_key(p) for p in (crash_on or [])}
        self.record_context = record_context

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        """Evaluate ``params``; returns value, metrics and timings like a real trial."""
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if point_key(params) in self._crash:
            os._exit(3)
        if point_key(params) in self._fail:
            raise RuntimeError(f"synthetic failure at {params}")
        if not params:
            raise TlbenchError("the analytic objective needs lr and l2_decay")
        value = analytic_value(params)
        latency = 10.0 + 2.0 * (math.log10(float(params["lr"])) + 4.0) + 3.0 * bool(params.get("mixup", False))
        metrics: dict[str, Any] = {"top1": value, "latency_p99_ms": latency}
        if self.record_context:
            from .runner import current_trial

            ctx = current_trial()
            metrics.update(worker=ctx.worker if ctx else None, device=ctx.device if ctx else None,
                           cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), pid=os.getpid())
        return {
            "value": value,
            "metrics": metrics,
            "timings": {"train_s": 60.0, "export_s": 5.0, "eval_s": 10.0},
        }

    def run_rung(self, params: dict[str, Any], epochs: int, final: bool) -> dict[str, Any]:
        """A multi-fidelity rung: the value after ``epochs`` epochs on a learning curve rising to
        :func:`analytic_value` (a ranking that mostly holds at low epochs, as on real grids)."""
        result = self(params)
        result["value"] = analytic_curve(params, epochs)
        result["metrics"] = {**result["metrics"], "top1": result["value"], "final": bool(final)}
        return result


def analytic_curve(params: Mapping[str, Any], epochs: int) -> float:
    """:func:`analytic_value` after ``epochs`` epochs: ``value * (1 - 0.5 exp(-epochs / 2))``, normalised to
    reach the value at 8 epochs."""
    return analytic_value(params) * (1 - 0.5 * math.exp(-epochs / 2)) / (1 - 0.5 * math.exp(-4.0))
