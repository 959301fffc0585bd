"""The one written description of evaluation/deploy preprocessing.

Training-time evaluation, exported evaluation and the exported ``inference.yml``
are all derived from a :class:`PreprocessSpec`, so they cannot disagree.
The semantics follow PaddleClas's deploy ops: ``ResizeImage(resize_short)`` →
``CropImage(size)`` → ``NormalizeImage(scale, mean, std, order='hwc')`` →
``ToCHWImage``, on RGB images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from common.errors import ConfigError
from common.validate import positive_int

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# PaddleClas evaluates 224-px crops after resizing the short side to 256.
CROP_RATIO = 224 / 256


def default_resize_short(crop_size: int) -> int:
    """Short-side length that PaddleClas's 256→224 ratio gives for ``crop_size``."""
    return int(round(crop_size / CROP_RATIO))


@dataclass(frozen=True)
class PreprocessSpec:
    """Evaluation preprocessing of one model: resize short side, center crop, normalize, CHW."""

    crop_size: int = 224
    resize_short: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    # Training-only augmentation parameters (PaddleClas RandCropImage defaults).
    train_scale: tuple[float, float] = field(default=(0.08, 1.0))
    train_ratio: tuple[float, float] = field(default=(3.0 / 4.0, 4.0 / 3.0))

    def __post_init__(self) -> None:
        positive_int(self.crop_size, "crop_size", integral_float=True)
        positive_int(self.resize_short, "resize_short", integral_float=True)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError(f"mean and std need 3 values each, got mean={self.mean!r} std={self.std!r}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std values must be > 0, got {self.std!r}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "train_scale", tuple(float(s) for s in self.train_scale))
        object.__setattr__(self, "train_ratio", tuple(float(r) for r in self.train_ratio))

    @classmethod
    def for_crop(cls, crop_size: int, **kwargs: Any) -> "PreprocessSpec":
        """Spec for ``crop_size`` with PaddleClas's resize ratio (256 for 224)."""
        return cls(crop_size=crop_size, resize_short=default_resize_short(crop_size), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists, floats) for manifests and config files."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessSpec":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def transform_ops(self) -> list[dict[str, Any]]:
        """``PreProcess.transform_ops`` of PaddleClas's ``inference.yml`` for this spec."""
        return [
            {"ResizeImage": {"resize_short": int(self.resize_short)}},
            {"CropImage": {"size": int(self.crop_size)}},
            {
                "NormalizeImage": {
                    "scale": float(self.scale),
                    "mean": list(self.mean),
                    "std": list(self.std),
                    "order": "",
                    "channel_num": 3,
                }
            },
            {"ToCHWImage": None},
        ]

    @classmethod
    def from_transform_ops(cls, ops: list[dict[str, Any]]) -> "PreprocessSpec":
        """Read a spec back from PaddleClas ``transform_ops``; unsupported ops raise ConfigError."""
        kwargs: dict[str, Any] = {}
        for op in ops:
            if not isinstance(op, dict) or len(op) != 1:
                raise ConfigError(f"transform op must be a one-key mapping, got {op!r}")
            (name, args), = op.items()
            args = args or {}
            if name == "ResizeImage":
                if "resize_short" not in args:
                    raise ConfigError(f"ResizeImage without resize_short is not supported: {args!r}")
                kwargs["resize_short"] = int(args["resize_short"])
            elif name == "CropImage":
                size = args.get("size")
                if isinstance(size, (list, tuple)):
                    if len(set(size)) != 1:
                        raise ConfigError(f"only square CropImage sizes are supported, got {size!r}")
                    size = size[0]
                kwargs["crop_size"] = int(size)
            elif name == "NormalizeImage":
                scale = args.get("scale", 1.0 / 255.0)
                if isinstance(scale, str):
                    # PaddleClas writes e.g. "1.0/255.0"; parse a/b without eval.
                    num, _, den = scale.partition("/")
                    scale = float(num) / float(den) if den else float(num)
                kwargs["scale"] = float(scale)
                kwargs["mean"] = tuple(args.get("mean", IMAGENET_MEAN))
                kwargs["std"] = tuple(args.get("std", IMAGENET_STD))
                order = args.get("order", "")
                if order not in ("", "hwc"):
                    raise ConfigError(f"NormalizeImage order {order!r} is not supported (expected 'hwc')")
            elif name in ("ToCHWImage", "DecodeImage"):
                continue
            else:
                raise ConfigError(f"unsupported preprocessing op {name!r} in inference.yml")
        if "crop_size" not in kwargs or "resize_short" not in kwargs:
            raise ConfigError("inference.yml transform_ops need ResizeImage(resize_short) and CropImage(size)")
        return cls(**kwargs)
