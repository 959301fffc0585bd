"""ResNet_vd (ResNet-D, "bag of tricks") with PaddleClas's legendary parameter names.

The architecture follows He et al., "Bag of Tricks for Image Classification with
Convolutional Neural Networks" (2019), variant D, as trained by PaddleClas:

* stem: three 3x3 conv-BN-ReLU layers with 32, 32 and 64 filters (the first with
  stride 2), then a 3x3 max pool with stride 2;
* four residual stages; the first block of every stage carries a projection
  shortcut (``short``). In the very first block it is a plain 1x1 convolution; in
  later stages it is a 2x2 average pool (``ceil_mode``, "SAME" padding, stride 2)
  followed by a stride-1 1x1 convolution, so no activation is thrown away;
* bottleneck blocks put the stride on the 3x3 convolution (``conv1``), basic
  blocks on their first 3x3 convolution (``conv0``);
* global average pool and one fully connected layer; no dropout.

``state_dict()`` keys and shapes equal those of PaddleClas's
``ppcls/arch/backbone/legendary_models/resnet.py`` (``stem.0.conv.weight``,
``stem.0.bn._mean``, ``blocks.3.conv1.bn.weight``, ``blocks.3.short.conv.weight``,
``fc.weight`` stored ``[in_features, num_classes]``), so the official
``*_vd_pretrained.pdparams`` files load without renaming. Weights saved by the
older PaddleClas 2.0 dygraph models (``conv1_1._conv.weight``, ``bb_0_0...``,
``out.weight``), or with their static parameter names (``res2a_branch2a_weights``,
``bn2a_branch2a_scale``, ``fc_0.w_0``), are renamed by :func:`map_paddleclas_v20_names`.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any, Iterable, Sequence

import paddle
from paddle import nn

from common.errors import ModelError
from common.validate import positive_int
from .freezing import StageFreezing
from .registry import PretrainedConfig, register_model


__all__ = [
    "BasicBlock",
    "BottleneckBlock",
    "ConvBN",
    "RESNET_VD_LAYOUTS",
    "ResNetVd",
    "build_resnet_vd",
    "is_paddleclas_v20_state_dict",
    "map_paddleclas_v20_names",
]

# depth -> (block type, blocks per stage), as in the paper and PaddleClas.
RESNET_VD_LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 12, 48, 3)),
}

BLOCK_TYPES = ("basic", "bottleneck")
STAGE_WIDTHS = (64, 128, 256, 512)
STEM_WIDTHS = (32, 32, 64)

_WEIGHTS_BASE = "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models"
# Depths for which PaddleClas publishes SSLD-distilled legendary weights.
_SSLD_DEPTHS = (34, 50, 101)


class ConvBN(nn.Layer):
    """Convolution (no bias) + batch norm + optional ReLU; keys ``conv.weight``, ``bn.*``.

    With ``pool_first`` the layer downsamples ResNet-D style: a 2x2 average pool
    with the given stride precedes a stride-1 convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        act: bool = True,
        pool_first: bool = False,
    ) -> None:
        super().__init__()
        # ceil_mode + exclusive averaging reproduces PaddleClas's padding="SAME" pool on odd
        # feature maps too (the last row/column is averaged over the pixels present; tested).
        # padding="SAME" itself makes Paddle Inference's oneDNN pool fail on odd maps
        # ("std::exception" at run time, e.g. ResNet_vd at 40 or 48 px), padding=0 does not.
        self.pool = (
            nn.AvgPool2D(kernel_size=2, stride=stride, padding=0, ceil_mode=True) if pool_first else None
        )
        self.conv = nn.Conv2D(
            in_channels,
            out_channels,
            kernel_size,
            stride=1 if pool_first else stride,
            padding=(kernel_size - 1) // 2,
            bias_attr=False,
        )
        self.bn = nn.BatchNorm2D(out_channels, momentum=0.9, epsilon=1e-5)
        self.act = nn.ReLU() if act else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Apply pool (if any), convolution, batch norm and ReLU (if any)."""
        if self.pool is not None:
            x = self.pool(x)
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


def _shortcut(in_channels: int, out_channels: int, stride: int, first_of_network: bool) -> ConvBN:
    # The network's first projection sees the max-pooled stem output at stride 1:
    # a plain 1x1 conv. Every later one halves the resolution by average pooling.
    return ConvBN(in_channels, out_channels, 1, stride, act=False, pool_first=not first_of_network)


class BasicBlock(nn.Layer):
    """Two 3x3 conv-BN layers (``conv0`` carries the stride) plus identity or ``short``."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, *, project: bool, first_of_network: bool) -> None:
        super().__init__()
        self.conv0 = ConvBN(in_channels, width, 3, stride)
        self.conv1 = ConvBN(width, width, 3, act=False)
        self.short = _shortcut(in_channels, width, stride, first_of_network) if project else None
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Residual sum followed by ReLU."""
        identity = x if self.short is None else self.short(x)
        return self.relu(self.conv1(self.conv0(x)) + identity)


class BottleneckBlock(nn.Layer):
    """1x1 → 3x3 (stride here, ResNet-B/D) → 1x1 (4x width) plus identity or ``short``."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, *, project: bool, first_of_network: bool) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv0 = ConvBN(in_channels, width, 1)
        self.conv1 = ConvBN(width, width, 3, stride)
        self.conv2 = ConvBN(width, out_channels, 1, act=False)
        self.short = _shortcut(in_channels, out_channels, stride, first_of_network) if project else None
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Residual sum followed by ReLU."""
        identity = x if self.short is None else self.short(x)
        return self.relu(self.conv2(self.conv1(self.conv0(x))) + identity)


_BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


class ResNetVd(StageFreezing, nn.Layer):
    """ResNet_vd classifier with PaddleClas legendary parameter names.

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        stage_depths: number of blocks in each of the four stages.
        num_classes: classifier outputs (``class_num`` in PaddleClas), default 1000.
        stage_widths: base width of each stage (bottleneck blocks output 4x this).
        stem_widths: filters of the three stem convolutions; the last one feeds stage 1.
    """

    def __init__(
        self,
        block: str,
        stage_depths: Sequence[int],
        num_classes: int = 1000,
        *,
        stage_widths: Sequence[int] = STAGE_WIDTHS,
        stem_widths: Sequence[int] = STEM_WIDTHS,
    ) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ModelError(f"block must be one of {BLOCK_TYPES}, got {block!r}")
        stage_depths = tuple(int(d) for d in stage_depths)
        if len(stage_depths) != 4 or min(stage_depths) < 1:
            raise ModelError(f"stage_depths must be four positive integers, got {stage_depths!r}")
        if len(stage_widths) != 4 or len(stem_widths) != 3:
            raise ModelError(
                f"stage_widths needs 4 and stem_widths 3 entries, got {tuple(stage_widths)!r}, {tuple(stem_widths)!r}"
            )
        _check_num_classes(num_classes)
        block_cls = _BLOCKS[block]
        self.block_type = block
        self.stage_depths = stage_depths
        self.num_classes = int(num_classes)

        stem_in = (3, *stem_widths[:2])
        self.stem = nn.Sequential(
            *[ConvBN(c_in, c_out, 3, 2 if i == 0 else 1) for i, (c_in, c_out) in enumerate(zip(stem_in, stem_widths))]
        )
        self.max_pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)

        blocks = []
        in_channels = stem_widths[-1]
        for stage, (depth, width) in enumerate(zip(stage_depths, stage_widths)):
            for i in range(depth):
                first_in_stage = i == 0
                blocks.append(
                    block_cls(
                        in_channels,
                        width,
                        2 if first_in_stage and stage > 0 else 1,
                        project=first_in_stage,
                        first_of_network=first_in_stage and stage == 0,
                    )
                )
                in_channels = width * block_cls.expansion
        self.blocks = nn.Sequential(*blocks)
        self.num_features = in_channels

        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten()
        bound = 1.0 / math.sqrt(self.num_features)
        self.fc = nn.Linear(
            self.num_features,
            self.num_classes,
            weight_attr=paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound)),
        )

    # ----------------------------------------------------------------- forward
    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """Pooled, flattened features ``[N, num_features]`` before the classifier."""
        x = self.max_pool(self.stem(x))
        x = self.blocks(x)
        return self.flatten(self.avg_pool(x))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Logits ``[N, num_classes]`` of an NCHW float batch."""
        return self.fc(self.forward_features(x))

    # ---------------------------------------------------------------- stages
    def stage_layers(self) -> list[list[nn.Layer]]:
        """Freezable groups in input order: ``[stem], stage 1 blocks, ..., stage 4 blocks``."""
        groups: list[list[nn.Layer]] = [[self.stem]]
        start = 0
        for depth in self.stage_depths:
            groups.append([self.blocks[j] for j in range(start, start + depth)])
            start += depth
        return groups

    def _blocks_before(self, n: int) -> int:
        return sum(self.stage_depths[: n - 1])

    def prefix_layer(self, n: int) -> nn.Layer:
        """Stem (with its max pool) and the first ``n - 1`` stages as one layer (shares parameters)."""
        n = self._check_split(n)
        return nn.Sequential(self.stem, self.max_pool, *[self.blocks[j] for j in range(self._blocks_before(n))])

    def forward_suffix(self, h: paddle.Tensor, n: int) -> paddle.Tensor:
        """Logits from the output of :meth:`prefix_layer` ``(n)``."""
        n = self._check_split(n)
        for j in range(self._blocks_before(n), len(self.blocks)):
            h = self.blocks[j](h)
        return self.fc(self.flatten(self.avg_pool(h)))


    # ---------------------------------------------------------------- naming
    @staticmethod
    def remap_state_dict_keys(keys: Iterable[str]) -> dict[str, str]:
        """Rename keys of foreign checkpoints (PaddleClas 2.0 naming) to ours; identity otherwise."""
        keys = list(keys)
        if is_paddleclas_v20_state_dict(keys):
            return map_paddleclas_v20_names(keys)
        return {k: k for k in keys}


