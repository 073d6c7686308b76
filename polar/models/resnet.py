"""ResNets: the CIFAR ResNet of He et al. (option-A shortcuts) and the ImageNet ResNet-50 of torchvision.

Channel widths are constructor arguments, so a pruned network is the same class built with smaller numbers:
``mid`` channels inside a block and ``keep`` — the residual-stream channels the block still writes to (the block's
output is added back at those indices, as the paper's code does). A CIFAR ResNet's residual stream itself may be
narrowed too (``stream_channels``: the channels of each stage's stream that remain), when pruning finds channels
that no block writes to and that enter the stage as a constant.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ._common import ChannelSet, FoldedBias, init_official_cifar, init_weights
from ._registry import register_model

__all__ = [
    "BasicBlock", "Bottleneck", "CifarResNet", "ImageNetResNet",
    "resnet20", "resnet32", "resnet56", "resnet110", "resnet50_imagenet",
]

# A block's widths: {"mid": [channels after bn1, (after bn2 in a bottleneck)], "keep": kept residual channels}.
# None (or a missing key) means unpruned.
BlockWidths = dict[str, list[int]]


def conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)


class ShortcutA(nn.Module):
    """He et al.'s parameter-free option-A shortcut: subsample by the stride, zero-pad the new channels.

    ``index`` (for narrowed residual streams): the output channel of each input channel, the rest being zero;
    None means He et al.'s centred padding.
    """

    def __init__(self, inplanes: int, planes: int, stride: int, index: list[int] | None = None) -> None:
        super().__init__()
        self.stride, self.planes = stride, planes
        self.pad = (planes - inplanes) // 2
        self.register_buffer("index", None if index is None else torch.tensor(index, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        index = self.index
        if index is None:
            return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))  # (N, planes, H/stride, W/stride)
        out = x.new_zeros((x.shape[0], self.planes, x.shape[2], x.shape[3]))
        return out.index_copy_(1, index, x)


def option_a_index(previous: list[int], current: list[int], previous_planes: int, planes: int) -> list[int] | None:
    """Where option A puts each remaining channel of the previous stream (channel c goes to c + pad) among the
    remaining channels of the current one; None when neither stream is narrowed (plain centred padding)."""
    if previous == list(range(previous_planes)) and current == list(range(planes)):
        return None
    pad = (planes - previous_planes) // 2
    position = {c: i for i, c in enumerate(current)}
    missing = [c for c in previous if c + pad not in position]
    if missing:
        raise ConfigError(f"residual channels {missing} of a stage are dropped by the next one; "
                         "a stream may only drop channels its predecessor dropped too")
    return [position[c + pad] for c in previous]


def _widths(mid: list[int], keep: Tensor | None) -> BlockWidths:
    return {"mid": mid} if keep is None else {"mid": mid, "keep": keep.tolist()}


def _add_residual(identity: Tensor, out: Tensor, keep: Tensor | None) -> Tensor:
    """identity + out, where out only covers the residual channels listed in keep (all when None).

    Without autograd the scatter goes into ``identity`` in place (a block's input is not needed after it), which
    saves a copy of the residual stream per block at inference. On channels_last tensors the scatter runs on the
    NHWC view, along its innermost dimension: 2-5x faster than ``index_add`` along dim 1 (bench/prune_speedup.py).
    """
    if keep is None:
        return identity + out
    dtype = torch.promote_types(identity.dtype, out.dtype)  # under autocast one side may be bf16, as `+` allows
    identity, out = identity.to(dtype), out.to(dtype)
    nhwc = identity.dim() == 4 and identity.is_contiguous(memory_format=torch.channels_last) \
        and out.is_contiguous(memory_format=torch.channels_last)
    if nhwc:
        identity, out = identity.permute(0, 2, 3, 1), out.permute(0, 2, 3, 1)
    dim = 3 if nhwc else 1
    summed = identity.index_add(dim, keep, out) if torch.is_grad_enabled() else identity.index_add_(dim, keep, out)
    return summed.permute(0, 3, 1, 2) if nhwc else summed


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut; bn1 and bn2 are sparse (prunable).

    A block pruned to zero channels (``mid`` 0 or ``keep`` empty) has no branch: it is its shortcut plus the
    constant its channels left behind (``fold_out``) — layer pruning. ``fold1`` receives the constant of residual
    channels removed from the block's input (narrowed streams).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, widths: BlockWidths | None = None,
                 shortcut_index: list[int] | None = None) -> None:
        super().__init__()
        (mid,), keep = (widths or {}).get("mid", [planes]), (widths or {}).get("keep")
        self.out_planes = planes  # the residual stream's width at this block's output
        out = planes if keep is None else len(keep)
        has_branch = mid > 0 and out > 0
        self.conv1 = conv3x3(inplanes, mid, stride) if has_branch else None
        self.fold1 = FoldedBias()
        self.bn1 = nn.BatchNorm2d(mid) if has_branch else None
        self.conv2 = conv3x3(mid, out) if has_branch else None
        self.fold2 = FoldedBias()
        self.bn2 = nn.BatchNorm2d(out) if has_branch else None
        self.fold_out = FoldedBias()
        self.relu = nn.ReLU(inplace=True)
        needs_shortcut = stride != 1 or inplanes != planes or shortcut_index is not None
        self.downsample = ShortcutA(inplanes, planes, stride, shortcut_index) if needs_shortcut else None
        self.register_buffer("keep", None if keep is None or not has_branch else torch.tensor(keep, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        if self.conv1 is None or self.bn1 is None or self.conv2 is None or self.bn2 is None:
            out = identity
        else:
            out = self.relu(self.bn1(self.fold1(self.conv1(x))))
            out = self.bn2(self.fold2(self.conv2(out)))
            out = _add_residual(identity, out, self.keep)
        return self.relu(self.fold_out(out))

    def sparse_bns(self) -> list[nn.BatchNorm2d]:
        return [] if self.bn1 is None or self.bn2 is None else [self.bn1, self.bn2]

    def regularized_bns(self) -> list[nn.BatchNorm2d]:
        return self.sparse_bns()

    def widths(self) -> BlockWidths:
        if self.conv1 is None:
            return {"mid": [0], "keep": []}
        return _widths([self.conv1.out_channels], self.keep)


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 bottleneck (stride on the 3x3); bn1, bn2 and bn3 are sparse (prunable), bn1 and bn2
    regularized."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, widths: BlockWidths | None = None,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        (mid1, mid2), keep = (widths or {}).get("mid", [planes, planes]), (widths or {}).get("keep")
        self.out_planes = planes * self.expansion  # the residual stream's width at this block's output
        out = self.out_planes if keep is None else len(keep)
        has_branch = min(mid1, mid2, out) > 0
        self.conv1 = conv1x1(inplanes, mid1) if has_branch else None
        self.bn1 = nn.BatchNorm2d(mid1) if has_branch else None
        self.conv2 = conv3x3(mid1, mid2, stride) if has_branch else None
        self.fold2 = FoldedBias()
        self.bn2 = nn.BatchNorm2d(mid2) if has_branch else None
        self.conv3 = conv1x1(mid2, out) if has_branch else None
        self.fold3 = FoldedBias()
        self.bn3 = nn.BatchNorm2d(out) if has_branch else None
        self.fold_out = FoldedBias()
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.register_buffer("keep", None if keep is None or not has_branch else torch.tensor(keep, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        if (self.conv1 is None or self.bn1 is None or self.conv2 is None or self.bn2 is None or self.conv3 is None
                or self.bn3 is None):
            out = identity
        else:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.fold2(self.conv2(out))))
            out = self.bn3(self.fold3(self.conv3(out)))
            out = _add_residual(identity, out, self.keep)
        return self.relu(self.fold_out(out))

    def sparse_bns(self) -> list[nn.BatchNorm2d]:
        return [] if self.bn1 is None or self.bn2 is None or self.bn3 is None else [self.bn1, self.bn2, self.bn3]

    def regularized_bns(self) -> list[nn.BatchNorm2d]:
        """bn1 and bn2, as the paper (Appendix C) and its code: many bn3 γ sit near 0 already. bn3 stays prunable
        (at the same threshold)."""
        return self.sparse_bns()[:2]

    def widths(self) -> BlockWidths:
        if self.conv1 is None or self.conv2 is None:
            return {"mid": [0, 0], "keep": []}
        return _widths([self.conv1.out_channels, self.conv2.out_channels], self.keep)


class _ResNetBase(nn.Module):
    """What both ResNets share: the list of blocks, their sparse BNs and their widths."""

    def blocks(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, (BasicBlock, Bottleneck))]

    def sparse_bns(self) -> list[nn.BatchNorm2d]:
        return [bn for block in self.blocks() for bn in block.sparse_bns()]

    def regularized_bns(self) -> list[nn.BatchNorm2d]:
        return [bn for block in self.blocks() for bn in block.regularized_bns()]

    def channel_sets(self) -> list[ChannelSet]:
        """Each block BN on its own; a block may lose all of them (it becomes its shortcut)."""
        return [ChannelSet([bn], allow_empty=True, branch=i)
                for i, block in enumerate(self.blocks()) for bn in block.sparse_bns()]


class CifarResNet(_ResNetBase):
    """The CIFAR ResNet of He et al. (2016): 3 stages of (depth-2)/6 basic blocks, widths 16/32/64.

    ``stream_channels``: per stage, which of its 16/32/64 residual channels remain (None: all). Option A carries
    channel c of one stage into channel c + pad of the next (pad = 8, then 16); a channel a stage keeps must not
    be dropped by the stage after it.
    """

    input_size = 32
    stage_planes = (16, 32, 64)

    def __init__(self, depth: int, num_classes: int = 10, block_widths: list[BlockWidths] | None = None,
                 stream_channels: list[list[int] | None] | None = None) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110, ...), got {depth}")
        self.name = f"resnet{depth}"
        self.depth, self.num_classes = depth, num_classes
        self.stream_channels = [None if chans is None else list(chans) for chans in stream_channels or [None] * 3]
        n = (depth - 2) // 6
        widths = iter(block_widths or [])
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        previous, previous_planes = list(range(16)), 16  # the stem's channels feed stage 1
        stages = []
        for planes, stride, current in zip(self.stage_planes, (1, 2, 2), self.stream_lists()):
            index = option_a_index(previous, current, previous_planes, planes)
            layer = []
            for i in range(n):
                inplanes = len(previous) if i == 0 else len(current)
                layer.append(BasicBlock(inplanes, len(current), stride if i == 0 else 1, next(widths, None),
                                        index if i == 0 else None))
            previous, previous_planes = current, planes
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(len(previous), num_classes)
        init_official_cifar(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 16, 32, 32)
        x = self.layer1(x)
        x = self.layer2(x)  # (N, 32, 16, 16)
        x = self.layer3(x)  # (N, 64, 8, 8)
        x = torch.flatten(self.avgpool(x), 1)  # (N, 64)
        return self.fc(x)

    def regularized_bns(self) -> list[nn.BatchNorm2d]:
        """The stem BN too, as in the official code (its L1 penalizes every BN, its polarization clamps every BN);
        it is not prunable, so polarization's penalty and γ̄ leave it out."""
        return [self.bn1, *super().regularized_bns()]

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3]

    def stream_lists(self) -> list[list[int]]:
        """Per stage, the residual channels that remain, spelled out (``stream_channels`` with None meaning all)."""
        return [list(range(planes)) if chans is None else chans
                for planes, chans in zip(self.stage_planes, self.stream_channels)]

    def spec(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this (possibly pruned) architecture."""
        spec: dict[str, Any] = {"num_classes": self.num_classes, "block_widths": [b.widths() for b in self.blocks()]}
        if any(chans is not None for chans in self.stream_channels):
            spec["stream_channels"] = self.stream_channels
        return spec


class ImageNetResNet(_ResNetBase):
    """torchvision's ResNet-50 with the same attribute names (torchvision state_dicts load as they are)."""

    input_size = 224

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), num_classes: int = 1000,
                 block_widths: list[BlockWidths] | None = None) -> None:
        super().__init__()
        self.name = "resnet50_imagenet"
        self.layers_cfg, self.num_classes = tuple(layers), num_classes
        widths = iter(block_widths or [])
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        stages = []
        for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if stage == 0 else 2
            layer = []
            for i in range(blocks):
                downsample = None
                if i == 0 and (stride != 1 or inplanes != planes * Bottleneck.expansion):
                    downsample = nn.Sequential(conv1x1(inplanes, planes * Bottleneck.expansion, stride),
                                               nn.BatchNorm2d(planes * Bottleneck.expansion))
                layer.append(Bottleneck(inplanes, planes, stride if i == 0 else 1, next(widths, None), downsample))
                inplanes = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        init_weights(self, self.sparse_bns())

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)  # (N, 2048, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (N, 2048)
        return self.fc(x)

    def spec(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this (possibly pruned) architecture."""
        return {"num_classes": self.num_classes, "block_widths": [b.widths() for b in self.blocks()]}


def _cifar_resnet(depth: int, num_classes: int, **kwargs: Any) -> CifarResNet:
    return CifarResNet(depth, num_classes, **kwargs)


@register_model()
def resnet20(*, num_classes: int = 10, **kwargs: Any) -> CifarResNet:
    return _cifar_resnet(20, num_classes, **kwargs)


@register_model()
def resnet32(*, num_classes: int = 10, **kwargs: Any) -> CifarResNet:
    return _cifar_resnet(32, num_classes, **kwargs)


@register_model()
def resnet56(*, num_classes: int = 10, **kwargs: Any) -> CifarResNet:
    return _cifar_resnet(56, num_classes, **kwargs)


@register_model()
def resnet110(*, num_classes: int = 10, **kwargs: Any) -> CifarResNet:
    return _cifar_resnet(110, num_classes, **kwargs)


@register_model()
def resnet50_imagenet(*, num_classes: int = 1000, **kwargs: Any) -> ImageNetResNet:
    return ImageNetResNet((3, 4, 6, 3), num_classes, **kwargs)
