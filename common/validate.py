"""Argument checks shared by every layer, each raising one clear line that names the value.

The checks take the exception class to raise (``ConfigError`` by default) so that a model
constructor can raise ``ModelError`` and the kernels a plain ``ValueError``.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

from .errors import ConfigError


def is_int(value: Any, *, integral_float: bool = False) -> bool:
    """True for an ``int`` or numpy integer, never for a ``bool``.

    With ``integral_float`` a real number equal to an integer (``3.0``) counts too.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return integral_float and float(value).is_integer()


def positive_int(value: Any, name: str, *, error: type[Exception] = ConfigError, integral_float: bool = False) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (see :func:`is_int`).

    Raises:
        error: ``"{name} must be a positive integer, got {value!r}"``.
    """
    if not is_int(value, integral_float=integral_float) or value < 1:
        raise error(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def optional_positive_int(value: Any, name: str, *, error: type[Exception] = ConfigError) -> Optional[int]:
    """``None``, or ``value`` as an ``int`` if it is an integer >= 1.

    Raises:
        error: ``"{name} must be a positive integer or None, got {value!r}"``.
    """
    if value is None:
        return None
    if not is_int(value) or value < 1:
        raise error(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def non_negative_int(value: Any, name: str, *, error: type[Exception] = ConfigError,
                     integral_float: bool = False) -> int:
    """``value`` as an ``int`` if it is an integer >= 0.

    Raises:
        error: ``"{name} must be a non-negative integer, got {value!r}"``.
    """
    if not is_int(value, integral_float=integral_float) or value < 0:
        raise error(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def int_at_least(value: Any, name: str, low: int, *, error: type[Exception] = ConfigError) -> int:
    """``value`` as an ``int`` if it is an integer >= ``low``.

    Raises:
        error: ``"{name} must be an integer >= {low}, got {value!r}"``.
    """
    if not is_int(value) or value < low:
        raise error(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def at_least(value: Any, name: str, low: int, *, error: type[Exception] = ConfigError) -> Any:
    """``value`` unchanged if it is >= ``low``: the check of a number argparse already parsed.

    Raises:
        error: ``"{name} must be >= {low}, got {value}"``.
    """
    if value < low:
        raise error(f"{name} must be >= {low}, got {value}")
    return value
