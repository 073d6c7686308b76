"""Physical channel pruning: a sparsely trained network becomes a smaller dense network of the same class.

``mask(m, thr)`` zeroes the γ of prunable channels with γ ≤ thr; ``prune(m, thr)`` removes those channels and
gives the same outputs as ``mask(m, thr)`` in eval mode. A channel with γ = 0 is not silent: it outputs a constant
(its β through the activation and any channel-local layers after it). Polar folds that constant into the next
cross-channel layer (conv or linear) or, for a ResNet block's output, into the residual stream — exactly, zero-padded
borders included — where the paper's code drops it (``zero_beta=True`` reproduces that: γ and β zeroed).

Two options trade exact thresholding for speed: ``round_to`` keeps channel counts at multiples of, say, 8 (oneDNN's
convs run up to 2x slower on odd widths than on the next multiple of 8; on AVX-512 it computes output channels in
blocks of 16, so 16 is faster there: bench/conv_widths.py), and ``narrow_residual`` removes residual
channels of a CIFAR ResNet that no block writes to any more (all their writers are pruned and the channel enters
the stage as a constant), so the stream itself gets narrower and nothing is scattered back into those channels.

The package: ``plan`` decides which channels go (channel sets, thresholds, ``round_to``; ``mask``), ``layers`` holds
the per-layer surgery (``prune_conv_out``, ``prune_conv_in``, ``prune_bn``, ... and the folding of constants), and
one module per model family (``vgg``, ``mobilenet``, ``resnet``) combines them along that family's structure and
registers it with ``surgery.remove_channels``, and its cost rule with ``cost.layer_widths``: ``pruned_cost`` counts
what a threshold would leave without any surgery, for threshold searches. What pruning needs from a model is
``polar.models.PrunableModel``.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..models import ChannelSet, channel_sets, unwrap
from . import mobilenet, resnet, vgg  # noqa: F401  (each registers its family's surgery and cost rule)
from .cost import layer_widths, pruned_channels, pruned_cost, unpruned_cost
from .layers import (
    prune_bn,
    prune_conv_in,
    prune_conv_out,
    prune_depthwise,
    prune_folded_bias,
    prune_linear_in,
    prune_linear_out,
)
from .plan import Threshold, layer_thresholds, mask, masked_copy, plan_removal
from .surgery import Removal, remove_channels

__all__ = ["mask", "prune", "prune_to_widths", "prune_channels", "mask_channels", "pruned_cost", "unpruned_cost",
           "pruned_channels",
           "layer_widths", "channel_sets",
           "ChannelSet", "prune_conv_out", "prune_conv_in",
           "prune_depthwise", "prune_bn", "prune_linear_in", "prune_linear_out", "prune_folded_bias",
           "layer_thresholds", "Threshold", "Removal", "remove_channels"]


def _sizes(model: nn.Module, input_size: tuple[int, ...] | None) -> tuple[int, ...]:
    if input_size is not None:
        return tuple(input_size)
    side = unwrap(model).input_size
    return (2, 3, side, side)


def prune(model: nn.Module, threshold: Threshold, zero_beta: bool = False,
          input_size: tuple[int, ...] | None = None, round_to: int = 1, narrow_residual: bool = False) -> nn.Module:
    """A copy with the channels ``mask`` would silence physically removed: smaller dense layers, their constant
    output folded into the next layer. In eval mode ``prune(m, thr, ...)(x) == mask(m, thr, ...)(x)``.

    Args:
        model: a model from ``polar.create_model`` (possibly pruned already); it is not modified.
        threshold: channels with γ ≤ threshold go; one value, or a mapping {sparse BN name: value}.
        zero_beta: the paper's code's behaviour, for comparison: γ and β zeroed, nothing left to fold.
        input_size: the input shape the folded border maps are computed for (default: the model's own, e.g.
            32x32 for CIFAR); maps that turn out spatially constant work at any size.
        round_to: keep each layer's channel count a multiple of this (the strongest small-γ channels stay), for
            faster convs; 1 prunes exactly by the threshold.
        narrow_residual: CIFAR ResNets: also remove residual-stream channels whose every writer is pruned and that
            enter their stage as a constant (their value is folded into the layers that read them). Other models
            have no such channel (the stem, a downsample conv or a projection BN writes to each), so this changes
            nothing there.
    """
    plan = plan_removal(model, threshold, round_to, zero_beta)
    return _remove(masked_copy(model, threshold, plan, zero_beta), plan, input_size, narrow_residual, round_to)


def _remove(masked: nn.Module, plan: Sequence[Tensor], input_size: tuple[int, ...] | None, narrow_residual: bool,
            round_to: int = 1) -> nn.Module:
    """Physically remove ``plan``'s channels (one bool mask per channel set) from ``masked``, in place."""
    removed = {id(cs.bns[0]): gone for cs, gone in zip(channel_sets(masked), plan)}
    remove_channels(masked, Removal(removed, _sizes(masked, input_size), narrow_residual, round_to))
    return masked


