"""The CIFAR VGG-16 with BatchNorm of the paper's official code (its ``vgg16_linear``, after network slimming).

Every conv is followed by a BN (sparse) and ReLU; after the last conv, global average pooling, a hidden 512->512
linear layer with its own BatchNorm1d (sparse too: 14 sparse layers, 313,463,808 MACs) and ReLU, then the
classifier. A pruned VGG is the same class built with the surviving widths in ``cfg`` and ``fc``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._common import ChannelSet, FoldedBias, init_official_cifar
from ._registry import register_model

__all__ = ["VGG", "vgg16"]

VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class VGG(nn.Module):
    """Plain VGG: ``cfg`` lists conv widths, ``"M"`` a 2x2 max-pool. Each conv is followed by a FoldedBias (where
    pruning puts the constant of the previous layer's removed channels), its BN and a ReLU. ``fc`` > 0 adds the
    hidden linear layer (Linear, BatchNorm1d, ReLU) of that width before the classifier; 0 leaves it out."""

    input_size = 32

    def __init__(self, cfg: list[int | str], num_classes: int = 10, fc: int = 0, name: str = "vgg16") -> None:
        super().__init__()
        self.name, self.cfg, self.fc, self.num_classes = name, list(cfg), int(fc), num_classes
        layers: list[nn.Module] = []
        in_channels = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers += [nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1, bias=False), FoldedBias(),
                       nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
            in_channels = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # its bias is where pruning folds the constant of the last conv's removed channels
        self.hidden = (nn.Sequential(nn.Linear(in_channels, self.fc), nn.BatchNorm1d(self.fc), nn.ReLU(inplace=True))
                       if self.fc else None)
        self.classifier = nn.Linear(self.fc or in_channels, num_classes)
        init_official_cifar(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # (N, C_last, 2, 2) for 32x32 input
        x = torch.flatten(self.avgpool(x), 1)  # (N, C_last)
        if self.hidden is not None:
            x = self.hidden(x)
        return self.classifier(x)

    def sparse_bns(self) -> list[nn.BatchNorm2d | nn.BatchNorm1d]:
        bns: list[nn.BatchNorm2d | nn.BatchNorm1d] = [m for m in self.features if isinstance(m, nn.BatchNorm2d)]
        return bns + ([self.hidden[1]] if self.hidden is not None else [])

    def regularized_bns(self) -> list[nn.BatchNorm2d | nn.BatchNorm1d]:
        return self.sparse_bns()

    def channel_sets(self) -> list[ChannelSet]:
        """Each BN on its own; every layer keeps at least one channel."""
        return [ChannelSet([bn]) for bn in self.sparse_bns()]

    def spec(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this (possibly pruned) architecture."""
        return {"num_classes": self.num_classes, "cfg": self.cfg, "fc": self.fc}


@register_model()
def vgg16(*, num_classes: int = 10, cfg: list[int | str] | None = None, fc: int = 512) -> VGG:
    return VGG(VGG16_CFG if cfg is None else cfg, num_classes, fc, name="vgg16")
