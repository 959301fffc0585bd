"""Reading Paddle's pickled weights (``.pdparams``, ``.pdopt``) without running code from them.

``paddle.load`` unpickles, and a pickle can call any importable function while it loads
(``os.system`` through ``__reduce__``). What Paddle 2.6 and 3.x write for the state dict of a
model or an optimizer is far narrower: a dict of numpy arrays (``numpy.ndarray``,
``numpy.dtype`` and ``numpy[._]core.multiarray._reconstruct``), nested dicts of Python
scalars (the learning-rate scheduler, the ``StructuredToParameterName@@`` name table), and,
for tensors nested below the top level, ``(name, array)`` tuples. :func:`read_paddle_state`
resolves exactly those globals and refuses every other one, naming the file and the global,
before anything is called. Arrays of Python objects are refused too: a state dict holds
numbers.
"""

from __future__ import annotations

import collections
import importlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .torch_checkpoint import CheckpointFormatError, UnsafeCheckpointError

__all__ = ["NAME_TABLE_KEY", "read_paddle_state"]

NAME_TABLE_KEY = "StructuredToParameterName@@"


def _numpy_global(module: str, name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; a file written under either names its own.
    for candidate in (module, module.replace("numpy.core", "numpy._core"), module.replace("numpy._core", "numpy.core")):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(f"{module}.{name}")


_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
    ("builtins", "tuple"),
}


class _PaddleUnpickler(pickle.Unpickler):
    """Resolves only the globals Paddle's state dicts use; anything else is an error."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafeCheckpointError(
                f"{self._source}: refusing to load global '{module}.{name}'; a Paddle weights file holds only "
                "numpy arrays, numbers, strings and plain containers"
            )
        if module == "collections":
            return collections.OrderedDict
        if module == "builtins":
            return tuple
        return _numpy_global(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"{self._source}: unexpected persistent id {pid!r} in a Paddle weights file")


def _check_arrays(value: Any, source: str, depth: int = 0) -> None:
    if depth > 32:
        raise CheckpointFormatError(f"{source}: containers nested more than 32 deep")
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise UnsafeCheckpointError(f"{source}: an array of Python objects is not weights")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_arrays(key, source, depth + 1)
            _check_arrays(item, source, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_arrays(item, source, depth + 1)


def read_paddle_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state dict in a ``.pdparams`` / ``.pdopt`` file, read with a restricted unpickler.

    Values are numpy arrays (tensors nested below the top level, which Paddle writes as
    ``(name, array)`` pairs, become arrays too), numbers, strings and containers of those;
    Paddle's ``StructuredToParameterName@@`` name table is left out, as ``paddle.load`` does.

    Raises:
        UnsafeCheckpointError: the file names a global other than numpy's array builders (its
            code is never run), or holds object arrays.
        CheckpointFormatError: not a pickle, truncated, or not a dict.
    """
    path = Path(path)
    source = str(path)
    data = path.read_bytes()
    try:
        state = _PaddleUnpickler(io.BytesIO(data), source).load()
    except CheckpointFormatError:
        raise
    except Exception as exc:  # truncated or malformed pickles raise many types
        raise CheckpointFormatError(f"{source}: not a readable Paddle weights file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise CheckpointFormatError(f"{source}: holds a {type(state).__name__}, not a state dict")
    _check_arrays(state, source)
    # Paddle's table of structured to parameter names is metadata, not a tensor; paddle.load drops it too.
    return {key: _untuple(value) for key, value in state.items() if key != NAME_TABLE_KEY}


def _untuple(value: Any) -> Any:
    # Paddle writes a tensor that is not at the top level as (name, ndarray).
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], np.ndarray):
        return value[1]
    if isinstance(value, dict):
        return {k: _untuple(v) for k, v in value.items()}
    return value
