"""Which channels go: the prunable channel sets of each model family, thresholds (one, or one per sparse BN), the
``round_to`` rule, and ``mask`` (the same network with those channels' γ set to 0)."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Union

import torch
from torch import Tensor, nn

from ..config import is_finite_number
from ..errors import ConfigError
from ..models import ChannelSet, channel_sets, sparse_bns, unwrap


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
            raise ConfigError(f"per-layer thresholds must name every sparse BN: missing {missing[:3]}, unknown "
                             f"{unknown[:3]}; get them from polar.find_threshold(model, per_layer=True)")
        values = {name: threshold[name] for name in names}
    else:
        values = dict.fromkeys(names, threshold)
    for name, value in values.items():
        if not is_finite_number(value):
            raise ConfigError(f"threshold must be a finite number (channels with γ <= it go), got {value!r}"
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
    gammas = [bn.weight.detach() for bn in cs.bns]
    removed = gammas[0] <= thresholds[id(cs.bns[0])]
    for bn, gamma in zip(cs.bns[1:], gammas[1:]):
        removed |= gamma <= thresholds[id(bn)]
    kept = int((~removed).sum())
    wanted = 0 if kept == 0 and cs.allow_empty else round_up(max(kept, 1), round_to, len(removed))
    if wanted > kept:  # (threshold searches plan often: the strength is only computed when it is needed)
        strength = gammas[0] if len(gammas) == 1 else torch.stack(gammas).min(0).values
        unremove_strongest(removed, strength, wanted - kept)
    return removed


def _check_round_to(round_to: int) -> None:
    if not isinstance(round_to, int) or round_to < 1:
        raise ConfigError(f"round_to must be a positive integer (1 = no rounding, 8 suits oneDNN), got {round_to!r}")


def plan_removal(model: nn.Module, threshold: Threshold, round_to: int, zero_beta: bool = False) -> list[Tensor]:
    """For each channel set, in order, the channels to remove.

    With ``zero_beta`` (the official code's behaviour) a residual branch (a ResNet block) that loses every channel
    of one of its channel sets loses all of them, the constants of its later BNs included."""
    _check_round_to(round_to)
    thresholds = _bn_thresholds(model, threshold)
    sets = channel_sets(model)
    plan = [_removed(cs, thresholds, round_to) for cs in sets]
    if zero_beta:
        emptied = {cs.branch for cs, removed in zip(sets, plan) if cs.branch is not None and bool(removed.all())}
        plan = [torch.ones_like(removed) if cs.branch in emptied else removed for cs, removed in zip(sets, plan)]
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
