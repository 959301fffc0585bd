"""Replay a finished search as an objective, and compare strategies on it over many seeds.

A full grid search is expensive once; replaying its journal answers any point of the grid at no
cost, so strategies (random, bayes with its options) can be compared over dozens of seeds.
Multi-fidelity strategies (asha, bohb) replay too: a lower rung is answered from the trial's
per-epoch validation history (``metrics.train_history``, which is exactly the prefix of the full
run), the top rung from the trial's value. Cost is counted in epochs and full-trial equivalents
(FTE = epochs / max epochs), so every strategy is compared on one axis.
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
from .space import Categorical, Space, point_key
from .multifidelity import MultiFidelityStrategy, is_multi_fidelity, make_multi_fidelity_strategy
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

    @property
    def max_epochs(self) -> int:
        """Epochs of a full trial: the length of the per-epoch histories (the same in every COMPLETE trial).

        Raises TlbenchError when a COMPLETE trial has no ``metrics.train_history`` or the lengths differ.
        """
        lengths = {len((t.metrics or {}).get("train_history") or []) for t in self._trials.values()
                   if t.state is TrialState.COMPLETE}
        if not lengths or 0 in lengths:
            raise TlbenchError(f"journal {self.path}: every COMPLETE trial needs a per-epoch history "
                               "(metrics.train_history) to replay a multi-fidelity strategy")
        if len(lengths) > 1:
            raise TlbenchError(f"journal {self.path}: trials were trained for different numbers of epochs {sorted(lengths)}")
        return lengths.pop()

    def at_epochs(self, params: dict[str, Any], epochs: int) -> float:
        """The value ``params`` had after ``epochs`` epochs: the final value at the last epoch, else the
        per-epoch validation of the trial's metric (``val_<metric>`` in ``metrics.train_history``)."""
        result = self(params)
        history = result["metrics"].get("train_history") or []
        if epochs == len(history):
            return float(result["value"])
        if not 1 <= epochs < len(history):
            raise TlbenchError(f"point {params}: no value after {epochs} epochs in {self.path} "
                               f"(the history has {len(history)} epochs)")
        key = f"val_{result['metrics'].get('metric', 'top1')}"
        record = history[epochs - 1]
        if key not in record:
            raise TlbenchError(f"point {params}: epoch {epochs} of its history in {self.path} has no {key!r}")
        return float(record[key])

    def run_rung(self, params: dict[str, Any], epochs: int, final: bool) -> dict[str, Any]:
        """A multi-fidelity rung answered from the journal: the value after ``epochs`` epochs (see :meth:`at_epochs`)."""
        result = self(params)
        return {**result, "value": self.at_epochs(params, epochs) if not final else result["value"]}

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


@dataclass(frozen=True)
class MultiFidelityRun:
    """One replayed multi-fidelity search: cost to the target and best-so-far by FTE."""

    reached_fte: Optional[float]  # full-trial equivalents spent when a full-budget value reached the target
    reached_configs: Optional[int]  # configurations started by then
    elapsed_s: float  # recorded trial time, scaled by the share of epochs each job trained
    curve: list[Optional[float]]  # best full-budget value after 1, 2, ... FTE
    n_jobs: int


def multi_fidelity_to_target(strategy: MultiFidelityStrategy, objective: ReplayObjective, target: float,
                             max_fte: float, *, curve_fte: int = 0) -> MultiFidelityRun:
    """Run a multi-fidelity ``strategy`` on ``objective`` (serially, one job at a time) until a
    full-budget value reaches ``target``.

    Only a configuration trained to the top rung counts (that is the model a search hands
    over); lower rungs steer the search. Every job costs the epochs it trains (a promotion
    continues from its checkpoint). The run stops when the target is reached and the curve covers
    ``curve_fte`` FTE, when ``max_fte`` is spent, or when the strategy is finished.
    """
    max_epochs = strategy.max_epochs
    spent = 0
    elapsed = 0.0
    best: Optional[float] = None
    reached: Optional[float] = None
    reached_configs: Optional[int] = None
    points: list[tuple[int, Optional[float]]] = []  # (epochs spent, best so far) after each job
    n_jobs = 0
    while spent < max_fte * max_epochs:
        if reached is not None and spent >= curve_fte * max_epochs:
            break
        job = strategy.ask()
        if job is None:
            break  # serial: nothing runs, so None means finished
        n_jobs += 1
        spent += job.cost_epochs
        trial = objective._trials.get(point_key(job.params))
        trial_s = float((trial.timings if trial else {}).get("trial_s", 0.0))
        if reached is None:
            elapsed += trial_s * job.cost_epochs / max_epochs
        try:
            value: Optional[float] = objective.at_epochs(job.params, job.epochs)
        except TlbenchError:
            value = None
        strategy.tell(job, value)
        if job.top and value is not None:
            best = value if best is None else max(best, value)
            if reached is None and value >= target:
                reached = spent / max_epochs
                reached_configs = strategy.n_configs
        points.append((spent, best))
    curve: list[Optional[float]] = []
    for fte in range(1, curve_fte + 1):
        within = [b for s, b in points if s <= fte * max_epochs]
        curve.append(within[-1] if within else None)
    return MultiFidelityRun(reached, reached_configs, elapsed, curve, n_jobs)


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

    Multi-fidelity configs (asha, bohb; see :func:`multi_fidelity_to_target`) report the same
    fields with ``median``/``q1``/``q3``/``fte``/``reached_share``/``best_so_far`` in FTE,
    ``trials`` (configurations started), ``median_trials`` and ``median_epochs``; a seed that
    did not reach the target counts as ``max_trials + 1`` FTE (and the grid size + 1 configurations).
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
        if is_multi_fidelity(config.name):
            rows.append(_multi_fidelity_row(objective, config, space, seeds, target, max_trials, budgets, curve_trials))
            continue
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
        stats = _cost_stats([None if c is None else float(c) for c in counts], max_trials, times, budgets)
        rows.append({
            "label": config.label,
            "strategy": config.name,
            "options": dict(config.options),
            "trials": counts,
            **stats,
            "median_trials": stats["median"],
            "median_epochs": None,
            "best_so_far": _band(curves, curve_trials),
        })
        log.debug("%s: median %.1f trials (IQR %.1f) over %d seeds", config.label, stats["median"], stats["iqr"], seeds)
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


