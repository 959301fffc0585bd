"""Search strategies behind one ask/tell interface.

Every strategy maximises the objective's ``value``::

    strategy = make_strategy("bayes", default_space(), seed=0, acq_func="EI")
    while (params := strategy.ask()) is not None:
        strategy.tell(params, objective(params)["value"])     # or tell(params, None) on failure

- ``ask()`` returns a new point (a dict of plain Python values keyed by dimension name) or
  ``None`` when the strategy is exhausted; ``ask_batch(n)`` returns up to ``n`` distinct points
  for parallel workers. A point that was asked but not yet told is *pending*: it is never handed
  out twice.
- ``tell(params, value)`` reports a result; ``value=None`` means the trial failed and the strategy
  records the *failure penalty* instead (see :meth:`Strategy.penalty`) so that it does not come
  back to the point.
- ``replay(trials)`` rebuilds the state from journal trials (tells in journal order), which is
  how a resumed search continues.

On a discrete space no strategy ever hands out a point that was already told or is pending.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Optional

import numpy as np

from common.errors import ConfigError
from common.validate import int_at_least, non_negative_int, positive_int

from .space import Categorical, Dimension, Integer, ParamValue, Real, Space, point_key, to_python
from .trial import Trial, TrialState

log = logging.getLogger(__name__)

#: The seed's fixed scheme: one trial with these values.
FIXED_PARAMS: dict[str, Any] = {"lr": 0.003, "l2_decay": 1e-4, "label_smoothing": False, "mixup": False}


class Strategy(ABC):
    """Base class: bookkeeping of told and pending points, penalty for failures, replay.

    Subclasses implement :meth:`_propose` (new candidate points) and may override
    :meth:`_observe` (feed a told value to a model).
    """

    name: ClassVar[str] = ""

    def __init__(self, space: Space, *, seed: int = 0, failure_value: Optional[float] = None) -> None:
        if not isinstance(space, Space):
            raise ConfigError(f"strategy {self.name!r} needs a search.space.Space, got {type(space).__name__}")
        non_negative_int(seed, "seed")
        if failure_value is not None and not (isinstance(failure_value, (int, float)) and math.isfinite(failure_value)):
            raise ConfigError(f"failure_value must be a finite number or None, got {failure_value!r}")
        self.space = space
        self.seed = int(seed)
        self.failure_value = None if failure_value is None else float(failure_value)
        self._told: dict[str, float] = {}  # point key -> value told to the strategy (penalty for failures)
        self._pending: dict[str, dict[str, Any]] = {}
        self._observed: list[float] = []  # real objective values, in tell order

    # Public interface
    def ask(self) -> Optional[dict[str, Any]]:
        """One new point, or ``None`` when the strategy is exhausted."""
        points = self.ask_batch(1)
        return points[0] if points else None

    def ask_batch(self, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` distinct new points (fewer, possibly none, when the strategy runs out)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"ask_batch needs n >= 1, got {n!r}")
        points = []
        for params in self._propose(n):
            params = to_python(params)
            key = point_key(params)
            if key in self._told or key in self._pending:
                # A subclass bug must not turn into a duplicate trial.
                log.warning("strategy %s proposed %s twice; skipped", self.name, params)
                continue
            self._pending[key] = params
            points.append(params)
        return points

    def tell(self, params: Mapping[str, Any], value: Optional[float]) -> None:
        """Report the objective ``value`` of ``params`` (``None``: the trial failed)."""
        self._tell(params, value, fit=True)

    def register_pending(self, params: Mapping[str, Any]) -> None:
        """Mark ``params`` as handed out (e.g. an interrupted trial about to run again)."""
        params = to_python(dict(params))
        key = point_key(params)
        if key not in self._told:
            self._pending[key] = params

    def replay(self, trials: Iterable[Trial]) -> int:
        """Tell every finished trial in order (how a resumed search rebuilds its state); returns the count.

        PRUNED and FAILED trials are told as failures (penalty).
        """
        finished = [t for t in trials if t.state.is_finished]
        for i, trial in enumerate(finished):
            value = trial.value if trial.state is TrialState.COMPLETE else None
            self._tell(trial.params, value, fit=i == len(finished) - 1)
        return len(finished)

    def penalty(self) -> float:
        """Value told for a failed trial.

        ``failure_value`` when given; otherwise the worst value observed so far, or 0.0 (the worst
        accuracy) before any trial completed. It is fixed at the time of the failure.
        """
        if self.failure_value is not None:
            return self.failure_value
        return min(self._observed) if self._observed else 0.0

    def is_told(self, params: Mapping[str, Any]) -> bool:
        """True when ``params`` has been told (completed or failed)."""
        return point_key(params) in self._told

    @property
    def n_told(self) -> int:
        """Number of distinct points told."""
        return len(self._told)

    @property
    def n_pending(self) -> int:
        """Number of points handed out and not told yet."""
        return len(self._pending)

    @property
    def max_points(self) -> Optional[int]:
        """How many points this strategy can ever propose; ``None`` when there is no such bound.

        By default the size of a discrete space (no point is proposed twice) and ``None`` on a
        space with continuous dimensions; a strategy that proposes a fixed set of points says so.
        """
        return self.space.size()

    @property
    def remaining(self) -> Optional[int]:
        """Points still to propose (:attr:`max_points` less those told or pending); ``None`` when unbounded."""
        bound = self.max_points
        return None if bound is None else max(0, bound - len(self._told) - len(self._pending))

    # Internals
    def _tell(self, params: Mapping[str, Any], value: Optional[float], fit: bool) -> None:
        params = to_python(dict(params))
        key = point_key(params)
        if value is not None:
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"tell needs a finite value or None, got {value!r} for {params}")
        self._pending.pop(key, None)
        if key in self._told:
            log.debug("strategy %s: %s told again; the first value is kept", self.name, params)
            return
        told = self.penalty() if value is None else value
        self._told[key] = told
        if value is not None:
            self._observed.append(value)
        self._observe(params, told, fit)

    def _observe(self, params: dict[str, Any], value: float, fit: bool) -> None:
        """Hook for model-based strategies; ``fit=False`` defers model fitting (replay)."""

    def _is_free(self, params: Mapping[str, Any]) -> bool:
        key = point_key(params)
        return key not in self._told and key not in self._pending

    @abstractmethod
    def _propose(self, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` distinct points, each neither told nor pending."""


