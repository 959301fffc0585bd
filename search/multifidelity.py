"""Multi-fidelity strategies on epochs: ASHA and BOHB-style proposals, behind one job interface.

A multi-fidelity search trains configurations for a few epochs first and continues only the
promising ones. The budgets are *rungs* of epochs, ``min_epochs * eta**k`` below ``max_epochs``
and ``max_epochs`` itself (1, 2, 4, 8 for min 1, eta 2, max 8). A job is one configuration
trained from the end of its previous rung (its checkpoint) to the end of the next::

    strategy = make_multi_fidelity_strategy("asha", space, seed=0, max_epochs=8)
    while (job := strategy.ask()) is not None:
        strategy.tell(job, objective(job.params, epochs=job.epochs))   # None when it failed

- **ASHA** (Li et al. 2020, asynchronous successive halving): a configuration that finished
  rung ``k`` is promoted to rung ``k + 1`` as soon as it is among the top ``1/eta`` of all
  results seen at rung ``k`` (the rule of Optuna's ``SuccessiveHalvingPruner``); higher rungs
  are served first. Otherwise a new configuration starts at the lowest rung. New configurations
  are drawn at random without replacement.
- **BOHB** (Falkner et al. 2018): the same rungs and promotions; a new configuration comes from
  a TPE-like model once some rung has enough results: on the highest such rung the results are
  split into the best ``top_fraction`` (``l``) and the rest (``g``), each gets a product-kernel
  density (:class:`search.density.ProductKDE`), ``n_samples`` candidates are drawn from ``l``
  with widened bandwidths and the one with the largest ``l(x) / g(x)`` is taken. A
  ``random_fraction`` of proposals stays random, as in BOHB.

When the space has no new point left and no promotion follows the rule, the best configuration
not yet promoted from the highest unfinished rung is promoted (the search drains), so a finite
space ends with every started configuration decided. While jobs are running, ``ask`` may return
``None`` meaning *wait for a result*; :attr:`finished` says whether the strategy is done.

No configuration is ever started twice; failed ones (``tell(job, None)``) are never promoted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from common.errors import ConfigError
from common.validate import int_at_least

from .density import ProductKDE
from .space import Space, point_key, to_python

log = logging.getLogger(__name__)


def rung_epochs(min_epochs: int, max_epochs: int, eta: int) -> list[int]:
    """The rungs: ``min_epochs * eta**k`` below ``max_epochs``, then ``max_epochs``.

    Raises ConfigError naming the flag when ``min_epochs`` < 1, ``eta`` < 2 or ``max_epochs`` < ``min_epochs``.
    """
    int_at_least(min_epochs, "--min-epochs", 1)
    int_at_least(eta, "--eta", 2)
    int_at_least(max_epochs, "--epochs", 1)
    if max_epochs < min_epochs:
        raise ConfigError(f"--epochs ({max_epochs}) must be at least --min-epochs ({min_epochs}) for a multi-fidelity search")
    rungs = []
    epochs = min_epochs
    while epochs < max_epochs:
        rungs.append(epochs)
        epochs *= eta
    rungs.append(max_epochs)
    return rungs


@dataclass(frozen=True)
class RungJob:
    """Train ``params`` from ``start_epochs`` (0: from scratch) to ``epochs``, the end of rung ``rung``."""

    params: dict[str, Any]
    rung: int
    epochs: int
    start_epochs: int
    top: bool  # the last rung: the configuration is then trained in full

    @property
    def key(self) -> str:
        """The configuration's point key."""
        return point_key(self.params)

    @property
    def cost_epochs(self) -> int:
        """Epochs this job trains."""
        return self.epochs - self.start_epochs


