"""Pieces shared by the model families: weight init and the convention that marks prunable BatchNorms."""
from __future__ import annotations

import torch
from torch import Tensor, nn

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


class FoldedBias(nn.Module):
    """Adds the input-independent map that pruned channels leave behind; a no-op (``bias`` None) until pruning.

    A channel whose γ is 0 still outputs a constant (its β through the activation); removing it must not drop
    that constant, so ``polar.prune`` folds it here, after the next cross-channel layer: a per-channel value
    (C, 1, 1), or a map (C, H, W) where zero padding makes the border differ. The shape travels in the state_dict.
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
            self.bias = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