class FixedStrategy(Strategy):
    """One trial with the seed's fixed scheme (:data:`FIXED_PARAMS`), or ``params`` if given."""

    name = "fixed"

    def __init__(self, space: Space, *, seed: int = 0, params: Optional[Mapping[str, Any]] = None,
                 failure_value: Optional[float] = None) -> None:
        super().__init__(space, seed=seed, failure_value=failure_value)
        if params is not None and not isinstance(params, Mapping):
            raise ConfigError(f"fixed strategy: params must be a mapping, got {params!r}")
        self.params = to_python(dict(params if params is not None else FIXED_PARAMS))

    @property
    def max_points(self) -> int:
        """One: the fixed point."""
        return 1

    def _propose(self, n: int) -> list[dict[str, Any]]:
        return [dict(self.params)] if self._is_free(self.params) and not self._told else []


class GridStrategy(Strategy):
    """Every point of a discrete space, in :meth:`Space.grid` order."""

    name = "grid"

    def __init__(self, space: Space, *, seed: int = 0, failure_value: Optional[float] = None) -> None:
        super().__init__(space, seed=seed, failure_value=failure_value)
        self._grid = space.grid()  # raises ConfigError on a continuous space
        self._cursor = 0

    def _propose(self, n: int) -> list[dict[str, Any]]:
        out = []
        # Resume may have told points out of order, so re-check from the first untold point.
        while self._cursor < len(self._grid) and not self._is_free(self._grid[self._cursor]):
            self._cursor += 1
        i = self._cursor
        while i < len(self._grid) and len(out) < n:
            if self._is_free(self._grid[i]):
                out.append(dict(self._grid[i]))
            i += 1
        return out


#: Discrete spaces up to this many points are enumerated (random order, fallbacks); larger
#: ones are sampled per dimension, because their grid would not fit in memory (or exceeds
#: ``MAX_GRID_POINTS``) and a search can only ever visit a tiny fraction of it anyway.
ENUMERATE_MAX_POINTS = 100_000


def _enumerable(space: Space) -> bool:
    size = space.size() if space.is_discrete else None
    return size is not None and size <= ENUMERATE_MAX_POINTS


