"""MACs and parameters, counted with thop under the paper's convention: convolutions and linear layers only.

thop's defaults also count BatchNorm and pooling; here they count zero (``custom_ops``), so figures compare with
the paper's. thop leaves ``total_ops``/``total_params`` buffers in the modules it profiles, so it only ever sees a
deep copy: nothing leaks into the caller's model or its state_dict. FLOPs = 2 x MACs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import thop
import torch
from torch import nn

from .models import unwrap
from .models._common import FoldedBias

__all__ = ["count_macs", "Cost", "cost", "flops_reduction"]


def _zero(module: nn.Module, inputs, output) -> None:
    module.total_ops += torch.zeros(1, dtype=torch.float64)


_ZERO_COST = {nn.BatchNorm2d: _zero, nn.BatchNorm1d: _zero, nn.ReLU: _zero, nn.ReLU6: _zero, nn.MaxPool2d: _zero,
              nn.AvgPool2d: _zero, nn.AdaptiveAvgPool2d: _zero, nn.Dropout: _zero, FoldedBias: _zero}


def count_macs(model: nn.Module, input_size: tuple[int, ...] | None = None) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass at ``input_size`` (default: one image at the model's own size).

    MACs count convolutions and linear layers (the paper's convention); parameters count every parameter.
    """
    inner = unwrap(model)
    if input_size is None:
        input_size = (1, 3, inner.input_size, inner.input_size)
    probe = copy.deepcopy(inner).eval()
    param = next(probe.parameters())
    x = torch.zeros(input_size, device=param.device, dtype=param.dtype)
    macs, params = thop.profile(probe, inputs=(x,), custom_ops=_ZERO_COST, verbose=False)
    return int(macs), int(params)


@dataclass(frozen=True)
class Cost:
    """What a model costs per image: multiply-accumulates, FLOPs (= 2 x MACs) and parameters."""

    macs: int
    params: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


def cost(model: nn.Module, input_size: tuple[int, ...] | None = None) -> Cost:
    """:func:`count_macs` as a :class:`Cost`."""
    return Cost(*count_macs(model, input_size))


def flops_reduction(original: Cost, pruned: Cost) -> float:
    """The share of FLOPs removed, 1 − FLOPs(pruned) / FLOPs(original)."""
    return 1.0 - pruned.macs / original.macs
