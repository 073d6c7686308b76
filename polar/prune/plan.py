"""Which channels go: the prunable channel sets of each model family, thresholds (one, or one per sparse BN), the
``round_to`` rule, and ``mask`` (the same network with those channels' γ set to 0)."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor, nn

from ..config import is_finite_number
from ..models import sparse_bns, unwrap
from ..models.mobilenetv2 import MobileNetV2
from ..models.resnet import _ResNetBase
from ..models.vgg import VGG


@dataclass
class ChannelSet:
    """Channels gated together: removing channel i removes it from every BN in ``bns`` and from their convs.

    ``allow_empty``: whether every channel may go (a ResNet block then becomes its shortcut).
    """

    bns: list[nn.BatchNorm2d]
    allow_empty: bool


def channel_sets(model: nn.Module) -> list[ChannelSet]:
    """The prunable channel sets of a registered model, in forward order."""
    inner = unwrap(model)
    if isinstance(inner, MobileNetV2):
        return [ChannelSet(group, allow_empty=False) for group in inner.channel_sets()]
    if isinstance(inner, VGG):
        return [ChannelSet([bn], allow_empty=False) for bn in inner.sparse_bns()]
    if isinstance(inner, _ResNetBase):  # each block BN on its own; a block may lose all of them
        return [ChannelSet([bn], allow_empty=True) for bn in inner.sparse_bns()]
    raise ValueError(f"pruning does not know {type(inner).__name__}; use a model from polar.create_model")


def round_up(kept: int, round_to: int, width: int) -> int:
    return min(width, -(-kept // round_to) * round_to)


def unremove_strongest(removed: Tensor, strength: Tensor, count: int) -> None:
    """Keep ``count`` more channels: the removed ones with the largest ``strength``."""
    candidates = torch.nonzero(removed).flatten()
    removed[candidates[strength[candidates].argsort(descending=True)[:count]]] = False


Threshold = Union[float, Mapping[str, float]]  # one for the network, or one per sparse BN (by module name)


def layer_thresholds(model: nn.Module, threshold: Threshold) -> dict[str, float]:
    """Each sparse BN's threshold by module name: ``threshold`` itself everywhere, or the mapping checked to name
    every sparse BN of ``model`` exactly once, with finite values."""
    inner = unwrap(model)
    sparse = {id(bn) for bn in sparse_bns(inner)}
    names = [name for name, m in inner.named_modules() if id(m) in sparse]
    if isinstance(threshold, Mapping):
        missing, unknown = sorted(set(names) - set(threshold)), sorted(set(threshold) - set(names))
        if missing or unknown:
            raise ValueError(f"per-layer thresholds must name every sparse BN: missing {missing[:3]}, unknown "
                             f"{unknown[:3]}; get them from polar.find_threshold(model, per_layer=True)")
        values = {name: threshold[name] for name in names}
    else:
        values = dict.fromkeys(names, threshold)
    for name, value in values.items():
        if not is_finite_number(value):
            raise ValueError(f"threshold must be a finite number (channels with γ <= it go), got {value!r}"
                             + (f" for {name}" if isinstance(threshold, Mapping) else ""))
    return {name: float(v) for name, v in values.items()}


def _bn_thresholds(model: nn.Module, threshold: Threshold) -> dict[int, float]:
    """Each sparse BN module's threshold, keyed by ``id`` (for ``model`` itself, not a copy of it)."""
    by_name = layer_thresholds(model, threshold)
    return {id(m): by_name[name] for name, m in unwrap(model).named_modules() if name in by_name}


def _removed(cs: ChannelSet, thresholds: dict[int, float], round_to: int) -> Tensor:
    """Channels of the set to remove: any of its γ ≤ its BN's threshold; sets that must keep one keep the strongest;
    with ``round_to`` the strongest removed channels stay until the kept count is a multiple of it (or the full
    width)."""
    gammas = torch.stack([bn.weight.detach() for bn in cs.bns])  # (len(bns), C)
    limits = torch.tensor([thresholds[id(bn)] for bn in cs.bns], dtype=gammas.dtype, device=gammas.device)
    removed = (gammas <= limits.view(-1, 1)).any(0)
    kept = int((~removed).sum())
    wanted = 0 if kept == 0 and cs.allow_empty else round_up(max(kept, 1), round_to, len(removed))
    unremove_strongest(removed, gammas.min(0).values, wanted - kept)
    return removed


def _check_round_to(round_to: int) -> None:
    if not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be a positive integer (1 = no rounding, 8 suits oneDNN), got {round_to!r}")


def plan_removal(model: nn.Module, threshold: Threshold, round_to: int, zero_beta: bool = False) -> list[Tensor]:
    """For each channel set, in order, the channels to remove.

    With ``zero_beta`` (the official code's behaviour) a ResNet block that loses every channel of one of its sparse
    BNs loses its whole residual branch, the constants of its later BNs included."""
    _check_round_to(round_to)
    thresholds = _bn_thresholds(model, threshold)
    sets = channel_sets(model)
    plan = [_removed(cs, thresholds, round_to) for cs in sets]
    inner = unwrap(model)
    if zero_beta and isinstance(inner, _ResNetBase):
        index = {id(cs.bns[0]): i for i, cs in enumerate(sets)}
        for block in inner.blocks():
            rows = [index[id(bn)] for bn in block.sparse_bns()]
            if any(bool(plan[i].all()) for i in rows):
                for i in rows:
                    plan[i] = torch.ones_like(plan[i])
    return plan


def masked_copy(model: nn.Module, threshold: Threshold, plan: list[Tensor], zero_beta: bool) -> nn.Module:
    masked = copy.deepcopy(unwrap(model))
    thresholds = _bn_thresholds(masked, threshold)
    with torch.no_grad():
        for cs, removed in zip(channel_sets(masked), plan):
            for bn in cs.bns:
                if zero_beta:
                    bn.weight[removed] = 0
                    bn.bias[removed] = 0
                else:
                    bn.weight[removed & (bn.weight <= thresholds[id(bn)])] = 0
    return masked


def mask(model: nn.Module, threshold: Threshold, zero_beta: bool = False, round_to: int = 1) -> nn.Module:
    """A copy whose prunable channels with γ ≤ threshold have γ set to 0 (β kept, so they output a constant).
    ``threshold``: one value, or one per sparse BN name (``polar.find_threshold(..., per_layer=True)``).

    With ``zero_beta`` (the paper's code): γ and β of every removed channel are zeroed in all BNs of its set.
    Layers other than ResNet blocks keep their strongest channel even when all γ ≤ threshold; ``round_to`` keeps
    the strongest of the small-γ channels too, until each layer's kept count is a multiple of it.
    """
    return masked_copy(model, threshold, plan_removal(model, threshold, round_to, zero_beta), zero_beta)