def _check_num_classes(num_classes: Any) -> None:
    positive_int(num_classes, "num_classes", error=ModelError)


def build_resnet_vd(depth: int, num_classes: int = 1000) -> ResNetVd:
    """ResNet``depth``_vd for ``depth`` in 18, 34, 50, 101, 152, 200."""
    if depth not in RESNET_VD_LAYOUTS:
        raise ModelError(f"ResNet_vd depth must be one of {sorted(RESNET_VD_LAYOUTS)}, got {depth!r}")
    block, depths = RESNET_VD_LAYOUTS[depth]
    return ResNetVd(block, depths, num_classes)



# ------------------------------------------------------------------------------------
# PaddleClas 2.0 names → legendary names
# ------------------------------------------------------------------------------------

_V20_STRUCT_STEM = re.compile(r"^conv1_([123])\.(_conv|_batch_norm)\.(weight|bias|_mean|_variance)$")
_V20_STRUCT_BLOCK = re.compile(
    r"^bb_(\d+)_(\d+)\.(conv[012]|short)\.(_conv|_batch_norm)\.(weight|bias|_mean|_variance)$"
)
_V20_STRUCT_FC = re.compile(r"^out\.(weight|bias)$")
# Static parameter names: conv1_1_weights, bn1_1_scale, res4b12_branch2a_weights, bn2a_branch1_mean.
_V20_PARAM_STEM_CONV = re.compile(r"^conv1_([123])_weights$")
_V20_PARAM_STEM_BN = re.compile(r"^bn1_([123])_(scale|offset|mean|variance)$")
_V20_PARAM_BLOCK = re.compile(r"^(res|bn)([2-5])([a-z])(\d*)_branch(1|2a|2b|2c)_(weights|scale|offset|mean|variance)$")
_V20_PARAM_FC = {"fc_0.w_0": "fc.weight", "fc_0.b_0": "fc.bias"}

