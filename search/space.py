"""Search spaces: named dimensions, YAML loading, grid enumeration.

A :class:`Space` is an ordered mapping of ``name -> dimension``; every name is a
``TrainConfig`` field, so a point of the space is applied to a base config with
``cfg.replace(**params)``. Four dimension kinds exist:

- :class:`Real` ``(low, high, log=False)``: continuous; ``log=True`` samples log-uniformly.
- :class:`Integer` ``(low, high, log=False)``: every integer in ``[low, high]``.
- :class:`Categorical` ``(choices)``: a finite list of values (numbers, strings or booleans).
  When every choice is a number, the choices are *ordinal* (``Categorical.ordinal``): a
  model-based strategy may treat them by their rank in sorted order (so ``lr`` in
  {1e-4 ... 0.1} keeps its ordering instead of being one-hot encoded).
- :class:`Boolean` ``()``: ``False`` / ``True``.

Values handed out by this module are always plain Python ``bool``/``int``/``float``/``str``
(never numpy scalars), so they can be written to JSON and compared with ``==``.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import yaml

from common.errors import ConfigError
from common.yaml_io import safe_load

#: Largest grid that :meth:`Space.grid` (and strategies that enumerate the space) will build.
MAX_GRID_POINTS = 1_000_000

ParamValue = Union[bool, int, float, str]


def to_python(value: Any) -> Any:
    """Convert numpy scalars/arrays (and containers of them) to plain JSON-safe Python values.

    ``np.bool_`` becomes ``bool``, ``np.integer`` ``int``, ``np.floating`` ``float``; lists,
    tuples and dicts are converted recursively (tuples become lists, dict keys become ``str``).
    """
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray):
        return [to_python(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    return value


def _round_sig(x: float, digits: int = 12) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def point_key(params: Mapping[str, Any]) -> str:
    """Canonical string identifying a point: sorted keys, floats rounded to 12 significant digits.

    Two parameter dicts that differ only by float noise in the last bits (e.g. after a JSON round
    trip or a strategy's own value transform) get the same key; this is what deduplication and replay use.
    """
    canon = {}
    for name, value in params.items():
        value = to_python(value)
        if isinstance(value, float):
            value = _round_sig(value)
        canon[str(name)] = value
    return json.dumps(canon, sort_keys=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))


class Dimension:
    """Base class of the dimension kinds; see the module docstring."""

    kind: str = ""

    @property
    def is_discrete(self) -> bool:
        """True when the dimension has a finite set of values."""
        raise NotImplementedError

    def values(self) -> list[ParamValue]:
        """Every value of a discrete dimension, in enumeration order."""
        raise ConfigError(f"{self!r} is continuous and has no finite list of values")

    def size(self) -> int:
        """Number of values of a discrete dimension."""
        return len(self.values())

    def sample(self, rng: np.random.Generator) -> ParamValue:
        """One value drawn uniformly (log-uniformly when ``log``) with ``rng``."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """True when ``value`` is a legal value of this dimension."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description, the inverse of :func:`dimension_from_dict`."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dimension) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"


class Real(Dimension):
    """Continuous interval ``[low, high]``; ``log=True`` is log-uniform (needs ``low > 0``)."""

    kind = "real"

    def __init__(self, low: float, high: float, log: bool = False) -> None:
        if not (_is_number(low) and _is_number(high)) or not (math.isfinite(low) and math.isfinite(high)):
            raise ConfigError(f"Real needs finite numbers low and high, got low={low!r}, high={high!r}")
        if not low < high:
            raise ConfigError(f"Real needs low < high, got low={low!r}, high={high!r}")
        if not isinstance(log, bool):
            raise ConfigError(f"Real log must be true or false, got {log!r}")
        if log and low <= 0:
            raise ConfigError(f"Real with log=True needs low > 0, got low={low!r}")
        self.low, self.high, self.log = float(low), float(high), log

    @property
    def is_discrete(self) -> bool:
        return False

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def contains(self, value: Any) -> bool:
        return _is_number(value) and self.low <= float(value) <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}


