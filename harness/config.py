"""``TrainConfig``: every knob of one fine-tuning run, validated on construction."""

from __future__ import annotations

import dataclasses
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from common.errors import ConfigError
from common.validate import positive_int
from common.yaml_io import safe_load
from .preprocess_spec import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec, default_resize_short

DEVICES = ("auto", "cpu", "gpu")
AMP_MODES = (None, "fp16", "bf16")
SCHEDULES = ("cosine", "step")


def _model_normalization(model: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the model's pretrained weights expect (ImageNet's for unknown names)."""
    from common.errors import ModelError
    from .models.registry import get_entry

    try:
        cfg = get_entry(model).pretrained_cfg
    except ModelError:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(cfg.mean), tuple(cfg.std)


_FLOAT_FIELDS = ("lr", "l2_decay", "label_smoothing_epsilon", "mixup_alpha", "momentum", "warmup_epochs",
                 "crop_scale_min", "val_fraction", "test_fraction")
_INT_FIELDS = ("image_size", "resize_short", "epochs", "batch_size", "freeze", "max_steps_per_epoch", "split_seed",
               "seed", "workers", "threads")
_OPTIONAL_FIELDS = ("resize_short", "max_steps_per_epoch", "threads", "test_fraction")


@dataclass(frozen=True)
class TrainConfig:
    """One fine-tuning run. Defaults are the seed's fixed scheme (lr 0.003, l2 1e-4, no LS, no mixup)."""

    model: str = "ResNet50_vd"
    pretrained: Optional[str] = None
    dataset: str = "demo"
    data_root: Optional[str] = None
    train_list: Optional[str] = None
    val_list: Optional[str] = None
    test_list: Optional[str] = None
    image_size: int = 224
    resize_short: Optional[int] = None
    # Smallest area fraction of PaddleClas's random resized crop (RandCropImage scale=(min, 1)).
    crop_scale_min: float = 0.08
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.003
    l2_decay: float = 1e-4
    label_smoothing: bool = False
    label_smoothing_epsilon: float = 0.1
    mixup: bool = False
    mixup_alpha: float = 0.2
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    freeze: int = 0
    max_steps_per_epoch: Optional[int] = None
    val_fraction: float = 0.1
    # Share of each class carved out as test from flat class folders (None: 0.1 there, refused elsewhere).
    test_fraction: Optional[float] = None
    # The val split is carved with its own seed so every trial of a search sees the same split.
    split_seed: int = 0
    seed: int = 0
    device: str = "auto"
    amp: Optional[str] = None
    workers: int = 2
    threads: Optional[int] = None
    strict_data: bool = False
    download: bool = False
    out_dir: str = "runs"
    run_name: Optional[str] = None

    def __post_init__(self) -> None:
        # Numbers from YAML files or search points must be numbers; anything else is named.
        for name in _FLOAT_FIELDS + _INT_FIELDS:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_FIELDS:
                continue
            integer = name in _INT_FIELDS
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or (integer and int(value) != value):
                kind = "an integer" if integer else "a number"
                raise ConfigError(f"{name} must be {kind}, got {value!r}")

        def positive(name: str, integer: bool = True) -> None:
            value = getattr(self, name)
            if integer:
                positive_int(value, name, integral_float=True)
            elif isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")

        for name in ("image_size", "epochs", "batch_size", "workers"):
            positive(name)
        for name in ("lr", "mixup_alpha"):
            positive(name, integer=False)
        if self.l2_decay < 0:
            raise ConfigError(f"l2_decay must be >= 0, got {self.l2_decay!r}")
        if not 0 <= self.label_smoothing_epsilon < 1:
            raise ConfigError(f"label_smoothing_epsilon must be in [0, 1), got {self.label_smoothing_epsilon!r}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if self.test_fraction is not None:
            if not 0 < self.test_fraction < 1:
                raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
            object.__setattr__(self, "test_fraction", float(self.test_fraction))
        if self.warmup_epochs < 0 or (self.warmup_epochs > 0 and self.warmup_epochs >= self.epochs):
            raise ConfigError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs!r}")
        if not 0 < self.crop_scale_min <= 1:
            raise ConfigError(f"crop_scale_min must be in (0, 1], got {self.crop_scale_min!r}")
        if self.freeze < 0:
            raise ConfigError(f"freeze must be >= 0, got {self.freeze!r}")
        if self.max_steps_per_epoch is not None:
            positive("max_steps_per_epoch")
        if self.threads is not None:
            positive("threads")
        if self.device not in DEVICES and not re.fullmatch(r"gpu:\d+", str(self.device)):
            raise ConfigError(f"device must be one of {DEVICES} or 'gpu:N', got {self.device!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for flag in ("label_smoothing", "mixup", "strict_data", "download"):
            value = getattr(self, flag)
            if not isinstance(value, bool):
                # numpy.bool_ from a search sampler is fine; anything else is a mistake.
                if type(value).__name__ == "bool_":
                    object.__setattr__(self, flag, bool(value))
                else:
                    raise ConfigError(f"{flag} must be true or false, got {value!r}")
        for name in ("lr", "l2_decay", "mixup_alpha", "crop_scale_min", "label_smoothing_epsilon", "momentum", "warmup_epochs"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("image_size", "epochs", "batch_size", "workers", "seed", "split_seed", "freeze"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.resize_short is not None and self.resize_short < self.image_size:
            raise ConfigError(
                f"resize_short ({self.resize_short}) must be >= image_size ({self.image_size})"
            )

    @property
    def preprocess(self) -> PreprocessSpec:
        """Evaluation/deploy preprocessing of this run."""
        resize = self.resize_short or default_resize_short(self.image_size)
        mean, std = _model_normalization(self.model)
        return PreprocessSpec(crop_size=self.image_size, resize_short=resize, mean=mean, std=std,
                              train_scale=(self.crop_scale_min, 1.0))

    def replace(self, **changes: Any) -> "TrainConfig":
        """Copy with ``changes`` applied; an unknown key raises ConfigError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping; unknown keys raise ConfigError naming them."""
        return cls().replace(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        """Load a YAML file of TrainConfig fields."""
        path = Path(path)
        try:
            data = safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of TrainConfig fields")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def write_yaml(self, path: str | Path) -> None:
        """Write the resolved config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