class MultiFidelityStrategy:
    """Rung bookkeeping and the asynchronous successive-halving promotion rule.

    Subclasses choose new configurations (:meth:`_new_point`) and may watch results (:meth:`_observe`).
    """

    name: ClassVar[str] = ""

    def __init__(self, space: Space, *, seed: int = 0, max_epochs: int = 8, min_epochs: int = 1, eta: int = 2) -> None:
        if not isinstance(space, Space):
            raise ConfigError(f"strategy {self.name!r} needs a search.space.Space, got {type(space).__name__}")
        int_at_least(seed, "seed", 0)
        self.space = space
        self.seed = int(seed)
        self.eta = int(eta)
        self.rungs = rung_epochs(min_epochs, max_epochs, eta)
        self.max_epochs = self.rungs[-1]
        self._rng = np.random.default_rng(self.seed)
        self._params: dict[str, dict[str, Any]] = {}  # key -> params of every configuration started
        self._results: list[dict[str, float]] = [{} for _ in self.rungs]  # rung -> key -> value (arrival order)
        self._promoted: list[set[str]] = [set() for _ in self.rungs]  # rung -> keys promoted from it
        self._failed: set[str] = set()
        self._running: dict[str, RungJob] = {}
        self._exhausted = False
        self._capped = False

    # Public interface
    def ask(self) -> Optional[RungJob]:
        """The next job: a promotion if one is due, else a new configuration at the lowest rung.

        ``None`` means nothing to do now: wait for a running job (see :attr:`finished`).
        """
        job = self._promotion(drain=False)
        if job is None and not self._exhausted and not self._capped:
            params = self._new_point()
            if params is None:
                self._exhausted = True
            else:
                params = to_python(dict(params))
                key = point_key(params)
                if key in self._params:  # a subclass bug must not become a repeated configuration
                    raise ConfigError(f"strategy {self.name} proposed {params} twice")
                self._params[key] = params
                job = RungJob(params, 0, self.rungs[0], 0, len(self.rungs) == 1)
        if job is None and not self._running and self._drain_allowed():
            job = self._promotion(drain=True)
        if job is not None:
            self._running[job.key] = job
        return job

    def stop_new(self) -> None:
        """Start no new configuration from now on (a cap on configurations was reached).

        Promotions by the rule go on; when none is left, the best configuration of the highest
        rung is promoted until one configuration has been trained in full.
        """
        self._capped = True

    def _drain_allowed(self) -> bool:
        # An exhausted space drains completely; a capped search until one configuration is complete.
        return self._exhausted or (self._capped and not self._results[-1])

    def tell(self, job: RungJob, value: Optional[float]) -> None:
        """Report the value of ``job`` at its rung (``None``: the job failed; the configuration stops)."""
        key = job.key
        self._running.pop(key, None)
        self._params.setdefault(key, to_python(dict(job.params)))
        if value is None:
            self._failed.add(key)
            return
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"tell needs a finite value or None, got {value!r} for {job.params}")
        if job.rung > 0:
            self._promoted[job.rung - 1].add(key)
        if key not in self._results[job.rung]:
            self._results[job.rung][key] = value
            self._observe(job, value)

    def register_running(self, job: RungJob) -> None:
        """Mark ``job`` as running (a resumed search re-runs a cut job): it is not handed out again."""
        key = job.key
        self._params.setdefault(key, to_python(dict(job.params)))
        if job.rung > 0:
            self._promoted[job.rung - 1].add(key)
        self._running[key] = job

    def replay(self, results: Iterable[tuple[Mapping[str, Any], int, Optional[float]]]) -> int:
        """Tell ``(params, rung, value)`` results in order (how a resumed search rebuilds its state)."""
        n = 0
        for params, rung, value in results:
            start = self.rungs[rung - 1] if rung > 0 else 0
            self.tell(RungJob(to_python(dict(params)), rung, self.rungs[rung], start, rung == len(self.rungs) - 1), value)
            n += 1
        return n

    @property
    def finished(self) -> bool:
        """True when no job is running and none will be handed out."""
        if not (self._exhausted or self._capped) or self._running:
            return False
        return self._next_promotion(drain=self._drain_allowed()) is None

    @property
    def n_configs(self) -> int:
        """Configurations started so far."""
        return len(self._params)

    def results(self, rung: int) -> dict[str, float]:
        """Values at ``rung`` by point key (arrival order)."""
        return dict(self._results[rung])

    def params_of(self, key: str) -> dict[str, Any]:
        """The parameters of a started configuration."""
        return dict(self._params[key])

    # Internals
    def _promotable(self, rung: int, drain: bool) -> list[str]:
        results = self._results[rung]
        ranked = sorted(results, key=lambda k: -results[k])  # stable: earlier results win ties
        top = ranked if drain else ranked[: len(ranked) // self.eta]
        return [k for k in top if k not in self._promoted[rung] and k not in self._running and k not in self._failed
                and k not in self._results[rung + 1]]

    def _next_promotion(self, drain: bool) -> Optional[tuple[int, str]]:
        # Highest rung first: finishing good configurations is what a search is for.
        for rung in reversed(range(len(self.rungs) - 1)):
            candidates = self._promotable(rung, drain)
            if candidates:
                return rung, candidates[0]
        return None

    def _promotion(self, drain: bool) -> Optional[RungJob]:
        found = self._next_promotion(drain)
        if found is None:
            return None
        rung, key = found
        self._promoted[rung].add(key)
        nxt = rung + 1
        return RungJob(dict(self._params[key]), nxt, self.rungs[nxt], self.rungs[rung], nxt == len(self.rungs) - 1)

    def _is_free(self, params: Mapping[str, Any]) -> bool:
        return point_key(params) not in self._params

    def _random_point(self) -> Optional[dict[str, Any]]:
        size = self.space.size()
        if size is not None and size <= 100_000:
            if not hasattr(self, "_order"):
                self._grid = self.space.grid()
                self._order = [int(i) for i in self._rng.permutation(len(self._grid))]
                self._cursor = 0
            while self._cursor < len(self._order):
                params = self._grid[self._order[self._cursor]]
                self._cursor += 1
                if self._is_free(params):
                    return dict(params)
            return None
        for _ in range(1000):
            params = self.space.sample(self._rng)
            if self._is_free(params):
                return params
        return None

    def _new_point(self) -> Optional[dict[str, Any]]:
        """A configuration never started before, or ``None`` when the space has none left."""
        return self._random_point()

    def _observe(self, job: RungJob, value: float) -> None:
        """Hook: a value arrived at ``job.rung``."""


class AshaStrategy(MultiFidelityStrategy):
    """Asynchronous successive halving with random new configurations (see the module docstring)."""

    name = "asha"


class BohbStrategy(MultiFidelityStrategy):
    """ASHA's rungs and promotions with new configurations from BOHB's density-ratio model.

    Options: ``top_fraction`` (share of a rung's results that form the good density ``l``, 0.15),
    ``random_fraction`` (share of proposals drawn at random, 1/3), ``n_samples`` (candidates
    drawn from ``l`` per proposal, 64), ``bandwidth_factor`` (widening of ``l`` while sampling,
    3), ``min_points`` (points each density needs; default ``d + 1`` for ``d`` dimensions).
    The model is fitted on the highest rung with at least ``max(min_points, top share) +
    min_points`` results; failed configurations count as the worst value at the rung they
    failed on.
    """

    name = "bohb"

    def __init__(self, space: Space, *, seed: int = 0, max_epochs: int = 8, min_epochs: int = 1, eta: int = 2,
                 top_fraction: float = 0.15, random_fraction: float = 1 / 3, n_samples: int = 64,
                 bandwidth_factor: float = 3.0, min_points: Optional[int] = None) -> None:
        super().__init__(space, seed=seed, max_epochs=max_epochs, min_epochs=min_epochs, eta=eta)
        for name, value, low, high in (("top_fraction", top_fraction, 0.0, 1.0),
                                       ("random_fraction", random_fraction, 0.0, 1.0)):
            if not isinstance(value, (int, float)) or not low <= value <= high or (name == "top_fraction" and value == 0):
                raise ConfigError(f"bohb {name} must be in ({low}, {high}], got {value!r}")
        int_at_least(n_samples, "bohb n_samples", 1)
        if not isinstance(bandwidth_factor, (int, float)) or bandwidth_factor <= 0:
            raise ConfigError(f"bohb bandwidth_factor must be > 0, got {bandwidth_factor!r}")
        self.min_points = len(space) + 1 if min_points is None else min_points
        int_at_least(self.min_points, "bohb min_points", 1)
        self.top_fraction = float(top_fraction)
        self.random_fraction = float(random_fraction)
        self.n_samples = int(n_samples)
        self.bandwidth_factor = float(bandwidth_factor)
        self._failed_at: dict[str, int] = {}
        self.n_model_proposals = 0

    def tell(self, job: RungJob, value: Optional[float]) -> None:
        """As :meth:`MultiFidelityStrategy.tell`; a failure is remembered for the model."""
        if value is None:
            self._failed_at[job.key] = job.rung
        super().tell(job, value)

    def _split(self, rung: int) -> Optional[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        results = self._results[rung]
        worst = min(results.values()) if results else 0.0
        scored = list(results.items()) + [(k, worst - 1.0) for k, r in self._failed_at.items() if r == rung]
        n_good = max(self.min_points, int(self.top_fraction * len(scored)))
        if len(scored) < n_good + self.min_points:
            return None
        ranked = sorted(scored, key=lambda kv: -kv[1])
        good = [self._params[k] for k, _ in ranked[:n_good]]
        bad = [self._params[k] for k, _ in ranked[n_good:]]
        return good, bad

    def _new_point(self) -> Optional[dict[str, Any]]:
        if self._rng.random() < self.random_fraction:
            return self._random_point()
        split = None
        for rung in reversed(range(len(self.rungs))):
            split = self._split(rung)
            if split is not None:
                break
        if split is None:
            return self._random_point()
        good, bad = split
        l_model, g_model = ProductKDE(self.space).fit(good), ProductKDE(self.space).fit(bad)
        best, best_score = None, -math.inf
        for _ in range(self.n_samples):
            candidate = l_model.sample(self._rng, self.bandwidth_factor)
            if not self._is_free(candidate):
                continue
            score = l_model.pdf(candidate) / max(g_model.pdf(candidate), 1e-300)
            if score > best_score:
                best, best_score = candidate, score
        if best is None:
            # Every draw was taken already: score what is left of a discrete space directly.
            size = self.space.size()
            if size is not None and size <= 100_000:
                for candidate in self.space.grid():
                    if self._is_free(candidate):
                        score = l_model.pdf(candidate) / max(g_model.pdf(candidate), 1e-300)
                        if score > best_score:
                            best, best_score = dict(candidate), score
            if best is None:
                return self._random_point()
        self.n_model_proposals += 1
        return best


MULTI_FIDELITY_STRATEGIES: dict[str, type[MultiFidelityStrategy]] = {cls.name: cls for cls in (AshaStrategy, BohbStrategy)}


def is_multi_fidelity(name: str) -> bool:
    """True when ``name`` is a multi-fidelity strategy (asha, bohb)."""
    return name in MULTI_FIDELITY_STRATEGIES


def make_multi_fidelity_strategy(name: str, space: Space, *, seed: int = 0, **options: Any) -> MultiFidelityStrategy:
    """Build multi-fidelity strategy ``name`` (asha, bohb); ``options`` are its keyword arguments.

    Raises ConfigError naming the strategy and the options it accepts for an unknown option.
    """
    if name not in MULTI_FIDELITY_STRATEGIES:
        raise ConfigError(f"unknown multi-fidelity strategy {name!r}; choose one of {sorted(MULTI_FIDELITY_STRATEGIES)}")
    from .strategies import build_with_options

    return build_with_options(MULTI_FIDELITY_STRATEGIES[name], name, space, seed, options)