class Integer(Dimension):
    """Every integer in ``[low, high]``; ``log=True`` samples log-uniformly (needs ``low > 0``)."""

    kind = "integer"

    def __init__(self, low: int, high: int, log: bool = False) -> None:
        for name, v in (("low", low), ("high", high)):
            if not _is_number(v) or int(v) != v:
                raise ConfigError(f"Integer needs integer {name}, got {name}={v!r}")
        if not low < high:
            raise ConfigError(f"Integer needs low < high, got low={low!r}, high={high!r}")
        if not isinstance(log, bool):
            raise ConfigError(f"Integer log must be true or false, got {log!r}")
        if log and low <= 0:
            raise ConfigError(f"Integer with log=True needs low > 0, got low={low!r}")
        self.low, self.high, self.log = int(low), int(high), log

    @property
    def is_discrete(self) -> bool:
        return True

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1))

    def size(self) -> int:
        return self.high - self.low + 1

    def sample(self, rng: np.random.Generator) -> int:
        if self.log:
            # Log-uniform over [low, high + 1), floored, so ``high`` gets its share too.
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
            return int(min(max(math.floor(x), self.low), self.high))
        return int(rng.integers(self.low, self.high + 1))

    def contains(self, value: Any) -> bool:
        return _is_number(value) and int(value) == value and self.low <= int(value) <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}


class Categorical(Dimension):
    """A finite list of distinct choices; numeric choices are ordinal (see the module docstring)."""

    kind = "categorical"

    def __init__(self, choices: Any) -> None:
        if isinstance(choices, (str, bytes)) or not hasattr(choices, "__iter__"):
            raise ConfigError(f"Categorical needs a list of choices, got {choices!r}")
        values = [to_python(c) for c in choices]
        if len(values) < 1:
            raise ConfigError("Categorical needs at least one choice, got an empty list")
        for v in values:
            if not isinstance(v, (bool, int, float, str)):
                raise ConfigError(f"Categorical choices must be numbers, strings or booleans, got {v!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"Categorical choices must be finite, got {v!r}")
        keys = [json.dumps(v) for v in values]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"Categorical choices must be distinct, got {values!r}")
        self.choices: tuple[ParamValue, ...] = tuple(values)
        self.ordinal = all(_is_number(v) for v in values) and len(values) > 1

    @property
    def is_discrete(self) -> bool:
        return True

    def values(self) -> list[ParamValue]:
        return list(self.choices)

    def sample(self, rng: np.random.Generator) -> ParamValue:
        return self.choices[int(rng.integers(len(self.choices)))]

    def contains(self, value: Any) -> bool:
        value = to_python(value)
        return any(type(value) is type(c) and value == c for c in self.choices) or (
            _is_number(value) and any(_is_number(c) and float(value) == float(c) for c in self.choices)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "choices": list(self.choices)}

    def canonical(self, value: Any) -> ParamValue:
        """The choice equal to ``value`` (``1`` gives the choice ``1.0``; float noise is forgiven).

        Raises ConfigError naming the value and the choices when there is none.
        """
        value = to_python(value)
        for c in self.choices:
            if type(c) is type(value) and c == value:
                return c
        if _is_number(value):
            for c in self.choices:
                if _is_number(c) and math.isclose(float(c), float(value), rel_tol=1e-9):
                    return c
        raise ConfigError(f"{value!r} is not one of the choices {list(self.choices)!r}")


class Boolean(Categorical):
    """``False`` / ``True``."""

    kind = "boolean"

    def __init__(self) -> None:
        super().__init__([False, True])

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind}

    def __repr__(self) -> str:
        return "Boolean()"


