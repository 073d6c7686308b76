"""What one channel of each sparse layer costs: the MACs its removal saves, counted by pruning it for real.

Channels of different layers cost very different amounts (a ResNet-56 stage-1 channel sees a 32x32 map, a stage-3
one 8x8 with 4x the fan-in), so a threshold on γ alone treats a cheap channel and an expensive one alike. The
official code's ``--flops-weighted`` option weights each layer's penalty by this cost; ``flops_layer_weights``
gives those weights for ``polar.Polarization(layer_weights=...)``.
"""
from __future__ import annotations

from torch import nn

from .errors import ConfigError
from .flops import count_macs
from .models import channel_sets, regularized_bns, unwrap
from .prune import prune_to_widths

__all__ = ["channel_macs", "flops_layer_weights"]


def channel_macs(model: nn.Module, input_size: tuple[int, ...] | None = None) -> list[int]:
    """For each channel set (``polar.channel_sets`` order), the MACs one image saves when one of its channels goes.

    Exact, not estimated: each set in turn loses one channel of a copy (``polar.prune_to_widths``, constants folded)
    and the copy is counted. A set down to its last channel that must keep it saves 0.
    """
    widths = [cs.bns[0].num_features for cs in channel_sets(unwrap(model))]
    full = count_macs(prune_to_widths(model, widths), input_size)[0]
    return [full - count_macs(prune_to_widths(model, widths[:i] + [w - 1] + widths[i + 1:]), input_size)[0]
            for i, w in enumerate(widths)]


def flops_layer_weights(model: nn.Module, low: float, high: float,
                        input_size: tuple[int, ...] | None = None) -> list[float]:
    """A weight per regularized BN (``polar.regularized_bns`` order): its channel's cost relative to the costliest
    layer's, mapped linearly onto [low, high] — ``low + (high − low) · macs / max(macs)``. A regularized BN that is
    not prunable (a CIFAR ResNet's stem) saves nothing: ``low``.

    With low < high the penalty presses hardest where a channel costs most, so pruning at one threshold removes
    more of the expensive layers (the official ``--flops-weighted --weight-min --weight-max``).
    """
    if not 0.0 <= low <= high:
        raise ConfigError(f"FLOPs weights need 0 <= low <= high, got low={low!r}, high={high!r}")
    per_bn = {id(bn): macs for cs, macs in zip(channel_sets(model), channel_macs(model, input_size))
              for bn in cs.bns}
    costs = [per_bn.get(id(bn), 0) for bn in regularized_bns(model)]
    top = max(costs) or 1
    return [low + (high - low) * c / top for c in costs]
