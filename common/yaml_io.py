"""YAML reading with YAML 1.2 numbers: ``1e-3`` is a float, as users expect.

PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-3``) and ``1e-3`` is read as a
string; in a config or search-space file that would turn a learning rate into text.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """SafeLoader that also resolves exponent floats without a dot (``1e-3``, ``3E+2``)."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 exponent floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
