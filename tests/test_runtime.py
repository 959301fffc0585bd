"""harness.runtime.captured_output: native and Python output of a block goes to a buffer, then back."""

from __future__ import annotations

import os
import sys

import pytest

from common.errors import ConfigError
from harness.runtime import captured_output


@pytest.mark.parametrize("fd", [1, 2])
def test_native_and_python_writes_are_captured_and_the_stream_is_restored(fd, capfd):
    stream = sys.stdout if fd == 1 else sys.stderr
    with captured_output(fd) as captured:
        os.write(fd, b"from C\n")  # what a native library does
        print("from Python", file=sys.stdout if fd == 1 else sys.stderr)
    assert "from C" in captured.text and "from Python" in captured.text
    print("after", file=stream)
    stream.flush()
    seen = capfd.readouterr()
    assert "after" in (seen.out if fd == 1 else seen.err)
    assert "from C" not in seen.out + seen.err


def test_the_text_is_kept_when_the_block_raises(capfd):
    with pytest.raises(RuntimeError):
        with captured_output(2) as captured:
            os.write(2, b"why it failed\n")
            raise RuntimeError("boom")
    assert "why it failed" in captured.text
    assert "why it failed" not in capfd.readouterr().err


def test_only_stdout_and_stderr():
    with pytest.raises(ConfigError, match="fd 1 or 2"):
        with captured_output(3):
            pass
