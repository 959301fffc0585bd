"""common.validate: the shared argument checks and their messages."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import ConfigError
from common.validate import at_least, int_at_least, is_int, non_negative_int, optional_positive_int, positive_int


@pytest.mark.parametrize("value", [True, 0, -1, 2.5, 3.0, "3", None])
def test_positive_int_rejects(value):
    with pytest.raises(ConfigError, match=r"n must be a positive integer, got "):
        positive_int(value, "n")


def test_checks_accept_and_convert():
    assert positive_int(np.int64(4), "n") == 4 and type(positive_int(np.int64(4), "n")) is int
    assert positive_int(3.0, "n", integral_float=True) == 3
    assert optional_positive_int(None, "n") is None and optional_positive_int(2, "n") == 2
    assert non_negative_int(0, "n") == 0
    assert int_at_least(10, "n", 10) == 10
    assert at_least(0.5, "--x", 0) == 0.5
    assert not is_int(True) and not is_int(2.0) and is_int(2.0, integral_float=True)


def test_checks_raise_the_given_error_with_the_value():
    with pytest.raises(ValueError, match="n must be a positive integer or None, got 0"):
        optional_positive_int(0, "n", error=ValueError)
    with pytest.raises(ConfigError, match="n must be a non-negative integer, got -1"):
        non_negative_int(-1, "n")
    with pytest.raises(ConfigError, match="n must be an integer >= 10, got 9"):
        int_at_least(9, "n", 10)
    with pytest.raises(ConfigError, match="--x must be >= 1, got 0"):
        at_least(0, "--x", 1)
