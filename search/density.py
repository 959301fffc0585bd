"""Product-kernel density over a search space, as BOHB's TPE-like model uses it (Falkner et al. 2018).

Each dimension gets a kernel that respects what it is:

- a numeric (ordinal) :class:`~search.space.Categorical` and a small :class:`~search.space.Integer`:
  a Gaussian over the *rank* of the value, normalised over the choices (a proper discrete
  distribution, so the order of ``lr`` in {1e-4 ... 0.1} is kept and no value outside the choices
  gets mass);
- a :class:`~search.space.Boolean` or any other categorical: the Aitchison-Aitken kernel
  (``1 - lam`` on the same value, ``lam / (c - 1)`` on each other one);
- a :class:`~search.space.Real` (or a large Integer): a Gaussian on the value scaled to [0, 1]
  (log-scaled when ``log``).

Bandwidths follow Scott's rule over the fitted points with a floor (half a rank on ordinal
dimensions, ``min_bandwidth`` on the unit scale), so a model fitted on a few equal points still
gives its neighbours some mass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from common.errors import ConfigError

from .space import Categorical, Dimension, Integer, Real, Space

#: Integers with at most this many values are treated as ordinal choices.
ORDINAL_MAX_VALUES = 64


class _Axis:
    """One dimension's encoding and kernel."""

    def __init__(self, name: str, dim: Dimension) -> None:
        self.name = name
        self.dim = dim
        if isinstance(dim, Categorical) and not dim.ordinal:
            self.kind = "categorical"
            self.choices = list(dim.choices)
        elif isinstance(dim, Categorical) or (isinstance(dim, Integer) and dim.size() <= ORDINAL_MAX_VALUES):
            self.kind = "ordinal"
            self.choices = sorted(dim.values())
        elif isinstance(dim, (Real, Integer)):
            self.kind = "continuous"
            self.choices = []
        else:
            raise ConfigError(f"the density model handles Real, Integer and Categorical dimensions, got {dim!r} for {name!r}")

    def encode(self, value: Any) -> float:
        """Rank (ordinal), choice index (categorical) or position in [0, 1] (continuous)."""
        if self.kind == "categorical":
            canon = self.dim.canonical(value) if isinstance(self.dim, Categorical) else value
            return float(self.choices.index(canon))
        if self.kind == "ordinal":
            canon = self.dim.canonical(value) if isinstance(self.dim, Categorical) else int(value)
            return float(self.choices.index(canon))
        low, high = float(self.dim.low), float(self.dim.high)
        if self.dim.log:
            return (math.log(float(value)) - math.log(low)) / (math.log(high) - math.log(low))
        return (float(value) - low) / (high - low)

    def decode(self, code: float) -> Any:
        """Inverse of :meth:`encode` (rounded to the nearest choice on discrete axes)."""
        if self.kind in ("categorical", "ordinal"):
            return self.choices[int(min(max(round(code), 0), len(self.choices) - 1))]
        code = min(max(code, 0.0), 1.0)
        low, high = float(self.dim.low), float(self.dim.high)
        value = math.exp(math.log(low) + code * (math.log(high) - math.log(low))) if self.dim.log else low + code * (high - low)
        if isinstance(self.dim, Integer):
            return int(min(max(round(value), self.dim.low), self.dim.high))
        return float(value)

    def bandwidth(self, codes: np.ndarray, min_bandwidth: float) -> float:
        """Scott's rule, floored (half a rank on ordinal axes); for categorical axes the kernel's lam."""
        n = len(codes)
        if self.kind == "categorical":
            c = len(self.choices)
            if c < 2:
                return 0.0
            # Shrinks with the number of points; never below a tenth of the uniform share.
            return float(min((c - 1) / c, max(0.1 * (c - 1) / c, (c - 1) / c * n ** (-0.2))))
        std = float(np.std(codes)) if n > 1 else 0.0
        floor = 0.5 if self.kind == "ordinal" else min_bandwidth
        return max(floor, 1.06 * std * n ** (-0.2))

    def kernel(self, x: float, centres: np.ndarray, bw: float) -> np.ndarray:
        """Kernel value of each centre at ``x`` (a density on continuous axes, a probability otherwise)."""
        if self.kind == "categorical":
            c = len(self.choices)
            if c < 2:
                return np.ones(len(centres))
            return np.where(centres == x, 1.0 - bw, bw / (c - 1))
        if self.kind == "ordinal":
            ranks = np.arange(len(self.choices), dtype=float)
            weights = np.exp(-0.5 * ((ranks[None, :] - centres[:, None]) / bw) ** 2)
            weights /= weights.sum(axis=1, keepdims=True)
            return weights[:, int(round(x))]
        return np.exp(-0.5 * ((x - centres) / bw) ** 2) / (bw * math.sqrt(2 * math.pi))

    def sample_near(self, centre: float, bw: float, rng: np.random.Generator) -> float:
        """A draw from the kernel centred on ``centre`` with bandwidth ``bw``."""
        if self.kind == "categorical":
            c = len(self.choices)
            if c < 2 or rng.random() >= bw:
                return centre
            others = [i for i in range(c) if i != int(centre)]
            return float(others[int(rng.integers(len(others)))])
        if self.kind == "ordinal":
            ranks = np.arange(len(self.choices), dtype=float)
            weights = np.exp(-0.5 * ((ranks - centre) / bw) ** 2)
            return float(rng.choice(ranks, p=weights / weights.sum()))
        return float(min(max(rng.normal(centre, bw), 0.0), 1.0))


