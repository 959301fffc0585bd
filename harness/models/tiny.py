"""``ResNet_tiny``: a ResNet_vd in miniature for fast tests at 32 px.

Same code, same key naming scheme (``stem.N.conv.weight``, ``blocks.N.short...``,
``fc.weight``) and same vd downsampling as the full family: basic blocks, one per
stage, stage widths 8/16/32/64 and a stem of 4, 4, 8 filters.
"""

from __future__ import annotations

from .registry import PretrainedConfig, register_model
from .resnet_vd import ResNetVd

TINY_STAGE_WIDTHS = (8, 16, 32, 64)
TINY_STEM_WIDTHS = (4, 4, 8)


@register_model("ResNet_tiny", PretrainedConfig(input_size=32))
def resnet_tiny(num_classes: int = 1000) -> ResNetVd:
    """Tiny ResNet_vd (basic blocks, depths 1/1/1/1, widths 8/16/32/64); no published weights."""
    return ResNetVd(
        "basic",
        (1, 1, 1, 1),
        num_classes,
        stage_widths=TINY_STAGE_WIDTHS,
        stem_widths=TINY_STEM_WIDTHS,
    )
