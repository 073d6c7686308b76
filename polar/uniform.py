"""The paper's plain baseline (Table 3, "uniform channel scaling"): the same network with every prunable layer made
thinner by one factor, chosen so that it costs the same FLOPs as a pruned network.

Only the channels pruning could remove are scaled (each channel set keeps ``max(1, round(scale · width))``); the
stem, a ResNet's residual stream and the classifier keep their widths, as under pruning, so the two compare like
for like. The architecture is found by pruning a fresh model's channel sets to those widths, so every registered
model family gets it without a family-specific rule.
"""
from __future__ import annotations

from torch import nn

from .errors import ConfigError
from .flops import count_macs
from .models import channel_sets, create_model
from .prune import prune_to_widths

__all__ = ["uniform_width_model"]


def _scaled(name: str, scale: float, num_classes: int) -> nn.Module:
    """A fresh ``name`` whose channel sets keep ``max(1, round(scale · width))`` channels each, freshly initialized."""
    template = create_model(name, num_classes=num_classes)
    thin = prune_to_widths(template, [max(1, round(scale * cs.bns[0].num_features)) for cs in channel_sets(template)])
    return create_model(name, **thin.spec())  # the architecture only: new weights, not the template's


def uniform_width_model(name: str, flops_reduction: float, num_classes: int = 10,
                        input_size: tuple[int, ...] | None = None) -> tuple[float, nn.Module]:
    """(scale, model): the largest scale (by bisection, to 2^-30) whose uniformly thinner ``name`` removes at least
    ``flops_reduction`` of the full model's FLOPs, and that model, freshly initialized for training from scratch."""
    if not 0.0 < flops_reduction < 1.0:
        raise ConfigError(f"flops_reduction must be in (0, 1), e.g. 0.5; got {flops_reduction!r}")
    full = count_macs(create_model(name, num_classes=num_classes), input_size)[0]
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        macs = count_macs(_scaled(name, mid, num_classes), input_size)[0]
        lo, hi = (mid, hi) if 1 - macs / full > flops_reduction else (lo, mid)
    return lo, _scaled(name, lo, num_classes)
