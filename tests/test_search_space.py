"""Search spaces: the seed's grid, YAML space files, JSON safety; no optimiser library behind them."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from harness.config import TrainConfig
from common.errors import ConfigError
from search.space import (
    Boolean,
    Categorical,
    Integer,
    Real,
    Space,
    default_space,
    load_space,
    point_key,
    to_python,
)

TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def test_default_space_is_the_seeds_196_point_grid():
    space = default_space()
    assert space.names == ["lr", "l2_decay", "label_smoothing", "mixup"]
    assert set(space.names) <= TRAIN_FIELDS
    grid = space.grid()
    assert len(grid) == 196 == space.size()
    assert len({point_key(p) for p in grid}) == 196
    assert {p["lr"] for p in grid} == {0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001}
    assert {p["l2_decay"] for p in grid} == {1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6}
    # Fixed order: first dimension varies slowest, values in the order listed.
    assert grid[0] == {"lr": 0.1, "l2_decay": 1e-3, "label_smoothing": False, "mixup": False}
    assert grid[1] == {"lr": 0.1, "l2_decay": 1e-3, "label_smoothing": False, "mixup": True}
    assert grid[-1] == {"lr": 0.0001, "l2_decay": 1e-6, "label_smoothing": True, "mixup": True}
    assert grid == default_space().grid()
    for point in grid[:5]:
        TrainConfig().replace(**point)  # every name is a TrainConfig field


def test_search_package_never_imports_paddle():
    code = "import sys, search, search.replay, search.analytic, bench.report; print('paddle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_search_package_imports_nothing_from_the_layers_above_or_below():
    import ast
    from pathlib import Path

    import search

    imported = set()
    for path in Path(search.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # lazy imports inside functions too
            if isinstance(node, ast.Import):
                imported |= {(path.name, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add((path.name, node.module.split(".")[0]))
    assert not [(f, m) for f, m in imported if m in ("harness", "bench", "paddle", "kernels")]


def test_to_python_converts_numpy_scalars():
    converted = to_python({"a": np.bool_(True), "b": np.float64(0.5), "c": np.int64(3), "d": [np.float32(1.5)]})
    assert converted == {"a": True, "b": 0.5, "c": 3, "d": [1.5]}
    assert type(converted["a"]) is bool and type(converted["b"]) is float and type(converted["c"]) is int
    json.dumps(converted)


def test_space_module_knows_no_optimiser_library():
    import inspect

    import search.space

    assert "skopt" not in inspect.getsource(search.space)
    assert not [name for name in dir(Categorical) if "skopt" in name]


def test_grid_refuses_continuous_spaces():
    space = Space({"lr": Real(1e-4, 0.1, log=True), "mixup": Boolean()})
    assert not space.is_discrete and space.size() is None
    with pytest.raises(ConfigError, match="continuous dimension.*lr"):
        space.grid()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Real(1.0, 0.5), "low < high"),
        (lambda: Real(0.0, 1.0, log=True), "low > 0"),
        (lambda: Integer(1.5, 3), "integer low"),
        (lambda: Categorical([]), "at least one"),
        (lambda: Categorical([1, 1]), "distinct"),
        (lambda: Categorical("abc"), "list of choices"),
    ],
)
def test_dimension_validation_says_what_was_received(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_space_dict_round_trip():
    space = default_space().with_dimensions({"warmup_epochs": Real(0.0, 2.0), "batch_size": Integer(16, 64, log=True)})
    again = Space.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space and again.names == space.names


def test_load_space_adds_changes_and_removes_dimensions(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "remove: [mixup]\n"
        "dimensions:\n"
        "  lr: {type: real, low: 1.0e-4, high: 0.1, log: true}\n"
        "  epochs: {type: integer, low: 5, high: 30}\n"
        "  batch_size: [16, 32, 64]\n"
        "  schedule: {type: categorical, choices: [cosine, step]}\n"
        "  label_smoothing: {type: boolean}\n"
    )
    space = load_space(path, known_fields=TRAIN_FIELDS)
    assert space.names == ["lr", "l2_decay", "label_smoothing", "epochs", "batch_size", "schedule"]
    assert space["lr"] == Real(1e-4, 0.1, log=True)
    assert space["epochs"] == Integer(5, 30)
    assert space["batch_size"] == Categorical([16, 32, 64])
    assert not space.is_discrete

    only = tmp_path / "only.yaml"
    only.write_text("replace: true\ndimensions:\n  image_size: [64, 96]\n  mixup: {type: boolean}\n")
    small = load_space(only)
    assert small.names == ["image_size", "mixup"] and small.size() == 4


@pytest.mark.parametrize(
    "text, match",
    [
        ("dimensions:\n  lr: {type: real, low: 1, high: 0.1}\n", "dimension 'lr'.*low < high"),
        ("dimensions:\n  lr: {type: gaussian}\n", "'type' must be one of"),
        ("dimensions:\n  lr: {type: real, low: 0.1}\n", "missing key"),
        ("dimensions:\n  lr: {type: real, low: 0.1, high: 1, step: 2}\n", "unknown key"),
        ("dimensions:\n  learning_rate: [0.1, 0.01]\n", "unknown dimension name.*learning_rate"),
        ("remove: [momentum]\n", "cannot remove 'momentum'"),
        ("dimensions: [1, 2]\n", "must be a mapping"),
        ("lr: [0.1\n", "not valid YAML"),
        ("", "must hold a mapping"),
    ],
)
def test_load_space_errors_name_the_file(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_space(path, known_fields=TRAIN_FIELDS)
    assert str(path) in str(info.value)


def test_load_space_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")


def test_point_key_ignores_float_noise_and_key_order():
    a = {"lr": 0.003, "mixup": True}
    b = {"mixup": np.bool_(True), "lr": 0.003 * (1 + 1e-15)}
    assert point_key(a) == point_key(b)
    assert point_key(a) != point_key({"lr": 0.001, "mixup": True})
