"""TrainConfig validation and YAML reading (no Paddle needed)."""

from __future__ import annotations

import pytest

from harness.config import TrainConfig
from common.errors import ConfigError
from common.yaml_io import safe_load


def test_yaml_exponent_numbers_are_floats():
    assert safe_load("lr: 1e-3\nl2: [3E-4, 1.0e-5]\nn: 10\nflag: true") == {
        "lr": 0.001, "l2": [0.0003, 1e-05], "n": 10, "flag": True}


def test_config_file_with_exponent_lr(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nl2_decay: 3e-5\nepochs: 2\n")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.lr, cfg.l2_decay, cfg.epochs) == (0.001, 3e-05, 2)


@pytest.mark.parametrize("field, value, message", [
    ("lr", "ten", "lr must be a number"),
    ("epochs", 2.5, "epochs must be an integer"),
    ("seed", True, "seed must be an integer"),
    ("batch_size", 0, "batch_size must be a positive integer"),
    ("device", "tpu", "device must be one of"),
])
def test_bad_values_name_the_field(tmp_path, field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig().replace(**{field: value})
    path = tmp_path / "bad.yaml"
    path.write_text(f"{field}: {value!r}\n" if isinstance(value, str) else f"{field}: {str(value).lower()}\n")
    with pytest.raises(ConfigError, match=f"bad.yaml: {message}"):
        TrainConfig.from_yaml(path)


def test_unknown_key_is_refused():
    with pytest.raises(ConfigError, match=r"unknown TrainConfig field\(s\) \['lr_rate'\]"):
        TrainConfig.from_dict({"lr_rate": 0.1})


def test_search_space_file_with_exponent_values(tmp_path):
    from search import load_space

    path = tmp_path / "space.yaml"
    path.write_text("dimensions:\n  lr: [1e-3, 1e-2]\n")
    space = load_space(path)
    assert sorted({p["lr"] for p in space.grid()}) == [0.001, 0.01]