def dimension_from_dict(spec: Mapping[str, Any], where: str = "space") -> Dimension:
    """Build a dimension from its dict form (as in a YAML space file); ``where`` prefixes errors.

    Accepted forms: ``{type: real, low, high, log}``, ``{type: integer, low, high, log}``,
    ``{type: categorical, choices: [...]}``, ``{type: boolean}``; a bare list is a categorical.
    """
    if isinstance(spec, (list, tuple)):
        spec = {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping with a 'type' key or a list of choices, got {spec!r}")
    kind = spec.get("type")
    allowed: dict[str, tuple[str, ...]] = {
        "real": ("low", "high", "log"),
        "integer": ("low", "high", "log"),
        "categorical": ("choices",),
        "boolean": (),
    }
    if kind not in allowed:
        raise ConfigError(f"{where}: 'type' must be one of {sorted(allowed)}, got {kind!r}")
    unknown = sorted(set(spec) - {"type", *allowed[kind]})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for type {kind}; allowed: {list(allowed[kind])}")
    try:
        if kind in ("real", "integer"):
            missing = [k for k in ("low", "high") if k not in spec]
            if missing:
                raise ConfigError(f"missing key(s) {missing}")
            cls = Real if kind == "real" else Integer
            return cls(spec["low"], spec["high"], log=spec.get("log", False))
        if kind == "categorical":
            if "choices" not in spec:
                raise ConfigError("missing key 'choices'")
            return Categorical(spec["choices"])
        return Boolean()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass(frozen=True, eq=False)
class Space:
    """Ordered mapping ``name -> Dimension``; each name must be a ``TrainConfig`` field."""

    dimensions: tuple[tuple[str, Dimension], ...]

    def __init__(self, dimensions: Mapping[str, Dimension] | Any) -> None:
        items = list(dimensions.items()) if isinstance(dimensions, Mapping) else list(dimensions)
        if not items:
            raise ConfigError("a search space needs at least one dimension")
        seen = set()
        for name, dim in items:
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(f"dimension names must be identifiers, got {name!r}")
            if name in seen:
                raise ConfigError(f"dimension {name!r} appears twice")
            if not isinstance(dim, Dimension):
                raise ConfigError(f"dimension {name!r} must be a Real, Integer, Categorical or Boolean, got {dim!r}")
            seen.add(name)
        object.__setattr__(self, "dimensions", tuple(items))

    # Mapping-like access
    @property
    def names(self) -> list[str]:
        """Dimension names in order."""
        return [n for n, _ in self.dimensions]

    def __getitem__(self, name: str) -> Dimension:
        for n, d in self.dimensions:
            if n == name:
                return d
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.dimensions)

    def items(self) -> list[tuple[str, Dimension]]:
        """``(name, dimension)`` pairs in order."""
        return list(self.dimensions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return "Space(" + ", ".join(f"{n}={d!r}" for n, d in self.dimensions) + ")"

    # Discreteness and enumeration
    @property
    def is_discrete(self) -> bool:
        """True when every dimension is discrete (the space is a finite grid)."""
        return all(d.is_discrete for _, d in self.dimensions)

    def size(self) -> int | None:
        """Number of points of a discrete space; ``None`` when some dimension is continuous."""
        if not self.is_discrete:
            return None
        return math.prod(d.size() for _, d in self.dimensions)

    def grid(self) -> list[dict[str, ParamValue]]:
        """Every point, in fixed order (first dimension varies slowest); discrete spaces only."""
        if not self.is_discrete:
            continuous = [n for n, d in self.dimensions if not d.is_discrete]
            raise ConfigError(f"grid enumeration needs a discrete space; continuous dimension(s): {continuous}")
        size = self.size()
        if size > MAX_GRID_POINTS:
            raise ConfigError(f"the grid has {size} points, more than the limit {MAX_GRID_POINTS}")
        names = self.names
        return [dict(zip(names, combo)) for combo in itertools.product(*(d.values() for _, d in self.dimensions))]

    def sample(self, rng: np.random.Generator) -> dict[str, ParamValue]:
        """One point with each dimension drawn independently."""
        return {n: d.sample(rng) for n, d in self.dimensions}

    def validate(self, params: Mapping[str, Any]) -> dict[str, ParamValue]:
        """Check ``params`` is a point of this space; returns it as plain Python values."""
        missing = [n for n in self.names if n not in params]
        extra = [n for n in params if n not in self]
        if missing or extra:
            raise ConfigError(f"point {dict(params)!r} does not match the space: missing {missing}, unexpected {extra}")
        out = {}
        for name, dim in self.dimensions:
            value = to_python(params[name])
            if not dim.contains(value):
                raise ConfigError(f"{name}={value!r} is outside its dimension {dim!r}")
            out[name] = dim.canonical(value) if isinstance(dim, Categorical) else value
        return out

    # Serialisation
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-safe ``{name: dimension dict}`` (insertion ordered)."""
        return {n: d.to_dict() for n, d in self.dimensions}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "space") -> "Space":
        """Inverse of :meth:`to_dict`; ``where`` names the source in errors."""
        if not isinstance(data, Mapping) or not data:
            raise ConfigError(f"{where}: expected a non-empty mapping of dimension name to dimension")
        return cls({str(n): dimension_from_dict(spec, f"{where}: dimension {n!r}") for n, spec in data.items()})

    def with_dimensions(self, updates: Mapping[str, Dimension | None]) -> "Space":
        """Copy with dimensions added or replaced; a ``None`` value removes that dimension."""
        items = dict(self.dimensions)
        for name, dim in updates.items():
            if dim is None:
                items.pop(name, None)
            else:
                items[name] = dim
        return Space(items)


#: The seed's grid: 7 learning rates x 7 L2 decays x label smoothing x mixup = 196 points.
DEFAULT_LR = (0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001)
DEFAULT_L2 = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)


def default_space() -> Space:
    """The seed's 196-point grid over lr, l2_decay, label_smoothing and mixup."""
    return Space(
        {
            "lr": Categorical(DEFAULT_LR),
            "l2_decay": Categorical(DEFAULT_L2),
            "label_smoothing": Boolean(),
            "mixup": Boolean(),
        }
    )


def load_space(path: str | Path, base: Space | None = None, known_fields: Any = None) -> Space:
    """Load a YAML space file; it adds to or changes the dimensions of ``base`` (default: the seed's).

    File format (every key optional)::

        replace: false        # true: start from an empty space instead of ``base``
        remove: [mixup]       # dimension names to drop from the base
        dimensions:
          lr: {type: real, low: 1.0e-4, high: 0.1, log: true}
          epochs: {type: integer, low: 5, high: 30}
          batch_size: [16, 32, 64]            # a bare list is a categorical
          schedule: {type: categorical, choices: [cosine, step]}
          label_smoothing: {type: boolean}

    A file holding only a mapping of dimensions (no ``dimensions`` key) is read as
    ``dimensions``. ``known_fields`` (e.g. the ``TrainConfig`` field names) makes unknown
    dimension names an error. Every error names the file.
    """
    path = Path(path)
    try:
        data = safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"space file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"space file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"space file {path} must hold a mapping (see 'dimensions:' in the docs)")
    control = {"replace", "remove", "dimensions"}
    if "dimensions" in data:
        unknown = sorted(set(data) - control)
        if unknown:
            raise ConfigError(f"space file {path}: unknown top-level key(s) {unknown}; allowed: {sorted(control)}")
        dims = data.get("dimensions") or {}
    else:
        dims = {k: v for k, v in data.items() if k not in ("replace", "remove")}
    if not isinstance(dims, Mapping):
        raise ConfigError(f"space file {path}: 'dimensions' must be a mapping of name to dimension")
    replace = data.get("replace", False)
    if not isinstance(replace, bool):
        raise ConfigError(f"space file {path}: 'replace' must be true or false, got {replace!r}")
    remove = data.get("remove", []) or []
    if not isinstance(remove, list) or not all(isinstance(r, str) for r in remove):
        raise ConfigError(f"space file {path}: 'remove' must be a list of dimension names, got {remove!r}")
    base = base if base is not None else default_space()
    items: dict[str, Dimension] = {} if replace else dict(base.dimensions)
    for name in remove:
        if name not in items:
            raise ConfigError(f"space file {path}: cannot remove {name!r}, not in the space {list(items)}")
        del items[name]
    for name, spec in dims.items():
        items[str(name)] = dimension_from_dict(spec, f"space file {path}: dimension {name!r}")
    if known_fields is not None:
        unknown = sorted(set(items) - set(known_fields))
        if unknown:
            raise ConfigError(f"space file {path}: unknown dimension name(s) {unknown}; they must be TrainConfig fields")
    if not items:
        raise ConfigError(f"space file {path}: the resulting space has no dimensions")
    try:
        return Space(items)
    except ConfigError as exc:
        raise ConfigError(f"space file {path}: {exc}") from None