def _check_plan(model: nn.Module, removed: Sequence[Tensor]) -> list[ChannelSet]:
    sets = channel_sets(model)
    if len(removed) != len(sets):
        raise ConfigError(f"{len(removed)} masks for {len(sets)} channel sets; give one per polar.channel_sets entry")
    for i, (cs, gone) in enumerate(zip(sets, removed)):
        if tuple(gone.shape) != (cs.bns[0].num_features,) or gone.dtype != torch.bool:
            raise ConfigError(f"channel set {i}: the mask must be a bool tensor of {cs.bns[0].num_features} channels, "
                              f"got {gone.dtype} {tuple(gone.shape)}")
        if bool(gone.all()) and not cs.allow_empty:
            raise ConfigError(f"channel set {i} must keep at least one channel (only a ResNet block may lose all)")
    return sets


def mask_channels(model: nn.Module, removed: Sequence[Tensor]) -> nn.Module:
    """A copy whose channels ``removed`` names (one bool mask per channel set, ``channel_sets`` order) have γ set to
    0 in every BN of their set (β kept, so they output a constant): what :func:`prune_channels` equals."""
    masked = copy.deepcopy(unwrap(model))
    with torch.no_grad():
        for cs, gone in zip(_check_plan(masked, removed), removed):
            for bn in cs.bns:
                bn.weight[gone.to(bn.weight.device)] = 0
    return masked


def prune_channels(model: nn.Module, removed: Sequence[Tensor], input_size: tuple[int, ...] | None = None,
                   narrow_residual: bool = False) -> nn.Module:
    """A copy with exactly the channels ``removed`` names physically removed (one bool mask per channel set, in
    ``channel_sets`` order), whatever their γ: for plans chosen by something other than a threshold (a latency
    budget, ``polar.prune_to_speedup``). In eval mode it equals ``mask_channels(model, removed)``, as ``prune``
    equals ``mask``; a ResNet block whose set loses every channel becomes its shortcut."""
    masked = mask_channels(model, removed)
    plan = [gone.to(cs.bns[0].weight.device) for cs, gone in zip(channel_sets(masked), removed)]
    return _remove(masked, plan, input_size, narrow_residual)


def prune_to_widths(model: nn.Module, widths: Sequence[int]) -> nn.Module:
    """A copy of ``model`` whose channel sets (``channel_sets`` order) keep their first ``widths[i]`` channels: the
    architecture a given set of widths makes, for counting what it costs (``polar.channel_macs``) or building a
    uniformly thinner model (``polar.uniform_width_model``). The γ of the copy are set to 1 (kept) and 0 (removed)
    and the removed channels' constants are folded, as ``prune`` does; the weights are the model's own otherwise.
    """
    probe = copy.deepcopy(unwrap(model))
    sets = channel_sets(probe)
    if len(widths) != len(sets):
        raise ConfigError(f"{len(widths)} widths for {len(sets)} channel sets; give one per polar.channel_sets entry")
    with torch.no_grad():
        for cs, width in zip(sets, widths):
            for bn in cs.bns:
                bn.weight.copy_((torch.arange(bn.num_features, device=bn.weight.device) < width).float())
    return prune(probe, 0.5)
