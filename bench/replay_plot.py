"""Best value so far against cost, per strategy, from a ``search.replay.compare_strategies`` result."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_best_so_far(result: dict[str, Any], path: str | Path, *, percent: bool = True) -> Path:
    """Median (line) and quartiles (band) over seeds of the best value after each full-trial equivalent
    (a trial of a plain strategy; the epochs of a full trial for asha/bohb); the target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 100.0 if percent else 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in result["strategies"]:
        band = row["best_so_far"]
        xs = [x for x, m in zip(band["trials"], band["median"]) if m is not None]
        if not xs:
            continue
        pick = [i for i, m in enumerate(band["median"]) if m is not None]
        line, = ax.plot(xs, [band["median"][i] * scale for i in pick], label=row["label"], linewidth=1.8)
        ax.fill_between(xs, [band["q1"][i] * scale for i in pick], [band["q3"][i] * scale for i in pick],
                        color=line.get_color(), alpha=0.18, linewidth=0)
    ax.axhline(result["target"] * scale, color="black", linestyle="--", linewidth=1,
               label=f"target: best − {result.get('within_points', result['within'] * scale):g}")
    ax.set_xlabel("cost in full-trial equivalents (epochs / max epochs; a plain trial = 1)")
    ax.set_ylabel("best val so far" + (" (%)" if percent else ""))
    ax.set_title(f"Best so far over {result['seeds']} seeds (median, quartile band)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
