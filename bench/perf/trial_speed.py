"""Search trials timed with this code and with a baseline installation, side by side.

A trial is what ``bench search`` runs per point: fine-tune with per-epoch validation, export,
score the export on val through Paddle Inference, measure its latency. :func:`compare_trials`
runs the same small grid twice, as two ``bench search`` processes one after the other, and
pairs the journals' trials by their parameters: wall time (``finished_at - started_at``), the
ratio, val top-1 and training img/s. The baseline is another installation's ``bench`` (a
``git worktree`` of an older commit with its own venv) or this one with
``TLBENCH_FAST_TRIALS=0``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from common.errors import TlbenchError

# The reference trial: 20 % of train as val, EfficientNet-Lite0 from its ImageNet weights, 96 px,
# 8 epochs, the stem and the first three stages frozen; train + per-epoch val + export + exported
# eval. The latency measurement a search adds to each trial (a fixed 1 s in every version) is
# not part of it and is turned off on both sides.
REFERENCE_RECIPE = (
    "--model", "EfficientNet_Lite0", "--pretrained", "imagenet", "--image-size", "96", "--epochs", "8",
    "--freeze", "4", "--val-fraction", "0.2", "--batch-size", "32", "--latency-seconds", "0",
)
# An untimed one-step trial per side first: builds each version's native op (a one-off per
# installation, minutes on a fresh machine) outside the timed trials.
WARM_UP_FLAGS = ("--strategy", "fixed", "--epochs", "1", "--max-steps-per-epoch", "1")
# Search spaces: the four corners of lr x mixup (l2 1e-4, no label smoothing), or the fixed scheme.
POINTS = {
    "corners": "replace: true\ndimensions:\n  lr: [0.1, 0.0001]\n  mixup: [true, false]\n",
    "fixed": "replace: true\ndimensions:\n  lr: [0.003]\n",
}


# The order of the timed searches. ``abba`` runs baseline, new, new, baseline and times each
# trial as the mean of its two passes: a drift of the machine's speed that is linear over the
# run then costs both sides alike (the VM's speed drifts 10-20 % within minutes).
ORDERS = {
    "baseline-first": ("baseline", "new"),
    "new-first": ("new", "baseline"),
    "abba": ("baseline", "new", "new", "baseline"),
}


@dataclass(frozen=True)
class TrialSpeedConfig:
    """What to run: dataset, points, recipe flags, the baseline, and where the searches go."""

    dataset: str
    data_root: Optional[str]
    out_dir: Path
    points: str = "corners"
    recipe: Sequence[str] = REFERENCE_RECIPE
    baseline_bench: Optional[str] = None
    order: str = "baseline-first"
    extra_env: dict[str, str] = field(default_factory=dict)
    warm_up: bool = True
    seeds: Sequence[int] = ()  # training seeds per point (a ``seed`` dimension); empty: the recipe's seed

    def __post_init__(self) -> None:
        if self.points not in POINTS:
            raise TlbenchError(f"points must be one of {sorted(POINTS)}, got {self.points!r}")
        if self.order not in ORDERS:
            raise TlbenchError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if len(set(self.seeds)) != len(self.seeds) or any(isinstance(x, bool) or not isinstance(x, int) or x < 0
                                                          for x in self.seeds):
            raise TlbenchError(f"seeds must be distinct non-negative integers, got {list(self.seeds)!r}")

    def space_yaml(self) -> str:
        """The grid the timed searches run: the points, times the training seeds if any."""
        text = POINTS[self.points]
        if self.seeds:
            text += f"  seed: [{', '.join(str(x) for x in self.seeds)}]\n"
        return text


def run_search_process(bench: Sequence[str], env: dict[str, str], cfg: TrialSpeedConfig, name: str,
                       space: Optional[Path]) -> dict[str, Any]:
    """Run one ``bench search --strategy grid`` over ``space`` (None: the untimed warm-up trial)
    and read its trials back from the journal."""
    command = [*bench, "search", "--dataset", cfg.dataset]
    if cfg.data_root:
        command += ["--data-root", str(cfg.data_root)]
    points = ["--strategy", "grid", "--space", str(space)] if space is not None else []
    command += [*points, "--out-dir", str(cfg.out_dir), "--name", name,
                "--export-dir", str(cfg.out_dir / f"{name}-best"), "--overwrite", *cfg.recipe]
    if space is None:
        command += list(WARM_UP_FLAGS)  # after the recipe: these win
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise TlbenchError(f"`{' '.join(command)}` exited with {proc.returncode}:\n{tail}")
    return {"command": command, "wall_seconds": wall, "trials": read_trials(cfg.out_dir / name)}


def read_trials(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The finished trials of a search directory, keyed on their parameters (JSON, sorted keys)."""
    from search import load_trials

    trials: dict[str, dict[str, Any]] = {}
    for trial in load_trials(run_dir):
        if trial.finished_at is None:
            continue
        history = trial.metrics.get("train_history", [])
        trials[json.dumps(trial.params, sort_keys=True)] = {
            "params": trial.params,
            "state": trial.state.value,
            "seconds": trial.finished_at - (trial.started_at or trial.finished_at),
            "timings": trial.timings,
            "val_top1": trial.metrics.get("val_top1"),
            "val_history": [h.get("val_top1") for h in history],
            "train_images_per_s": statistics.median(h["train_images_per_s"] for h in history) if history else None,
        }
    return trials


