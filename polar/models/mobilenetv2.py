"""MobileNetV2 (Sandler et al. 2018): torchvision's ImageNet architecture and its CIFAR variant.

The CIFAR variant keeps the layer configuration but does not downsample in the stem or the first stride-2 stage
(32x32 in, 4x4 before pooling). Each inverted residual's hidden channels form one prunable channel set: the
expand BN and the depthwise BN gate the same channels, so both are sparse. The first block has no expand conv
(t = 1); its hidden channels are the stem's output, so the stem BN is sparse and shares that block's channel set.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._common import ChannelSet, FoldedBias, init_weights
from ._registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2", "mobilenet_v2_imagenet"]

# (expand ratio t, output channels c, repeats n, stride s) of the first block in each stage: torchvision's table
IMAGENET_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                    (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    """[1x1 expand-BN-ReLU6] → 3x3 depthwise-BN-ReLU6 → 1x1 project-BN (+ input when shapes match)."""

    def __init__(self, inp: int, oup: int, stride: int, hidden: int, expand: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, hidden, 1, bias=False) if expand else None
        self.bn1 = nn.BatchNorm2d(hidden) if expand else None
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, oup, 1, bias=False)
        self.fold3 = FoldedBias()  # the constant output of pruned hidden channels, after the projection
        self.bn3 = nn.BatchNorm2d(oup)
        self.relu = nn.ReLU6(inplace=True)
        self.use_res = stride == 1 and inp == oup

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.conv1 is not None and self.bn1 is not None:
            out = self.relu(self.bn1(self.conv1(out)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.fold3(self.conv3(out)))
        return x + out if self.use_res else out


class MobileNetV2(nn.Module):
    """MobileNetV2 with width multiplier 1; ``hidden`` gives each block's hidden width (pruned models)."""

    def __init__(self, num_classes: int = 1000, cifar: bool = False, hidden: list[int] | None = None,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.name = "mobilenet_v2" if cifar else "mobilenet_v2_imagenet"
        self.num_classes, self.cifar, self.dropout = num_classes, cifar, dropout
        self.input_size = 32 if cifar else 224
        setting = [(t, c, n, 1 if cifar and i == 1 else s) for i, (t, c, n, s) in enumerate(IMAGENET_SETTING)]
        widths = iter(hidden or [])
        stem = 32
        first_hidden = next(widths, stem)  # the first block's hidden channels are the stem's output
        self.conv1 = nn.Conv2d(3, first_hidden, 3, 1 if cifar else 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(first_hidden)
        self.relu = nn.ReLU6(inplace=True)
        blocks: list[nn.Module] = []
        inp = stem
        for t, c, n, s in setting:
            for i in range(n):
                expand = t != 1
                width = next(widths, inp * t) if expand else first_hidden
                blocks.append(InvertedResidual(inp if expand else first_hidden, c, s if i == 0 else 1, width, expand))
                inp = c
        self.blocks = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(inp, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        init_weights(self, self.sparse_bns())
        for m in self.modules():
            if isinstance(m, nn.Linear):  # torchvision's init for the classifier
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 32, H', W')
        x = self.blocks(x)  # (N, 320, H/32 or 4, ...)
        x = self.relu(self.bn2(self.conv2(x)))  # (N, 1280, ...)
        x = torch.flatten(self.avgpool(x), 1)  # (N, 1280)
        return self.classifier(x)

    def channel_sets(self) -> list[ChannelSet]:
        """One set per block: its hidden channels, gated by the expand BN (the stem's for the first block) and the
        depthwise BN together; a block keeps at least one."""
        return [ChannelSet([block.bn1 if block.bn1 is not None else self.bn1, block.bn2]) for block in self.blocks]

    def sparse_bns(self) -> list[nn.BatchNorm2d]:
        return [bn for cs in self.channel_sets() for bn in cs.bns]

    def regularized_bns(self) -> list[nn.BatchNorm2d]:
        return self.sparse_bns()

    def spec(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this (possibly pruned) architecture."""
        return {"num_classes": self.num_classes, "dropout": self.dropout,
                "hidden": [block.conv2.out_channels for block in self.blocks]}


@register_model()
def mobilenet_v2(*, num_classes: int = 10, **kwargs: Any) -> MobileNetV2:
    return MobileNetV2(num_classes, cifar=True, **kwargs)


@register_model()
def mobilenet_v2_imagenet(*, num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    return MobileNetV2(num_classes, cifar=False, **kwargs)
