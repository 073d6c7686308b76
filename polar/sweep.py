"""The FLOPs/accuracy trade-off of one trained model: prune at several thresholds (or FLOPs targets), measure.

Accuracy is measured before fine-tuning, with Polar's folded pruning and with the paper's ``zero_beta`` pruning
beside it, so a table shows what folding the constants buys. Targets given as FLOPs reductions are met by the
threshold search (``threshold_for_reduction``), which is how an L1 model is compared with a polarized one at
matched FLOPs (network slimming's global-percentile rule, expressed in FLOPs).
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from torch import nn

from .data import DeviceDataset
from .flops import cost, flops_reduction
from .prune import prune
from .threshold import threshold_for_reduction
from .train import evaluate

__all__ = ["sweep", "SWEEP_COLUMNS"]

SWEEP_COLUMNS = ["threshold", "target_reduction", "macs", "flops", "params", "flops_reduction", "acc_folded",
                 "acc_zero_beta", "acc_unpruned"]


def sweep(model: nn.Module, data: DeviceDataset, thresholds: Sequence[float] | None = None,
          reductions: Sequence[float] | None = None, input_size: tuple[int, ...] | None = None,
          round_to: int = 1, narrow_residual: bool = False) -> pd.DataFrame:
    """One row per threshold (or per target FLOPs reduction): threshold, MACs, FLOPs, params, FLOPs reduction and
    test accuracy of the pruned model before fine-tuning (folded and ``zero_beta``), plus the unpruned accuracy.

    Exactly one of ``thresholds`` and ``reductions`` must be given; ``round_to`` and ``narrow_residual`` are
    ``polar.prune``'s options, used for the threshold search and both prunings.
    """
    if (thresholds is None) == (reductions is None):
        raise ValueError("give either thresholds or target FLOPs reductions")
    model = model.to(data.device).eval()
    base = cost(model, input_size)
    unpruned = evaluate(model, data)[1]
    targets: list[tuple[float, float | None]] = (
        [(float(t), None) for t in thresholds] if thresholds is not None
        else [(threshold_for_reduction(model, r, input_size, round_to=round_to, narrow_residual=narrow_residual),
               float(r)) for r in reductions or []])
    options = {"input_size": input_size, "round_to": round_to, "narrow_residual": narrow_residual}
    rows = []
    for threshold, target in targets:
        folded = prune(model, threshold, **options)
        zero_beta = prune(model, threshold, zero_beta=True, **options)
        c = cost(folded, input_size)
        rows.append({"threshold": threshold, "target_reduction": target, "macs": c.macs, "flops": c.flops,
                     "params": c.params, "flops_reduction": flops_reduction(base, c),
                     "acc_folded": evaluate(folded, data)[1], "acc_zero_beta": evaluate(zero_beta, data)[1],
                     "acc_unpruned": unpruned})
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)
