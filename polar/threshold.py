"""Choosing the pruning threshold on γ: the paper's valley rule, network slimming's global percentile, a fixed
value, or the threshold that reaches a target FLOPs reduction."""
from __future__ import annotations

from torch import nn

from .flops import cost, flops_reduction
from .gamma_stats import NoValleyError, gamma_histogram, valley
from .prune import prune
from .regularizers import sparse_gammas

__all__ = ["find_threshold", "valley", "threshold_for_reduction", "NoValleyError"]


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
                            tolerance: float = 0.005, round_to: int = 1, narrow_residual: bool = False) -> float:
    """The smallest γ threshold whose pruned model removes at least ``target`` of the FLOPs (bisection over the
    sorted γ; folded pruning with the given ``round_to`` and ``narrow_residual``, see ``polar.prune``). Used to
    compare methods at matched FLOPs."""
    if not 0 <= target < 1:
        raise ValueError(f"target FLOPs reduction must be in [0, 1), got {target}")
    base = cost(model, input_size)
    gammas = sparse_gammas(model).detach().float().cpu().sort().values
    lo, hi = 0, len(gammas) - 1  # invariant: threshold gammas[hi] reaches the target (or is the largest)
    while lo < hi:
        mid = (lo + hi) // 2
        small = prune(model, float(gammas[mid]), input_size=input_size, round_to=round_to,
                      narrow_residual=narrow_residual)
        reduction = flops_reduction(base, cost(small, input_size))
        if reduction >= target - tolerance / 2:
            hi = mid
        else:
            lo = mid + 1
    return float(gammas[lo])
