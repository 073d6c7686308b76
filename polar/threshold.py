"""Choosing the pruning threshold on γ: the paper's valley rule, network slimming's global percentile, a fixed
value, or the threshold that reaches a target FLOPs reduction."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .flops import cost, flops_reduction
from .gamma_stats import gamma_histogram
from .prune import prune
from .regularizers import sparse_gammas

__all__ = ["find_threshold", "valley", "threshold_for_reduction", "NoValleyError"]


class NoValleyError(ValueError):
    """The γ histogram has no valley (one mode, as under L1 or no regularizer)."""


def valley(counts: Tensor, edges: Tensor, min_rise: float = 0.004, smooth: int = 3) -> float:
    """The first valley of a histogram: the lowest point between the first peak (the spike at 0 under
    polarization) and the highest bin after it (the mode of the kept channels). Returns the middle of that lowest
    run of bins.

    The counts are smoothed with a ``smooth``-bin moving average first, so one noisy bin is no valley; the mode
    after it must be at least twice as high as the valley and ``min_rise`` of all γ above it.
    """
    c = counts.float() / counts.sum().clamp(min=1)
    if smooth > 1:
        c = torch.nn.functional.avg_pool1d(c.view(1, 1, -1), smooth, 1, smooth // 2, count_include_pad=False).flatten()
    peak = 0
    while peak + 1 < len(c) and c[peak + 1] >= c[peak]:  # climb the first peak
        peak += 1
    bottom = peak
    while bottom + 1 < len(c) and c[bottom + 1] <= c[bottom]:  # and all the way down from it
        bottom += 1
    mode = bottom + int(c[bottom:].argmax())
    low_at = peak + int(c[peak:mode + 1].argmin())
    low = float(c[low_at])
    if mode == low_at or float(c[mode]) < max(2 * low, low + min_rise):
        raise NoValleyError("the γ histogram has no valley (one mode: not polarized); use method='percent' or 'fixed'")
    end = low_at
    while end + 1 < mode and float(c[end + 1]) == low:
        end += 1
    return float((edges[low_at] + edges[end + 1]) / 2)


def find_threshold(model: nn.Module, method: str = "valley", value: float | None = None, upper: float = 1.0,
                   bins: int = 100) -> float:
    """The γ threshold below which channels are pruned.

    Args:
        method: ``valley`` — the paper's rule: the first valley of the ``bins``-bin histogram of all sparse γ over
            [0, upper]; ``percent`` — network slimming's global percentile: ``value`` is the share of channels
            to prune (0–1); ``fixed`` — ``value`` itself.
    """
    gammas = sparse_gammas(model).detach().float().cpu()
    if method == "valley":
        return valley(*gamma_histogram(gammas, bins, upper))
    if value is None:
        raise ValueError(f"method {method!r} needs a value")
    if method == "fixed":
        return float(value)
    if method == "percent":
        if not 0 <= value < 1:
            raise ValueError(f"percent must be a share in [0, 1), got {value}")
        k = int(round(value * len(gammas)))
        return float(gammas.sort().values[k - 1]) if k > 0 else float(gammas.min()) - 1.0
    raise ValueError(f"unknown threshold method {method!r}; choose valley, percent or fixed")


def threshold_for_reduction(model: nn.Module, target: float, input_size: tuple[int, ...] | None = None,
                            tolerance: float = 0.005) -> float:
    """The smallest γ threshold whose pruned model removes at least ``target`` of the FLOPs (bisection over the
    sorted γ; folded pruning). Used to compare methods at matched FLOPs."""
    if not 0 <= target < 1:
        raise ValueError(f"target FLOPs reduction must be in [0, 1), got {target}")
    base = cost(model, input_size)
    gammas = sparse_gammas(model).detach().float().cpu().sort().values
    lo, hi = 0, len(gammas) - 1  # invariant: threshold gammas[hi] reaches the target (or is the largest)
    while lo < hi:
        mid = (lo + hi) // 2
        reduction = flops_reduction(base, cost(prune(model, float(gammas[mid]), input_size=input_size), input_size))
        if reduction >= target - tolerance / 2:
            hi = mid
        else:
            lo = mid + 1
    return float(gammas[lo])
