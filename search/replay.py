"""Replay a finished search as an objective, and compare strategies on it over many seeds.

A full grid search is expensive once; replaying its journal answers any point of the grid at no
cost, so strategies (random, bayes with its options) can be compared over dozens of seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from common.errors import ConfigError, TlbenchError

from .journal import JOURNAL_NAME, META_NAME, SearchMeta, load_meta, load_trials
from .space import Space, point_key
from .strategies import Strategy, make_strategy
from .trial import Trial, TrialState

log = logging.getLogger(__name__)


class ReplayObjective:
    """Objective that answers points from a finished search's journal.

    ``journal_path`` is a run directory or a ``journal.jsonl``. A point the journal holds as
    COMPLETE returns its value, metrics and timings; a FAILED one raises again (the replayed
    search sees the same failure); a missing one raises :class:`~common.errors.TlbenchError`.
    Picklable, so it also works with ``run_search(workers>1)``.
    """

    def __init__(self, journal_path: str | Path) -> None:
        path = Path(journal_path)
        self.run_dir = path if path.is_dir() else path.parent
        self.path = path / JOURNAL_NAME if path.is_dir() else path
        trials = [t for t in load_trials(self.path) if t.state.is_finished]
        if not trials:
            raise TlbenchError(f"journal {self.path} has no finished trials to replay")
        self._trials: dict[str, Trial] = {point_key(t.params): t for t in trials}
        self.meta: Optional[SearchMeta] = load_meta(self.run_dir) if (self.run_dir / META_NAME).exists() else None

    @property
    def trials(self) -> list[Trial]:
        """The finished trials that can be replayed."""
        return list(self._trials.values())

    @property
    def best_value(self) -> float:
        """The best COMPLETE value in the journal."""
        values = [t.value for t in self._trials.values() if t.state is TrialState.COMPLETE]
        if not values:
            raise TlbenchError(f"journal {self.path} has no COMPLETE trial")
        return max(values)

    @property
    def space(self) -> Space:
        """The space of the replayed search (from its ``search.json``)."""
        if self.meta is None:
            raise TlbenchError(f"{self.run_dir} has no {META_NAME}; pass the space explicitly")
        return self.meta.build_space()

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        """The recorded outcome of ``params``."""
        trial = self._trials.get(point_key(params))
        if trial is None:
            raise TlbenchError(f"point {params} is not in the replayed journal {self.path}")
        if trial.state is not TrialState.COMPLETE:
            raise TlbenchError(f"replayed trial {trial.id} {trial.state.value}: {trial.error}")
        return {"value": trial.value, "metrics": dict(trial.metrics), "timings": dict(trial.timings)}


def trials_to_target(strategy: Strategy, objective: ReplayObjective, target: float,
                     max_trials: int, *, curve_trials: int = 0) -> tuple[Optional[int], float, list[Optional[float]]]:
    """Run ``strategy`` on ``objective`` (serially) until a value reaches ``target``.

    Returns (trials needed, or None if not reached within ``max_trials`` or before the
    strategy ran out of points; summed recorded trial time in seconds up to that point; the
    best value so far after each trial). The run goes on past the target until the curve
    covers ``curve_trials`` trials (best-so-far plots need the same length for every seed).
    """
    elapsed = 0.0
    reached: Optional[int] = None
    best: Optional[float] = None
    curve: list[Optional[float]] = []
    for n in range(1, max_trials + 1):
        if reached is not None and n > curve_trials:
            break
        params = strategy.ask()
        if params is None:
            break
        try:
            result = objective(params)
        except TlbenchError:
            strategy.tell(params, None)
            if reached is None:
                trial = objective._trials.get(point_key(params))
                elapsed += float((trial.timings if trial else {}).get("trial_s", 0.0))
            curve.append(best)
            continue
        strategy.tell(params, result["value"])
        if best is None or result["value"] > best:
            best = result["value"]
        curve.append(best)
        if reached is None:
            elapsed += float(result["timings"].get("trial_s", 0.0))
            if result["value"] >= target:
                reached = n
    return reached, elapsed, curve


def _band(curves: list[list[Optional[float]]], length: int) -> dict[str, list[Optional[float]]]:
    """Median and quartiles over seeds of best-so-far after 1..length trials (None before any value)."""
    out: dict[str, list[Optional[float]]] = {"trials": list(range(1, length + 1)), "q1": [], "median": [], "q3": []}
    for i in range(length):
        # A curve that ended early (the strategy ran out of points) keeps its last value.
        column = [c[min(i, len(c) - 1)] for c in curves if c]
        column = [v for v in column if v is not None]
        for key, q in (("q1", 25), ("median", 50), ("q3", 75)):
            out[key].append(float(np.percentile(column, q)) if column else None)
    return out


@dataclass(frozen=True)
class StrategyConfig:
    """One strategy to compare: a ``label`` for tables, the strategy ``name`` and its ``options``."""

    label: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)


def compare_strategies(objective: ReplayObjective, configs: Sequence[StrategyConfig], *, seeds: int = 50,
                       within: float = 0.004, max_trials: Optional[int] = None,
                       space: Optional[Space] = None, budgets: Sequence[int] = (8, 12, 20)) -> dict[str, Any]:
    """Trials each strategy needs to come within ``within`` (value units) of the journal's best.

    Every config runs once per seed 0..seeds-1. Per config the result has the per-seed counts
    (None: not reached), ``median``, ``q1``, ``q3``, ``iqr`` (over the seeds that reached the
    target; a seed that did not counts as ``max_trials + 1`` so failures pull the median up
    instead of vanishing), ``reached`` and ``median_time_s`` (recorded trial time),
    ``reached_share`` (the share of seeds within each budget of ``budgets`` trials), and
    ``best_so_far`` (median and quartiles over seeds of the best value after 1..max(budgets)
    trials). Cost is also given in full-trial equivalents (``median_fte``, ``iqr_fte``: a trial
    that trains the full number of epochs is 1 FTE, so for these strategies FTE = trials).
    JSON-safe.

    A grid point the journal does not hold replays as a failed trial, which would bias the
    comparison; ``missing_points`` in the result counts them (and a warning is logged).

    Raises:
        ConfigError: the space is continuous (a replay can only answer recorded points), or
            more than half of its grid is missing from the journal.
    """
    if seeds < 1:
        raise TlbenchError(f"seeds must be >= 1, got {seeds}")
    if within < 0:
        raise TlbenchError(f"within must be >= 0, got {within}")
    space = space or objective.space
    size = space.size()
    if size is None:
        continuous = [name for name, dim in space.dimensions if not dim.is_discrete]
        raise ConfigError(
            f"cannot replay {objective.path} over a continuous space (dimension(s) {continuous}): strategies would "
            "propose points no journal holds; replay a grid search over a discrete space"
        )
    missing = missing_points(objective, space)
    if missing > size / 2:
        raise ConfigError(
            f"{missing} of the {size} grid points are missing from {objective.path}: a replay would count them as "
            "failures; replay a (nearly) complete grid search of this space"
        )
    if missing:
        log.warning("%d of the %d grid points are missing from %s; strategies that propose them see a failure",
                    missing, size, objective.path)
    if max_trials is None:
        max_trials = size
    best = objective.best_value
    target = best - within
    budgets = sorted({int(b) for b in budgets})
    curve_trials = min(max(budgets, default=0), max_trials)
    rows = []
    for config in configs:
        counts: list[Optional[int]] = []
        times: list[float] = []
        curves: list[list[Optional[float]]] = []
        for seed in range(seeds):
            strategy = make_strategy(config.name, space, seed=seed, **config.options)
            n, elapsed, curve = trials_to_target(strategy, objective, target, max_trials, curve_trials=curve_trials)
            counts.append(n)
            curves.append(curve)
            if n is not None:
                times.append(elapsed)
        filled = np.array([c if c is not None else max_trials + 1 for c in counts], dtype=float)
        q1, median, q3 = (float(v) for v in np.percentile(filled, [25, 50, 75]))
        rows.append({
            "label": config.label,
            "strategy": config.name,
            "options": dict(config.options),
            "trials": counts,
            "reached": sum(c is not None for c in counts),
            "median": median,
            "q1": q1,
            "q3": q3,
            "iqr": q3 - q1,
            "mean": float(filled.mean()),
            "median_time_s": float(np.median(times)) if times else None,
            "median_trials": median,
            "median_fte": median,
            "iqr_fte": q3 - q1,
            "reached_share": {str(b): sum(c is not None and c <= b for c in counts) / seeds for b in budgets},
            "best_so_far": _band(curves, curve_trials),
        })
        log.debug("%s: median %.1f trials (IQR %.1f) over %d seeds", config.label, median, q3 - q1, seeds)
    return {
        "journal": str(objective.path),
        "best": best,
        "within": within,
        "target": target,
        "seeds": seeds,
        "max_trials": max_trials,
        "grid_size": size,
        "budgets": budgets,
        "missing_points": missing,
        "strategies": rows,
    }


def missing_points(objective: ReplayObjective, space: Space) -> int:
    """How many points of discrete ``space`` have no finished trial in ``objective``'s journal.

    Counted without enumerating the grid: the journal's distinct in-space points are
    subtracted from the grid size.
    """
    size = space.size()
    if size is None:
        raise ConfigError("missing_points needs a discrete space")
    held = set()
    for trial in objective.trials:
        try:
            held.add(point_key(space.validate(trial.params)))
        except ConfigError:  # a point of another space: it cannot stand for a grid point
            continue
    return size - len(held)


def parse_strategy_configs(specs: Sequence[str]) -> list[StrategyConfig]:
    """Parse ``name[:key=value,key=value]`` specs, e.g. ``bayes:acq_func=EI,n_initial_points=5``.

    Values are read as int, then float, then true/false, else kept as strings.
    """
    configs = []
    for spec in specs:
        name, _, rest = spec.partition(":")
        options: dict[str, Any] = {}
        for item in filter(None, rest.split(",")):
            key, eq, raw = item.partition("=")
            if not eq:
                raise TlbenchError(f"strategy spec {spec!r}: expected key=value, got {item!r}")
            options[key.strip()] = _parse_scalar(raw.strip())
        configs.append(StrategyConfig(label=spec, name=name.strip(), options=options))
    return configs


def _parse_scalar(raw: str) -> Any:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return raw