_SUBLAYER = {"_conv": "conv", "_batch_norm": "bn"}
_BRANCH = {"2a": "conv0", "2b": "conv1", "2c": "conv2", "1": "short"}
_PARAM_SUFFIX = {
    "weights": "conv.weight",
    "scale": "bn.weight",
    "offset": "bn.bias",
    "mean": "bn._mean",
    "variance": "bn._variance",
}


def _parse_v20_key(key: str) -> tuple[str, Any] | None:
    """Classify one 2.0-style key: ('fixed', new_name) or ('block', (stage, index, rest)); None if foreign."""
    if m := _V20_STRUCT_STEM.match(key):
        return "fixed", f"stem.{int(m[1]) - 1}.{_SUBLAYER[m[2]]}.{m[3]}"
    if m := _V20_STRUCT_FC.match(key):
        return "fixed", f"fc.{m[1]}"
    if m := _V20_STRUCT_BLOCK.match(key):
        return "block", (int(m[1]), int(m[2]), f"{m[3]}.{_SUBLAYER[m[4]]}.{m[5]}")
    if m := _V20_PARAM_STEM_CONV.match(key):
        return "fixed", f"stem.{int(m[1]) - 1}.conv.weight"
    if m := _V20_PARAM_STEM_BN.match(key):
        return "fixed", f"stem.{int(m[1]) - 1}.{_PARAM_SUFFIX[m[2]]}"
    if key in _V20_PARAM_FC:
        return "fixed", _V20_PARAM_FC[key]
    if m := _V20_PARAM_BLOCK.match(key):
        prefix, stage, letter, number, branch, suffix = m.groups()
        if (prefix == "res") != (suffix == "weights"):
            return None  # conv weights are named res*, batch-norm tensors bn*
        if number:
            # Deep stages count past 'z' as res4b1, res4b2, ... (the letter is always 'b').
            if letter != "b":
                return None
            index = int(number)
        else:
            index = ord(letter) - ord("a")
        return "block", (int(stage) - 2, index, f"{_BRANCH[branch]}.{_PARAM_SUFFIX[suffix]}")
    return None