def _multi_fidelity_row(objective: ReplayObjective, config: StrategyConfig, space: Space, seeds: int, target: float,
                        max_trials: int, budgets: list[int], curve_trials: int) -> dict[str, Any]:
    """One row of :func:`compare_strategies` for a multi-fidelity strategy (costs in FTE)."""
    options = dict(config.options)
    options.setdefault("max_epochs", objective.max_epochs)
    runs = []
    for seed in range(seeds):
        strategy = make_multi_fidelity_strategy(config.name, space, seed=seed, **options)
        rungs = strategy.rungs
        runs.append(multi_fidelity_to_target(strategy, objective, target, max_trials, curve_fte=curve_trials))
    configs = np.array([r.reached_configs if r.reached_configs is not None else space.size() + 1 for r in runs], dtype=float)
    times = [r.elapsed_s for r in runs if r.reached_fte is not None]
    stats = _cost_stats([r.reached_fte for r in runs], max_trials, times, budgets)
    log.debug("%s: median %.2f FTE (IQR %.2f) over %d seeds", config.label, stats["median"], stats["iqr"], seeds)
    return {
        "label": config.label,
        "strategy": config.name,
        "options": options,
        "trials": [r.reached_configs for r in runs],
        **stats,
        "median_trials": float(np.median(configs)),
        "median_epochs": stats["median"] * options["max_epochs"],
        "rungs": rungs,
        "best_so_far": _band([r.curve for r in runs], curve_trials),
    }


def _cost_stats(costs: list[Optional[float]], max_cost: int, times: list[float], budgets) -> dict[str, Any]:
    """Median, quartiles, reach shares and median time over seeds of the cost (FTE) to the target.

    A seed that never got there (None) counts as ``max_cost + 1``, so failures pull the median up.
    """
    filled = np.array([c if c is not None else max_cost + 1 for c in costs], dtype=float)
    q1, median, q3 = (float(v) for v in np.percentile(filled, [25, 50, 75]))
    return {
        "fte": costs,
        "reached": sum(c is not None for c in costs),
        "median": median, "q1": q1, "q3": q3, "iqr": q3 - q1,
        "mean": float(filled.mean()),
        "median_time_s": float(np.median(times)) if times else None,
        "median_fte": median,
        "iqr_fte": q3 - q1,
        "reached_share": {str(b): sum(c is not None and c <= b for c in costs) / len(costs) for b in budgets},
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


def restrict_space(space: Space, specs: Sequence[str]) -> Space:
    """``space`` with some discrete dimensions cut down to the listed values: ``NAME=V1,V2,...`` each.

    What a strategy would cost if it knew part of the answer (an oracle), e.g. ``lr=0.03``:
    replayed over the sub-grid, with the target still taken from the whole journal's best.
    Raises ConfigError naming the spec when the name is not a discrete dimension of ``space``
    or a value is not one of its choices.
    """
    cut: dict[str, list[Any]] = {}
    for spec in specs:
        name, eq, raw = spec.partition("=")
        name = name.strip()
        if not eq or not raw.strip():
            raise ConfigError(f"--restrict {spec!r}: expected NAME=VALUE[,VALUE...]")
        if name not in space:
            raise ConfigError(f"--restrict {spec!r}: the space has no dimension {name!r} (it has {space.names})")
        if name in cut:
            raise ConfigError(f"--restrict {spec!r}: {name!r} is restricted twice")
        dim = space[name]
        if not dim.is_discrete:
            raise ConfigError(f"--restrict {spec!r}: {name!r} is continuous; only discrete dimensions can be restricted")
        values = []
        for item in raw.split(","):
            value = _dimension_value(dim, _parse_scalar(item.strip()))
            if value is None:
                raise ConfigError(f"--restrict {spec!r}: {item.strip()!r} is not one of {name!r}'s values {dim.values()}")
            if value not in values:
                values.append(value)
        cut[name] = values
    return Space([(name, Categorical(cut[name]) if name in cut else dim) for name, dim in space.items()])


def _dimension_value(dim: Any, value: Any) -> Any:
    """The value of discrete ``dim`` equal to ``value`` (a categorical's own choice), else None."""
    if isinstance(dim, Categorical):
        try:
            return dim.canonical(value)
        except ConfigError:
            return None
    return value if dim.contains(value) else None


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