class RandomStrategy(Strategy):
    """Seeded random search without replacement.

    On a discrete space of at most :data:`ENUMERATE_MAX_POINTS` points it walks a seeded
    permutation of the grid; on larger or continuous spaces it draws each dimension
    independently and redraws points already tried.
    """

    name = "random"

    #: Draws per point before giving up on a sampled space (only exact repeats are redrawn).
    MAX_DRAWS = 1000

    def __init__(self, space: Space, *, seed: int = 0, failure_value: Optional[float] = None) -> None:
        super().__init__(space, seed=seed, failure_value=failure_value)
        self._rng = np.random.default_rng(self.seed)
        if _enumerable(space):
            self._grid = space.grid()
            self._order = [int(i) for i in self._rng.permutation(len(self._grid))]
        else:
            self._grid = None

    def _propose(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        keys: set[str] = set()
        if self._grid is not None:
            for i in self._order:
                if len(out) == n:
                    break
                if self._is_free(self._grid[i]):
                    out.append(dict(self._grid[i]))
            return out
        for _ in range(n * self.MAX_DRAWS):
            if len(out) == n:
                break
            params = self.space.sample(self._rng)
            key = point_key(params)
            if self._is_free(params) and key not in keys:
                keys.add(key)
                out.append(params)
        return out


class SkoptDimension(NamedTuple):
    """One dimension of a space as scikit-optimize sees it, and the maps of values both ways."""

    dimension: Any  # the skopt.space dimension
    to_skopt: Callable[[Any], Any]  # our value -> skopt's
    from_skopt: Callable[[Any], ParamValue]  # skopt's value (numpy scalars welcome) -> ours, plain Python


def skopt_dimension(dim: Dimension) -> SkoptDimension:
    """The scikit-optimize dimension that stands for ``dim``, with its value maps.

    - :class:`~search.space.Real` and :class:`~search.space.Integer` become skopt's namesakes
      (``log=True``: log-uniform prior); values coming back are clipped to the bounds, because
      skopt may step a hair outside them after its transform round trip.
    - A numeric (ordinal) :class:`~search.space.Categorical` becomes an skopt ``Integer`` over the
      rank of its choices in sorted order, so the model keeps their ordering; a categorical of
      booleans (:class:`~search.space.Boolean`) an ``Integer`` over the choice index; one with a
      single choice a one-value skopt ``Categorical``; any other an skopt ``Categorical`` of the
      choices' JSON texts (so mixed types come back with their type).

    Raises ConfigError when ``dim`` is not a dimension kind this mapping knows.
    """
    from skopt.space import Categorical as SkCategorical  # lazy: skopt/sklearn take a second to import
    from skopt.space import Integer as SkInteger
    from skopt.space import Real as SkReal

    if isinstance(dim, Real):
        return SkoptDimension(
            SkReal(dim.low, dim.high, prior="log-uniform" if dim.log else "uniform"),
            lambda value: float(value),
            lambda value: float(min(max(float(value), dim.low), dim.high)),
        )
    if isinstance(dim, Integer):
        return SkoptDimension(
            SkInteger(dim.low, dim.high, prior="log-uniform" if dim.log else "uniform"),
            lambda value: int(value),
            lambda value: int(min(max(int(round(float(value))), dim.low), dim.high)),
        )
    if isinstance(dim, Categorical):
        choices = dim.choices
        if len(choices) == 1:
            return SkoptDimension(SkCategorical(list(choices)), dim.canonical, lambda value: choices[0])
        if dim.ordinal or all(isinstance(c, bool) for c in choices):
            order = tuple(sorted(choices)) if dim.ordinal else choices
            return SkoptDimension(
                SkInteger(0, len(order) - 1),
                lambda value: order.index(dim.canonical(value)),
                lambda value: order[int(round(float(value)))],
            )
        return SkoptDimension(
            SkCategorical([json.dumps(c) for c in choices]),
            lambda value: json.dumps(dim.canonical(value)),
            lambda value: json.loads(str(value)),
        )
    raise ConfigError(
        f"the bayes strategy models Real, Integer, Categorical and Boolean dimensions, "
        f"got {dim!r} of type {type(dim).__name__}"
    )


BAYES_ACQ_FUNCS = ("gp_hedge", "EI", "LCB", "PI")
BAYES_LIARS = ("cl_min", "cl_mean", "cl_max")
#: Random points before the GP: one default for `bench search`, `bench replay` and the Python API.
BAYES_N_INITIAL_POINTS = 5


class BayesStrategy(Strategy):
    """Gaussian-process Bayesian optimisation with scikit-optimize's ``Optimizer``.

    skopt minimises, so it is told ``-value``. Options: ``acq_func`` (gp_hedge, EI, LCB, PI),
    ``n_initial_points`` (random points before the GP is used; 5), ``base_estimator`` (default
    ``"GP"``), ``liar`` (constant-liar strategy for parallel asks: cl_min, cl_mean, cl_max),
    ``max_retries`` (re-asks after a repeated proposal before falling back to a random
    unevaluated point), ``n_candidates`` (random points scored by the acquisition function on a
    discrete space; default ``min(10000, max(500, 20 * grid size))``),
    ``failure_value``.

    Repeated proposals: when skopt proposes a point already told, the journal's value is told
    again (the model learns nothing new, but its state moves on) and skopt is asked again; after
    ``max_retries`` such rounds, a uniformly random untold point is used. Points pending in other
    workers are shown to skopt with the liar's value, so parallel asks spread out.
    """

    name = "bayes"

    def __init__(
        self,
        space: Space,
        *,
        seed: int = 0,
        acq_func: str = "gp_hedge",
        n_initial_points: int = BAYES_N_INITIAL_POINTS,
        base_estimator: str = "GP",
        liar: str = "cl_min",
        max_retries: int = 5,
        n_candidates: Optional[int] = None,
        failure_value: Optional[float] = None,
    ) -> None:
        super().__init__(space, seed=seed, failure_value=failure_value)
        if acq_func not in BAYES_ACQ_FUNCS:
            raise ConfigError(f"bayes acq_func must be one of {BAYES_ACQ_FUNCS}, got {acq_func!r}")
        if liar not in BAYES_LIARS:
            raise ConfigError(f"bayes liar must be one of {BAYES_LIARS}, got {liar!r}")
        size = space.size()
        if n_candidates is None:
            # Enough random candidates to cover a grid many times over, without scoring 10k on a tiny one.
            n_candidates = 10000 if size is None else min(10000, max(500, 20 * size))
        for name, value, low in (("n_initial_points", n_initial_points, 1), ("max_retries", max_retries, 0),
                                 ("n_candidates", n_candidates, 10)):
            int_at_least(value, f"bayes {name}", low)
        if not isinstance(base_estimator, str) or base_estimator.upper() not in ("GP", "RF", "ET", "GBRT"):
            raise ConfigError(f"bayes base_estimator must be one of GP, RF, ET, GBRT, got {base_estimator!r}")
        from skopt import Optimizer  # lazy: skopt/sklearn take a second to import

        self.acq_func, self.liar, self.max_retries = acq_func, liar, max_retries
        self._skopt = [(name, skopt_dimension(dim)) for name, dim in space.items()]
        self._rng = np.random.default_rng(self.seed)
        self._opt = Optimizer(
            [sk.dimension for _, sk in self._skopt],
            base_estimator=base_estimator,
            n_initial_points=n_initial_points,
            acq_func=acq_func,
            # On a grid, scoring random candidates beats L-BFGS followed by rounding.
            acq_optimizer="sampling" if space.is_discrete else "auto",
            acq_optimizer_kwargs={"n_points": n_candidates},
            random_state=self.seed,
            avoid_duplicates=False,  # handled below, with the journal's values
        )
        self.n_repeated = 0  # repeated proposals answered from the journal
        self.n_fallbacks = 0  # random points used after max_retries

    def _to_skopt(self, params: Mapping[str, Any]) -> list[Any]:
        return [sk.to_skopt(params[name]) for name, sk in self._skopt]

    def _from_skopt(self, x: list[Any]) -> dict[str, Any]:
        return {name: sk.from_skopt(v) for (name, sk), v in zip(self._skopt, x)}

    def _observe(self, params: dict[str, Any], value: float, fit: bool) -> None:
        with _quiet():
            self._opt.tell(self._to_skopt(params), -value, fit=fit)

    def _lie(self) -> float:
        yi = self._opt.yi
        if not yi:
            return 0.0
        return {"cl_min": min, "cl_max": max, "cl_mean": lambda v: float(np.mean(v))}[self.liar](yi)

    def _ask_skopt(self, n: int, extra_pending: list[dict[str, Any]]) -> list[list[Any]]:
        pending = list(self._pending.values()) + extra_pending
        opt = self._opt
        with _quiet():
            if pending:
                opt = self._opt.copy(random_state=int(self._rng.integers(2**31 - 1)))
                opt.tell([self._to_skopt(p) for p in pending], [self._lie()] * len(pending))
            if n == 1:
                return [opt.ask()]
            return opt.ask(n_points=n, strategy=self.liar)

    def _propose(self, n: int) -> list[dict[str, Any]]:
        remaining = self.remaining
        if remaining is not None:
            n = min(n, remaining)
        out: list[dict[str, Any]] = []
        keys: set[str] = set()
        retries = 0
        while len(out) < n and retries <= self.max_retries:
            repeated = False
            for x in self._ask_skopt(n - len(out), out):
                params = self._from_skopt(x)
                key = point_key(params)
                if key in self._told:
                    # Answer from the journal instead of spending a trial on it.
                    self.n_repeated += 1
                    repeated = True
                    with _quiet():
                        self._opt.tell(self._to_skopt(params), -self._told[key])
                elif key in self._pending or key in keys:
                    repeated = True
                else:
                    keys.add(key)
                    out.append(params)
            if repeated:
                retries += 1
        while len(out) < n:
            params = self._random_free(keys)
            if params is None:
                break
            self.n_fallbacks += 1
            keys.add(point_key(params))
            out.append(params)
        return out

    def _random_free(self, taken: set[str]) -> Optional[dict[str, Any]]:
        if _enumerable(self.space):
            free = [p for p in self.space.grid() if self._is_free(p) and point_key(p) not in taken]
            return dict(free[int(self._rng.integers(len(free)))]) if free else None
        for _ in range(1000):
            params = self.space.sample(self._rng)
            if self._is_free(params) and point_key(params) not in taken:
                return params
        return None


class _quiet(warnings.catch_warnings):
    """Context for skopt calls: one BLAS thread, and skopt's/sklearn's expected warnings silenced.

    The GP works on matrices of at most a few hundred rows; a multi-threaded OpenBLAS only adds
    synchronisation there, and on a busy machine it made each fit about 8x slower (measured).
    The repeated-point warning is handled by the strategy, and GP convergence warnings are harmless.
    """

    def __enter__(self) -> Any:
        result = super().__enter__()
        warnings.simplefilter("ignore", UserWarning)
        try:
            from sklearn.exceptions import ConvergenceWarning

            warnings.simplefilter("ignore", ConvergenceWarning)
        except ImportError:  # pragma: no cover - sklearn comes with skopt
            pass
        self._limits = None
        try:
            from threadpoolctl import threadpool_limits

            self._limits = threadpool_limits(limits=1, user_api="blas")
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            pass
        return result

    def __exit__(self, *exc: Any) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
        super().__exit__(*exc)


# BiT-HyperRule (Kolesnikov et al. 2019, "Big Transfer", section 3.3)
BIT_LR = 0.003
BIT_MOMENTUM = 0.9
BIT_BATCH_SIZE = 512  # the batch size the rule's step counts refer to
BIT_MIXUP_ALPHA = 0.1
BIT_SCHEDULE_MILESTONES = (0.3, 0.6, 0.9)  # lr x0.1 at these fractions of training
#: ``rule``: the rule's steps and resolution; ``recipe``: its optimiser settings at the caller's epochs and size.
BIT_BUDGETS = ("rule", "recipe")


@dataclass(frozen=True)
class BitRule:
    """What BiT-HyperRule picks for a dataset; :meth:`params` gives the TrainConfig fields."""

    train_size: int
    image_hw: tuple[int, int]
    batch_size: int
    steps: int  # steps at BIT_BATCH_SIZE, as in the paper
    epochs: int
    image_size: int
    resize_short: int
    mixup: bool

    def params(self, budget: str = "rule") -> dict[str, Any]:
        """TrainConfig fields: lr, momentum, l2_decay, schedule, label_smoothing, mixup[, mixup_alpha], epochs, image_size, resize_short.

        ``budget="recipe"`` leaves out epochs, image_size and resize_short: the rule's optimiser
        settings at the caller's own compute budget (the rule's 500 steps at batch 512 and 384 px
        are hours per trial on a CPU).
        """
        if budget not in BIT_BUDGETS:
            raise ConfigError(f"bit strategy: budget must be one of {list(BIT_BUDGETS)}, got {budget!r}")
        out: dict[str, Any] = {
            "lr": BIT_LR,
            "momentum": BIT_MOMENTUM,
            "l2_decay": 0.0,
            "schedule": "step",
            "label_smoothing": False,
            "mixup": self.mixup,
        }
        if budget == "rule":
            out.update(epochs=self.epochs, image_size=self.image_size, resize_short=self.resize_short)
        if self.mixup:
            out["mixup_alpha"] = BIT_MIXUP_ALPHA
        return out


def bit_rule(train_size: int, image_hw: Any, batch_size: int = BIT_BATCH_SIZE) -> BitRule:
    """Apply BiT-HyperRule to a dataset of ``train_size`` images of typical size ``image_hw``.

    - Steps: < 20k examples -> 500, < 500k -> 10k, else 20k (at batch 512). ``epochs`` keeps the
      number of examples seen: ``ceil(steps * 512 / train_size)``, whatever ``batch_size`` the
      trial uses (``batch_size`` is recorded, the learning rate is the paper's 0.003 unchanged).
    - Resolution: area below 96x96 -> resize 160, crop 128; otherwise resize 448, crop 384.
    - Mixup with alpha 0.1 above 20k examples, none below.
    """
    positive_int(train_size, "bit strategy: train_size")
    if isinstance(image_hw, (int, np.integer)) and not isinstance(image_hw, bool):
        hw = (int(image_hw), int(image_hw))
    elif isinstance(image_hw, (list, tuple)) and len(image_hw) == 2:
        hw = (int(image_hw[0]), int(image_hw[1]))
    else:
        raise ConfigError(f"bit strategy: image_hw must be an int or (height, width), got {image_hw!r}")
    if min(hw) < 1:
        raise ConfigError(f"bit strategy: image_hw must be positive, got {image_hw!r}")
    positive_int(batch_size, "bit strategy: batch_size")
    steps = 500 if train_size < 20_000 else 10_000 if train_size < 500_000 else 20_000
    small = hw[0] * hw[1] < 96 * 96
    return BitRule(
        train_size=int(train_size),
        image_hw=hw,
        batch_size=batch_size,
        steps=steps,
        epochs=max(1, math.ceil(steps * BIT_BATCH_SIZE / train_size)),
        image_size=128 if small else 384,
        resize_short=160 if small else 448,
        mixup=train_size > 20_000,
    )


class BitStrategy(Strategy):
    """BiT-HyperRule as a one-trial baseline (needs ``train_size`` and ``image_hw``; see :func:`bit_rule`).

    The space is not used: the point has the rule's keys (see :meth:`BitRule.params`);
    ``budget="recipe"`` keeps the caller's epochs and image size.
    """

    name = "bit"

    def __init__(self, space: Space, *, seed: int = 0, train_size: Optional[int] = None, image_hw: Any = None,
                 batch_size: int = BIT_BATCH_SIZE, budget: str = "rule",
                 failure_value: Optional[float] = None) -> None:
        super().__init__(space, seed=seed, failure_value=failure_value)
        if train_size is None or image_hw is None:
            raise ConfigError("the bit strategy needs the dataset's train_size and typical image_hw (height, width)")
        self.rule = bit_rule(train_size, image_hw, batch_size)
        self.budget = budget
        self.rule.params(budget)  # validates budget

    @property
    def max_points(self) -> int:
        """One: the rule's point."""
        return 1

    def _propose(self, n: int) -> list[dict[str, Any]]:
        params = self.rule.params(self.budget)
        return [params] if self._is_free(params) and not self._told else []


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FixedStrategy, GridStrategy, RandomStrategy, BayesStrategy, BitStrategy)
}


def make_strategy(name: str, space: Space, *, seed: int = 0, **options: Any) -> Strategy:
    """Build strategy ``name`` (fixed, grid, random, bayes, bit) over ``space``.

    ``options`` are the strategy's keyword arguments (see each class); an unknown option raises
    ConfigError naming the strategy and the options it accepts.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return build_with_options(STRATEGIES[name], name, space, seed, options)


def build_with_options(cls: type, name: str, space: Space, seed: int, options: Mapping[str, Any]) -> Any:
    """``cls(space, seed=seed, **options)``, with an unknown option named with those ``cls`` accepts."""
    import inspect

    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "space", "seed")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"strategy {name!r} does not take option(s) {unknown}; it accepts {accepted}")
    return cls(space, seed=seed, **options)