class ProductKDE:
    """A kernel density over the points of a :class:`~search.space.Space`.

    ``fit(points)`` takes parameter dicts; ``pdf(point)`` is the density (a product of the
    per-dimension kernels averaged over the fitted points); ``sample(rng, bandwidth_factor)``
    draws a point near a random fitted one with every bandwidth widened by the factor.
    """

    def __init__(self, space: Space, *, min_bandwidth: float = 1e-3) -> None:
        if not isinstance(space, Space):
            raise ConfigError(f"ProductKDE needs a search.space.Space, got {type(space).__name__}")
        if not (isinstance(min_bandwidth, (int, float)) and min_bandwidth > 0):
            raise ConfigError(f"ProductKDE min_bandwidth must be > 0, got {min_bandwidth!r}")
        self.axes = [_Axis(name, dim) for name, dim in space.items()]
        self.min_bandwidth = float(min_bandwidth)
        self._codes = np.zeros((0, len(self.axes)))
        self.bandwidths: list[float] = []

    def encode(self, point: Mapping[str, Any]) -> np.ndarray:
        """The point's coordinates, one per dimension."""
        return np.array([axis.encode(point[axis.name]) for axis in self.axes], dtype=float)

    def fit(self, points: Sequence[Mapping[str, Any]]) -> "ProductKDE":
        """Fit on ``points`` (at least one); returns self."""
        if not points:
            raise ConfigError("ProductKDE.fit needs at least one point")
        self._codes = np.stack([self.encode(p) for p in points])
        self.bandwidths = [axis.bandwidth(self._codes[:, i], self.min_bandwidth) for i, axis in enumerate(self.axes)]
        return self

    @property
    def n_points(self) -> int:
        """How many points the model was fitted on."""
        return len(self._codes)

    def pdf(self, point: Mapping[str, Any]) -> float:
        """Density at ``point``."""
        if not self.n_points:
            raise ConfigError("ProductKDE.pdf called before fit")
        x = self.encode(point)
        prod = np.ones(self.n_points)
        for i, axis in enumerate(self.axes):
            prod *= axis.kernel(x[i], self._codes[:, i], self.bandwidths[i])
        return float(prod.mean())

    def sample(self, rng: np.random.Generator, bandwidth_factor: float = 1.0) -> dict[str, Any]:
        """A point drawn around a random fitted point, each bandwidth times ``bandwidth_factor``."""
        if not self.n_points:
            raise ConfigError("ProductKDE.sample called before fit")
        centre = self._codes[int(rng.integers(self.n_points))]
        out = {}
        for i, axis in enumerate(self.axes):
            bw = self.bandwidths[i] * bandwidth_factor
            if axis.kind == "categorical" and len(axis.choices) > 1:
                bw = min(bw, (len(axis.choices) - 1) / len(axis.choices))
            out[axis.name] = axis.decode(axis.sample_near(centre[i], bw, rng))
        return out
