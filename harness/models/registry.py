"""Explicit model registry: ``create_model(name, num_classes, pretrained=None)``.

Each model family lives in its own module and registers its constructors with
:func:`register_model`; :mod:`harness.models` imports the family modules, so importing
anything from the package fills the registry. This module imports no family. A
:class:`PretrainedConfig` travels with every model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from common.errors import ModelError
from ..preprocess_spec import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class PretrainedConfig:
    """What a model expects at its input, and where its ImageNet weights live."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Known weight tags → (url, sha256 or None). "imagenet" is the default tag. A checksum
    # of None means "not published": the downloader records the sha256 it saw.
    weights: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def weight_names(self) -> list[str]:
        """Every name :meth:`find_weights` accepts: the tags, then the file stems of their URLs."""
        return [*self.weights, *(_url_stem(url) for url, _ in self.weights.values())]

    def find_weights(self, name: str) -> tuple[str, str | None] | None:
        """``(url, sha256)`` of the weights called ``name`` — a tag such as ``"ssld"`` or the
        PaddleClas file stem such as ``"ResNet50_vd_ssld_pretrained"`` — or None if unknown."""
        if name in self.weights:
            return self.weights[name]
        for url, checksum in self.weights.values():
            if _url_stem(url) == name:
                return url, checksum
        return None


def _url_stem(url: str) -> str:
    """``.../ResNet50_vd_ssld_pretrained.pdparams`` → ``ResNet50_vd_ssld_pretrained``."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its name, ``builder(num_classes=...)`` and pretrained config."""

    name: str
    builder: Callable[..., object]
    pretrained_cfg: PretrainedConfig


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, pretrained_cfg: PretrainedConfig | None = None):
    """Decorator: register ``builder(num_classes=..., **kwargs) -> paddle.nn.Layer`` under ``name``."""

    def wrap(builder):
        if name in _REGISTRY:
            raise ModelError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, pretrained_cfg or PretrainedConfig())
        return builder

    return wrap


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """Registry entry of ``name``; an unknown name raises ModelError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}") from None
