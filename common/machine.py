"""Facts about the machine a number was measured on: CPU model and flags, cores, versions.

``/proc/cpuinfo`` is read once per process (:func:`cpu_info`); every benchmark records
:func:`machine_facts` under its ``environment`` key, adding its own fields. Nothing here
imports Paddle: its version is reported when the caller already imported it, or from the
installed package's metadata.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from typing import Any, Optional

CPUINFO = "/proc/cpuinfo"
#: The ISA extensions that decide which kernels oneDNN/MKL and our fused preprocessing can use.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")
#: Environment variables that change how the math libraries run.
RUNTIME_VARIABLES = ("MKL_DEBUG_CPU_TYPE", "OMP_NUM_THREADS")


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """The first processor's ``model``, ``vendor`` and ``flags`` (a frozenset) from /proc/cpuinfo.

    Read once per process. Where the file cannot be read (not Linux, a sandbox) the model
    falls back to :func:`platform.processor`, the vendor is ``''`` and the flags are empty.
    """
    fields: dict[str, str] = {}
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if fields:  # one processor is enough: they all report the same
                        break
                    continue
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "vendor": fields.get("vendor_id", ""),
        "flags": frozenset(fields.get("flags", "").split()),
    }


def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    return cpu_info()["flags"]


def cpu_vendor() -> str:
    """CPU vendor string ('AuthenticAMD', 'GenuineIntel', or '' if unknown)."""
    return cpu_info()["vendor"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _package_version(module: str, *distributions: str) -> Optional[str]:
    """``module.__version__`` if it is already imported, else the installed distribution's version."""
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__version__", None):
        return str(loaded.__version__)
    from importlib import metadata

    for dist in distributions:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine_facts(**extra: Any) -> dict[str, Any]:
    """JSON-ready facts about this machine and process, updated with ``extra``.

    Keys: ``cpu_model``, ``cpu_vendor``, ``cpu_flags`` (those of :data:`ISA_FLAGS` present),
    ``cpu_logical`` (the machine's logical CPUs), ``cpu_cores`` (the ones this process may
    use), ``os``, ``python_version``, ``numpy_version``, ``paddle_version`` (``None`` when
    Paddle is not installed; Paddle is never imported for this), and the variables of
    :data:`RUNTIME_VARIABLES` (``None`` when unset). A benchmark adds its own fields
    (backend, precision, model, library versions) through ``extra``.
    """
    info = cpu_info()
    facts: dict[str, Any] = {
        "cpu_model": info["model"],
        "cpu_vendor": info["vendor"],
        "cpu_flags": [flag for flag in ISA_FLAGS if flag in info["flags"]],
        "cpu_logical": os.cpu_count() or 0,
        "cpu_cores": usable_cores(),
        "os": platform.platform(),
        "python_version": platform.python_version(),
        "numpy_version": _package_version("numpy", "numpy"),
        "paddle_version": _package_version("paddle", "paddlepaddle", "paddlepaddle-gpu"),
    }
    facts.update({name: os.environ.get(name) for name in RUNTIME_VARIABLES})
    facts.update(extra)
    return facts
