"""Pieces shared by the model families: the interface Polar needs from a model, weight init, and the folded-bias
layer that pruning fills in."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@dataclass
class ChannelSet:
    """Channels gated together: removing channel i removes it from every BN in ``bns`` and from their convs.

    ``allow_empty``: whether every channel may go (a ResNet block then becomes its shortcut).
    ``branch``: sets of one residual branch share a number; the paper's code (``zero_beta``) drops the whole branch,
    every set's constants included, once one of its sets is wholly removed.
    """

    bns: list[nn.Module]
    allow_empty: bool = False
    branch: int | None = None


@runtime_checkable
class PrunableModel(Protocol):
    """What the regularizers, thresholds and pruning need from a model; every registered model provides it.

    A new model family implements these and registers its channel surgery with ``polar.prune.remove_channels``.
    """

    name: str  # the registered name it was built under (saved with it, so polar.load can rebuild it)
    input_size: int  # the side of the input images it is built for (32 for CIFAR, 224 for ImageNet)

    def sparse_bns(self) -> list[nn.Module]:
        """The BNs whose γ are prunable (thresholds, histograms, pruning), in forward order."""
        ...

    def regularized_bns(self) -> list[nn.Module]:
        """The BNs the regularizers act on: L1 penalizes them, polarization clamps them and penalizes those of them
        that are also sparse (a CIFAR ResNet's stem BN is regularized, as in the official code, but not prunable)."""
        ...

    def channel_sets(self) -> list[ChannelSet]:
        """The sparse BNs grouped into the channel sets pruning removes together, in forward order."""
        ...

    def spec(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this (possibly pruned) architecture."""
        ...


SPARSE_GAMMA_INIT = 0.5  # the paper's init for regularized γ: mid-range, so neither side of the split is favoured


def init_official_cifar(model: nn.Module) -> None:
    """The official code's init for its CIFAR models (ResNets, VGG-16): Kaiming normal with fan_in for convs and
    linear layers (biases 0), and γ = 0.5, β = 0 for every BatchNorm, the stem's included.

    γ = 0.5 sits mid-range, so neither side of the split is favoured; a γ of 0 would already look pruned to Polar.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.constant_(m.weight, SPARSE_GAMMA_INIT)
            nn.init.zeros_(m.bias)


def init_weights(model: nn.Module, sparse: list[nn.BatchNorm2d]) -> None:
    """torchvision's init (kaiming fan_out convs, BN γ=1, β=0), then γ=0.5 on the sparse BNs: the architectures
    Polar shares with torchvision (ImageNet ResNet-50, MobileNetV2) keep torchvision's init.

    Leaving γ=1 (or zero-init residuals) would bias the start: a γ of 0 already looks pruned to Polar.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for bn in sparse:
        nn.init.constant_(bn.weight, SPARSE_GAMMA_INIT)


class FoldedBias(nn.Module):
    """Adds the input-independent map that pruned channels leave behind; a no-op (``bias`` None) until pruning.

    A channel whose γ is 0 still outputs a constant (its β through the activation); removing it must not drop
    that constant, so ``polar.prune`` folds it here, after the next cross-channel layer: a per-channel value
    (1, C, 1, 1), or a map (1, C, H, W) where zero padding makes the border differ. The shape travels in the
    state_dict. Kept 4-D so that ``model.to(memory_format=torch.channels_last)`` lays the map out as the activations
    are: adding an NCHW map to an NHWC activation reads it across the grain, 3-6x slower than the add itself.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias
        if bias is None:
            return x
        return x + bias

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        key = prefix + "bias"
        if key in state_dict:  # a pruned model's map: adopt its shape before the default loader copies it in
            if state_dict[key].dim() == 3:  # saved before the map was 4-D (C, H, W)
                state_dict[key] = state_dict[key].unsqueeze(0)
            self.bias = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
