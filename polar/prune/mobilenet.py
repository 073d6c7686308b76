"""MobileNetV2 surgery: an inverted residual's hidden channels go from its expand conv, both its BNs and its
depthwise conv; their constant is folded after its projection conv. ``mobilenet_widths`` gives the widths that
leaves each layer (for ``pruned_cost``)."""
from __future__ import annotations

from ..models.mobilenetv2 import MobileNetV2
from .cost import Widths, layer_widths
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
from .surgery import Removal, remove_channels


@remove_channels.register
def prune_mobilenet(model: MobileNetV2, removal: Removal) -> None:
    blocks = list(model.blocks)
    rec = Recorder(model, [b.conv3 for b in blocks], [], removal.input_size)
    for block, cs in zip(blocks, model.channel_sets()):
        first = cs.bns[0]
        keep, gone = split_removed(removal.channels[id(first)])
        if len(gone):
            add_fold(block.fold3, conv_contribution(block.conv3, gone, rec.constant(block.conv3, gone)))
        expand = block.conv1 if block.conv1 is not None else model.conv1
        prune_conv_out(expand, keep)
        prune_bn(first, keep)
        prune_depthwise(block.conv2, keep)
        prune_bn(block.bn2, keep)
        prune_conv_in(block.conv3, keep)


@layer_widths.register
def mobilenet_widths(model: MobileNetV2, removal: Removal) -> Widths:
    """A block's kept hidden channels: written by its expand conv (the stem for the first block), gated by both
    BNs, filtered by the depthwise conv and read by the projection."""
    widths: Widths = {}
    for block, cs in zip(model.blocks, model.channel_sets()):
        first = cs.bns[0]
        kept = int((~removal.channels[id(first)]).sum())
        expand = block.conv1 if block.conv1 is not None else model.conv1
        widths[id(expand)] = (expand.in_channels, kept)
        widths[id(first)] = widths[id(block.conv2)] = widths[id(block.bn2)] = (kept, kept)
        widths[id(block.conv3)] = (kept, block.conv3.out_channels)
    return widths