def read_runs(run_dirs: Sequence[Path], names: Sequence[str] = ("seed",)) -> dict[str, Any]:
    """One side's trials from searches already run, as one search (for :func:`compare`).

    Each trial's parameters are completed with the values its search trained with (its
    ``search.json`` base config) for every name in ``names`` its space did not set, so
    searches whose spaces name different dimensions pair up (one without a ``seed``
    dimension trained with the base config's seed). Only COMPLETE trials are read; the others
    are listed in ``not_complete`` (a point that failed and was run again in a later search
    pairs on its COMPLETE run). Raises TlbenchError when two searches hold the same COMPLETE point."""
    from search.journal import load_meta

    trials: dict[str, dict[str, Any]] = {}
    not_complete = []
    for run_dir in run_dirs:
        base = load_meta(run_dir).extra.get("base_config", {})
        for trial in read_trials(Path(run_dir)).values():
            if trial["state"] != "COMPLETE":
                not_complete.append({"run_dir": str(run_dir), "params": trial["params"], "state": trial["state"]})
                continue
            params = {**{n: base[n] for n in names if n in base}, **trial["params"]}
            key = json.dumps(params, sort_keys=True)
            if key in trials:
                raise TlbenchError(f"{run_dir}: point {params} is also in an earlier search of the same side")
            trials[key] = {**trial, "params": params, "run_dir": str(run_dir)}
    return {"trials": trials, "run_dirs": [str(d) for d in run_dirs], "not_complete": not_complete}


def searched_names(run_dirs: Sequence[Path]) -> list[str]:
    """The dimension names of these searches' spaces, together (sorted)."""
    from search.journal import load_meta

    return sorted({name for d in run_dirs for name in load_meta(d).space})