def is_paddleclas_v20_state_dict(keys: Iterable[str]) -> bool:
    """True when most keys follow PaddleClas 2.0 ResNet_vd naming rather than the legendary one."""
    keys = list(keys)
    if not keys:
        return False
    recognised = sum(_parse_v20_key(k) is not None for k in keys)
    return recognised * 2 > len(keys)


def map_paddleclas_v20_names(keys: Iterable[str]) -> dict[str, str]:
    """Map PaddleClas 2.0 ResNet_vd key names to legendary names (a pure function of the names).

    Accepts both forms PaddleClas 2.0 checkpoints use: structured sublayer names
    (``conv1_1._conv.weight``, ``bb_2_5.conv1._batch_norm._mean``, ``out.weight``) and
    static parameter names (``conv1_1_weights``, ``bn1_1_scale``,
    ``res4b12_branch2b_weights``, ``bn3a_branch1_variance``, ``fc_0.w_0``).
    Blocks are numbered per stage there and globally here; the number of blocks per
    stage is read off the keys themselves, so the same function serves every depth.
    Keys it does not recognise map to themselves (and will be reported as unexpected).
    """
    keys = list(keys)
    parsed = {k: _parse_v20_key(k) for k in keys}
    blocks_per_stage: dict[int, int] = defaultdict(int)
    for info in parsed.values():
        if info is not None and info[0] == "block":
            stage, index, _ = info[1]
            blocks_per_stage[stage] = max(blocks_per_stage[stage], index + 1)
    if blocks_per_stage and sorted(blocks_per_stage) != list(range(max(blocks_per_stage) + 1)):
        raise ModelError(f"PaddleClas 2.0 weights have blocks in stages {sorted(blocks_per_stage)}; expected 0..3")
    stage_offset = [sum(blocks_per_stage[s] for s in range(stage)) for stage in range(len(blocks_per_stage))]

    mapping: dict[str, str] = {}
    for key, info in parsed.items():
        if info is None:
            mapping[key] = key
        elif info[0] == "fixed":
            mapping[key] = info[1]
        else:
            stage, index, rest = info[1]
            mapping[key] = f"blocks.{stage_offset[stage] + index}.{rest}"
    targets = list(mapping.values())
    if len(set(targets)) != len(targets):
        raise ModelError("PaddleClas 2.0 weights hold the same tensor under two names (e.g. both naming styles)")
    return mapping


# ------------------------------------------------------------------------------------
# Registered models
# ------------------------------------------------------------------------------------


def _pretrained_cfg(depth: int) -> PretrainedConfig:
    name = f"ResNet{depth}_vd"
    # Checksums are not published; the downloader records the sha256 it saw.
    weights: dict[str, tuple[str, str | None]] = {"imagenet": (f"{_WEIGHTS_BASE}/{name}_pretrained.pdparams", None)}
    if depth in _SSLD_DEPTHS:
        weights["ssld"] = (f"{_WEIGHTS_BASE}/{name}_ssld_pretrained.pdparams", None)
    return PretrainedConfig(input_size=224, weights=weights)


def _register(depth: int) -> None:
    def builder(num_classes: int = 1000) -> ResNetVd:
        return build_resnet_vd(depth, num_classes)

    builder.__name__ = f"resnet{depth}_vd"
    builder.__doc__ = f"ResNet{depth}_vd with PaddleClas legendary parameter names."
    register_model(f"ResNet{depth}_vd", _pretrained_cfg(depth))(builder)


for _depth in RESNET_VD_LAYOUTS:
    _register(_depth)
