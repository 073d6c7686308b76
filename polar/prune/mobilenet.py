"""MobileNetV2 surgery: an inverted residual's hidden channels go from its expand conv, both its BNs and its
depthwise conv; their constant is folded after its projection conv."""
from __future__ import annotations

from torch import Tensor

from ..models.mobilenetv2 import MobileNetV2
from .layers import (
    Recorder,
    add_fold,
    conv_contribution,
    prune_bn,
    prune_conv_in,
    prune_conv_out,
    prune_depthwise,
    split_removed,
)


def prune_mobilenet(model: MobileNetV2, removed: dict[int, Tensor], input_size: tuple[int, ...]) -> None:
    blocks = list(model.blocks)
    rec = Recorder(model, [b.conv3 for b in blocks], [], input_size)
    for block, (first, _) in zip(blocks, model.channel_sets()):
        keep, gone = split_removed(removed[id(first)])
        if len(gone):
            add_fold(block.fold3, conv_contribution(block.conv3, gone, rec.constant(block.conv3, gone)))
        expand = block.conv1 if block.conv1 is not None else model.conv1
        prune_conv_out(expand, keep)
        prune_bn(first, keep)
        prune_depthwise(block.conv2, keep)
        prune_bn(block.bn2, keep)
        prune_conv_in(block.conv3, keep)