def merge_passes(passes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One side's searches run more than once, as one: each trial's seconds are the mean over the
    passes (``pass_seconds`` keeps them all); its val top-1 is the first pass's, and
    ``val_top1_per_pass`` records every pass's (training is deterministic, so they should agree).
    Only trials present in every pass are kept."""
    if len(passes) == 1:
        return passes[0]
    keys = [k for k in passes[0]["trials"] if all(k in p["trials"] for p in passes[1:])]
    trials = {}
    for key in keys:
        runs = [p["trials"][key] for p in passes]
        ips = [r["train_images_per_s"] for r in runs if r.get("train_images_per_s") is not None]
        trials[key] = {
            **runs[0],
            "seconds": statistics.fmean(r["seconds"] for r in runs),
            "pass_seconds": [r["seconds"] for r in runs],
            "val_top1_per_pass": [r["val_top1"] for r in runs],
            "train_images_per_s": statistics.fmean(ips) if ips else None,
        }
    return {"trials": trials, "passes": len(passes)}


def compare(baseline: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Rows of paired trials and the summary: median and total speed-up, mean |Δ val top-1| in points."""
    rows = []
    for key, b in baseline["trials"].items():
        n = new["trials"].get(key)
        if n is None:
            continue
        both = b["val_top1"] is not None and n["val_top1"] is not None
        rows.append({
            "params": b["params"], "baseline_s": b["seconds"], "new_s": n["seconds"],
            "speedup": b["seconds"] / n["seconds"] if n["seconds"] > 0 else None,
            "baseline_val_top1": b["val_top1"], "new_val_top1": n["val_top1"],
            "abs_diff_points": abs(b["val_top1"] - n["val_top1"]) * 100 if both else None,
            "baseline_train_images_per_s": b["train_images_per_s"], "new_train_images_per_s": n["train_images_per_s"],
        })
    speedups = [r["speedup"] for r in rows if r["speedup"]]
    diffs = [r["abs_diff_points"] for r in rows if r["abs_diff_points"] is not None]
    total_b, total_n = sum(r["baseline_s"] for r in rows), sum(r["new_s"] for r in rows)
    return {
        "rows": rows,
        "median_speedup": statistics.median(speedups) if speedups else None,
        "total_speedup": total_b / total_n if total_n > 0 else None,
        "mean_abs_diff_points": statistics.fmean(diffs) if diffs else None,
        "baseline_median_s": statistics.median(r["baseline_s"] for r in rows) if rows else None,
        "new_median_s": statistics.median(r["new_s"] for r in rows) if rows else None,
    }


def seed_means(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Val top-1 per point over training seeds, both sides: what "unchanged within noise" is judged on.

    ``rows`` are :func:`compare` rows whose ``params`` may hold a ``seed``. Per point (the params
    without the seed): both sides' values in seed order, means, sample SDs, ``abs_diff_points``
    (|difference of the means| in points) and ``se_diff_points`` (the standard error of that
    difference, from the two SDs). ``mean_abs_diff_points`` averages ``abs_diff_points`` over
    the points; points with one seed give no SD."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("baseline_val_top1") is None or row.get("new_val_top1") is None:
            continue
        params = {k: v for k, v in row["params"].items() if k != "seed"}
        group = groups.setdefault(json.dumps(params, sort_keys=True), {"params": params, "pairs": []})
        group["pairs"].append((row["params"].get("seed"), row["baseline_val_top1"], row["new_val_top1"]))
    points = []
    for group in groups.values():
        pairs = sorted(group["pairs"], key=lambda p: (p[0] is None, p[0] if p[0] is not None else 0))
        base, new = [p[1] for p in pairs], [p[2] for p in pairs]
        n = len(pairs)
        sd_b = statistics.stdev(base) if n > 1 else None
        sd_n = statistics.stdev(new) if n > 1 else None
        points.append({
            "params": group["params"], "seeds": [p[0] for p in pairs], "baseline": base, "new": new,
            "mean_baseline": statistics.fmean(base), "mean_new": statistics.fmean(new),
            "sd_baseline": sd_b, "sd_new": sd_n,
            "abs_diff_points": abs(statistics.fmean(base) - statistics.fmean(new)) * 100,
            "se_diff_points": ((sd_b ** 2 + sd_n ** 2) / n) ** 0.5 * 100 if n > 1 else None,
        })
    return {
        "points": points,
        "mean_abs_diff_points": statistics.fmean(p["abs_diff_points"] for p in points) if points else None,
    }


def compare_runs(baseline_dirs: Sequence[str | Path], new_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """:func:`compare` and :func:`seed_means` over searches already run (e.g. more training seeds
    added by later searches): each side's trials from several search directories. Trials pair
    on every dimension any of the searches names, plus the training seed (see :func:`read_runs`)."""
    from common.machine import machine_facts

    dirs = [Path(d) for d in baseline_dirs], [Path(d) for d in new_dirs]
    names = sorted({"seed", *searched_names(dirs[0] + dirs[1])})
    baseline, new = read_runs(dirs[0], names), read_runs(dirs[1], names)
    result = compare(baseline, new)
    return {
        "baseline": "finished searches", "baseline_runs": baseline["run_dirs"], "new_runs": new["run_dirs"],
        "not_complete": {"baseline": baseline["not_complete"], "new": new["not_complete"]},
        **result, "seed_means": seed_means(result["rows"]), "environment": machine_facts(),
    }


def compare_trials(cfg: TrialSpeedConfig) -> dict[str, Any]:
    """Run the baseline and this code on the same points; the comparison plus both searches' trials.

    Unless ``warm_up`` is off, each side first runs an untimed one-step trial, which builds its
    native op. The first timed trial of each search still pays the search's one-off costs (the
    frozen prefix, the first decode of every image, tracing the export).
    """
    from common.machine import machine_facts

    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    space = cfg.out_dir / "points.yaml"
    space.write_text(cfg.space_yaml())
    here = [sys.executable, "-m", "bench.cli"]
    env = {**os.environ, **cfg.extra_env}
    if cfg.baseline_bench:
        # Its own build folder for the Paddle depthwise op: two versions of the op sharing one
        # folder would rebuild it in turn, inside the timed trials.
        baseline_env = {**env, "TLBENCH_OPS_DIR": str(cfg.out_dir / "baseline-ops")}
        baseline = ([cfg.baseline_bench], baseline_env, cfg.baseline_bench)
    else:
        baseline = (here, {**env, "TLBENCH_FAST_TRIALS": "0"}, "this code with TLBENCH_FAST_TRIALS=0")
    sides = {"baseline": (baseline[0], baseline[1]), "new": (here, {**env, "TLBENCH_FAST_TRIALS": "1"})}
    order = ORDERS[cfg.order]
    if cfg.warm_up:
        for label in dict.fromkeys(order):
            run_search_process(*sides[label], cfg, f"{label}-warm-up", None)
    searches: dict[str, dict[str, Any]] = {}
    passes: dict[str, list[dict[str, Any]]] = {"baseline": [], "new": []}
    for label in order:
        n = len(passes[label]) + 1
        name = label if order.count(label) == 1 else f"{label}-{n}"
        searches[name] = run_search_process(*sides[label], cfg, name, space)
        passes[label].append(searches[name])
    result = compare(merge_passes(passes["baseline"]), merge_passes(passes["new"]))
    if cfg.seeds:
        result["seed_means"] = seed_means(result["rows"])
    if cfg.order == "abba":
        # Each pass pair on its own too: baseline-1 vs new-1 and new-2 vs baseline-2.
        result["per_pass"] = [
            {k: v for k, v in compare(passes["baseline"][i], passes["new"][i]).items() if k != "rows"}
            for i in range(2)
        ]
    return {
        "points": cfg.points, "recipe": list(cfg.recipe), "dataset": cfg.dataset, "data_root": cfg.data_root,
        "baseline": baseline[2], "order": cfg.order, "warm_up": cfg.warm_up, "seeds": list(cfg.seeds), **result,
        "searches": searches, "environment": machine_facts(),
    }
