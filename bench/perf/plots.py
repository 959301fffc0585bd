"""The two PNG plots of a throughput report (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .schema import STAGES, point_label

_SERIES_STYLE = {("ours", "jpeg"): ("tab:blue", "o"), ("ours", "tensor"): ("tab:green", "s"),
                 ("baseline", "jpeg"): ("tab:red", "^")}
_STAGE_COLOURS = {"decode": "tab:orange", "preprocess": "tab:purple", "inference": "tab:blue",
                  "postprocess": "tab:gray"}


def plot_throughput_vs_latency(report: dict[str, Any], path: Path) -> None:
    """img/s against p99 latency: one colour per pipeline/input; within it one line per concurrency
    through the batch sizes (solid for the lowest concurrency, then dashed, dotted, ...); points are
    labelled ``b<batch> c<concurrency>``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = ("-", "--", ":", "-.")
    levels = sorted({p["concurrency"] for p in report["points"]})
    fig, ax = plt.subplots(figsize=(7.5, 5))
    try:
        for (pipeline, input_mode), (colour, marker) in _SERIES_STYLE.items():
            labelled = False
            for level_index, c in enumerate(levels):
                pts = sorted((p for p in report["points"] if p["pipeline"] == pipeline and p["input"] == input_mode
                              and p["concurrency"] == c), key=lambda p: p["batch_size"])
                if not pts:
                    continue
                xs = [p["latency_ms"]["p99_ms"] for p in pts]
                ys = [p["images_per_sec"] for p in pts]
                ax.plot(xs, ys, marker=marker, color=colour, linestyle=styles[level_index % len(styles)],
                        label=None if labelled else f"{pipeline} / {input_mode}")
                labelled = True
                for p, x, y in zip(pts, xs, ys):
                    ax.annotate(f"b{p['batch_size']} c{p['concurrency']}", (x, y), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
        env = report["environment"]
        ax.set_xlabel("p99 latency per request (ms)")
        ax.set_ylabel("throughput (img/s, median of repetitions)")
        ax.set_title(f"{env['model_name']} @ {env['image_size']} px, {env['backend']}/{env['precision']}, "
                     f"{env['cpu_cores']} cores; line style = concurrency", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def plot_time_split(report: dict[str, Any], path: Path) -> None:
    """Stacked bars of the mean time per image in each stage (request split / batch), one bar per point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["points"]
    labels = [point_label(p) for p in points]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(points) + 2), 5))
    try:
        bottom = np.zeros(len(points))
        for stage in STAGES:
            values = np.array([p["split_ms"][stage] / p["batch_size"] for p in points])
            ax.bar(range(len(points)), values, bottom=bottom, label=stage, color=_STAGE_COLOURS[stage])
            bottom += values
        ax.set_xticks(range(len(points)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("ms per image (mean request time / batch)")
        ax.set_title("where the time goes", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
