"""common.machine: /proc/cpuinfo read once, machine facts without importing Paddle."""

from __future__ import annotations

import json
import sys

import numpy as np

from common import machine


def test_cpu_info_reads_once_and_survives_a_missing_file(monkeypatch):
    machine.cpu_info.cache_clear()
    monkeypatch.setattr(machine, "CPUINFO", "/nonexistent/cpuinfo")
    try:
        info = machine.cpu_info()
        assert info["vendor"] == "" and info["flags"] == frozenset() and isinstance(info["model"], str)
        assert machine.cpu_info() is info  # cached
    finally:
        machine.cpu_info.cache_clear()


def test_cpu_info_parses_the_first_processor(tmp_path, monkeypatch):
    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 amx_bf16\n\n"
            "processor\t: 1\nvendor_id\t: Other\n")
    (tmp_path / "cpuinfo").write_text(text)
    machine.cpu_info.cache_clear()
    monkeypatch.setattr(machine, "CPUINFO", str(tmp_path / "cpuinfo"))
    try:
        assert machine.cpu_vendor() == "GenuineIntel"
        assert machine.cpu_flags() == frozenset({"fpu", "avx2", "amx_bf16"})
        facts = machine.machine_facts(backend="cpu")
        assert facts["cpu_model"] == "Test CPU" and facts["cpu_flags"] == ["avx2", "amx_bf16"]
        assert facts["backend"] == "cpu"
    finally:
        machine.cpu_info.cache_clear()


def test_machine_facts_are_json_ready_and_do_not_import_paddle():
    had_paddle = "paddle" in sys.modules
    facts = machine.machine_facts()
    json.dumps(facts)
    assert facts["cpu_cores"] >= 1 and facts["python_version"] and facts["numpy_version"] == np.__version__
    assert set(machine.RUNTIME_VARIABLES) <= set(facts)
    assert ("paddle" in sys.modules) == had_paddle
