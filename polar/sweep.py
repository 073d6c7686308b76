"""The FLOPs/accuracy trade-off of one trained model: prune at several thresholds (or FLOPs targets), measure.

Accuracy is measured before fine-tuning, with Polar's folded pruning and with the paper's ``zero_beta`` pruning
beside it, so a table shows what folding the constants buys. Targets given as FLOPs reductions are met by the
threshold search (``threshold_for_reduction``), which is how an L1 model is compared with a polarized one at
matched FLOPs (network slimming's global-percentile rule, expressed in FLOPs).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import TYPE_CHECKING

import torch
from torch import nn

from .device_dataset import DeviceDataset
from .errors import ConfigError
from .evaluate import evaluate
from .flops import flops_reduction
from .models import sparse_bns
from .prune import prune, pruned_cost, unpruned_cost
from .threshold import threshold_for_reduction

if TYPE_CHECKING:
    import pandas as pd  # imported where a table is built: ~0.4 s the explorer's first page does not need

__all__ = ["sweep", "separate_ties", "SWEEP_COLUMNS"]

TIE_STEP = 1e-6  # at most this apart after separate_ties; far below any threshold a histogram can resolve

SWEEP_COLUMNS = ["threshold", "target_reduction", "macs", "flops", "params", "flops_reduction", "acc_folded",
                 "acc_zero_beta", "acc_unpruned"]


@torch.no_grad()
def separate_ties(model: nn.Module) -> nn.Module:
    """A copy whose exactly equal sparse γ are made distinct by a deterministic rule, so a threshold between
    them can prune some of a tie and not all of it.

    Rule: within a group of equal γ, channels are ordered by |β| (a smaller constant output goes first), then by
    their position in the network (forward order, then channel index); the k-th gets γ + k·step, with step ≤
    ``TIE_STEP`` and small enough to stay below the next larger γ. The copy's outputs differ from the model's only
    through those ≤ 1e-6 changes of γ.
    """
    copy = deepcopy(model)
    bns = sparse_bns(copy)
    gamma = torch.cat([bn.weight.detach().flatten() for bn in bns])
    beta = torch.cat([bn.bias.detach().abs().flatten() for bn in bns])
    values, inverse, counts = torch.unique(gamma, return_inverse=True, return_counts=True)
    if int(counts.max()) == 1:
        return copy
    gaps = torch.cat([values[1:] - values[:-1], values.new_tensor([1.0])])
    order = torch.arange(len(gamma), device=gamma.device)
    new = gamma.clone()
    for group in torch.nonzero(counts > 1).flatten().tolist():
        members = torch.nonzero(inverse == group).flatten()
        members = members[sorted(range(len(members)), key=lambda i: (float(beta[members[i]]), int(order[members[i]])))]
        step = min(TIE_STEP, float(gaps[group]) / (len(members) + 1))
        new[members] = values[group] + step * torch.arange(len(members), device=gamma.device, dtype=gamma.dtype)
    start = 0
    for bn in bns:
        bn.weight.copy_(new[start:start + bn.num_features])
        start += bn.num_features
    return copy


def sweep(model: nn.Module, data: DeviceDataset, thresholds: Sequence[float] | None = None,
          reductions: Sequence[float] | None = None, input_size: tuple[int, ...] | None = None,
          round_to: int = 1, narrow_residual: bool = False,
          on_row: Callable[[dict], None] | None = None, acc_unpruned: float | None = None,
          measure_zero_beta: bool = True) -> pd.DataFrame:
    """One row per threshold (or per target FLOPs reduction): threshold, MACs, FLOPs, params, FLOPs reduction and
    test accuracy of the pruned model before fine-tuning (folded and ``zero_beta``), plus the unpruned accuracy.

    γ that are exactly equal (polarization's clamp leaves many at exactly 0) are first told apart by
    :func:`separate_ties`, so a FLOPs target inside the spike prunes part of it instead of all of it.

    Exactly one of ``thresholds`` and ``reductions`` must be given; ``round_to`` and ``narrow_residual`` are
    ``polar.prune``'s options, used for the threshold search and both prunings. ``on_row`` is called with each row
    as soon as it is measured (a page's progress). ``acc_unpruned``: the model's test accuracy on ``data`` where
    already measured (the explorer's trainer measures it when it pauses), instead of evaluating it again.
    ``measure_zero_beta=False`` leaves ``acc_zero_beta`` empty (NaN): half the evaluations, for a curve wanted fast.
    """
    if (thresholds is None) == (reductions is None):
        raise ConfigError("give either thresholds or target FLOPs reductions")
    model = separate_ties(model.to(data.device).eval())
    base = unpruned_cost(model, input_size)
    unpruned = evaluate(model, data)[1] if acc_unpruned is None else acc_unpruned
    targets: list[tuple[float | None, float | None]] = (
        [(float(t), None) for t in thresholds] if thresholds is not None else [(None, float(r)) for r in reductions])
    options = {"input_size": input_size, "round_to": round_to, "narrow_residual": narrow_residual}
    rows = []
    for threshold, target in targets:
        if threshold is None:  # counted without pruning (polar.pruned_cost): milliseconds per target
            threshold = threshold_for_reduction(model, target, input_size, round_to=round_to,
                                                narrow_residual=narrow_residual)
        c = pruned_cost(model, threshold, **options)
        rows.append({"threshold": threshold, "target_reduction": target, "macs": c.macs, "flops": c.flops,
                     "params": c.params, "flops_reduction": flops_reduction(base, c),
                     "acc_folded": evaluate(prune(model, threshold, **options), data)[1],
                     "acc_zero_beta": (evaluate(prune(model, threshold, zero_beta=True, **options), data)[1]
                                       if measure_zero_beta else math.nan),
                     "acc_unpruned": unpruned})
        if on_row is not None:
            on_row(rows[-1])
    import pandas as pd
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)
