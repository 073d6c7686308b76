"""Pieces shared by the model families: weight init and the convention that marks prunable BatchNorms."""
from __future__ import annotations

from torch import nn

SPARSE_GAMMA_INIT = 0.5  # the paper's init for regularized γ: mid-range, so neither side of the split is favoured


def init_weights(model: nn.Module, sparse: list[nn.BatchNorm2d]) -> None:
    """torchvision's init (kaiming fan_out convs, BN γ=1, β=0), then γ=0.5 on the sparse BNs.

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
