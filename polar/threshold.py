"""Choosing the pruning threshold on γ: Polar's robust valley, the paper's literal valley rule (globally or per
layer, as the official scripts), network slimming's global percentile, a fixed value, or the threshold that reaches
a target FLOPs reduction.

Polar's default is its robust valley because the literal rule stops at the first non-strict local minimum of the
raw histogram: a noisy spike (bins 270, 261, 275, 0, ...) ends it at 0.01, inside the spike."""
from __future__ import annotations

import warnings

from torch import Tensor, nn

from .config import is_finite_number
from .errors import ConfigError
from .flops import flops_reduction
from .gamma_stats import NoValleyError, check_histogram, gamma_histogram, valley
from .models import sparse_bns, unwrap
from .prune import pruned_cost, unpruned_cost
from .regularizers import sparse_gammas

__all__ = ["find_threshold", "valley", "paper_valley", "threshold_for_reduction", "NoValleyError"]


def paper_valley(counts: Tensor, edges: Tensor) -> float | None:
    """The paper's literal rule on a histogram: scanning left to right, the first bin where the counts stop
    falling and start rising (``diff[i] ≤ 0 ≤ diff[i+1]``, a non-strict local minimum, ``diff[i] = c[i+1] − c[i]``)
    gives the threshold: the left edge of bin i+1, the minimum. None when there is no such bin."""
    diff = (counts[1:] - counts[:-1]).tolist()
    lo, hi, bins = float(edges[0]), float(edges[-1]), len(edges) - 1
    for i in range(len(diff) - 1):
        if diff[i] <= 0 <= diff[i + 1]:
            return lo + (i + 1) * (hi - lo) / bins  # exact in float64 (0.02, not float32's 0.0199999)
    return None


def _one_threshold(gammas: Tensor, method: str, value: float | None, upper: float, bins: int) -> float:
    if method == "valley":
        return valley(*gamma_histogram(gammas, bins, upper))
    if method == "paper":
        found = paper_valley(*gamma_histogram(gammas, bins, upper))
        if found is None:  # the official code then prunes nothing
            return float(gammas.min()) - 1.0
        if found > 0.2 * upper:
            warnings.warn(f"the paper's rule put the threshold at {found:.3f}, above 0.2: γ may not be polarized yet",
                          stacklevel=3)
        return found
    if value is None:
        raise ConfigError(f"method {method!r} needs a value")
    if method == "fixed":
        if not is_finite_number(value):
            raise ConfigError(f"threshold must be a finite number, got {value!r}")
        return float(value)
    if method == "percent":
        if not 0 <= value < 1:
            raise ConfigError(f"percent must be a share in [0, 1), got {value}")
        k = int(round(value * len(gammas)))
        return float(gammas.sort().values[k - 1]) if k > 0 else float(gammas.min()) - 1.0
    raise ConfigError(f"unknown threshold method {method!r}; choose valley, paper, percent or fixed")


def find_threshold(model: nn.Module, method: str = "valley", value: float | None = None, upper: float = 1.0,
                   bins: int = 100, per_layer: bool = False) -> float | dict[str, float]:
    """The γ threshold below which channels are pruned (one for the network, or one per sparse BN).

    Args:
        method: ``valley`` — Polar's robust rule: the lowest point between the first peak of the smoothed
            ``bins``-bin histogram over [0, upper] and the mode after it (one noisy bin is no valley; raises
            NoValleyError without one); ``paper`` — the official code's literal rule (:func:`paper_valley`:
            the first non-strict local minimum of the raw histogram; a warning above 0.2; no valley prunes
            nothing); ``percent`` — network slimming's global percentile: ``value`` is the share of channels to
            prune (0–1); ``fixed`` — ``value`` itself.
        per_layer: a mapping {sparse BN name: threshold}, each from that layer's own γ (as the official scripts
            do); ``mask``, ``prune`` and ``sweep`` accept it. A layer without a valley keeps all its channels.
    """
    check_histogram(bins, upper)
    if not per_layer:
        return _one_threshold(sparse_gammas(model).detach().float().cpu(), method, value, upper, bins)
    inner = unwrap(model)
    sparse = {id(bn) for bn in sparse_bns(inner)}
    result = {}
    for name, bn in inner.named_modules():
        if id(bn) in sparse:
            gammas = bn.weight.detach().float().cpu()
            try:
                result[name] = _one_threshold(gammas, method, value, upper, bins)
            except NoValleyError:
                result[name] = float(gammas.min()) - 1.0
    return result


def threshold_for_reduction(model: nn.Module, target: float, input_size: tuple[int, ...] | None = None,
                            tolerance: float = 0.005, round_to: int = 1, narrow_residual: bool = False) -> float:
    """The smallest γ threshold whose pruned model removes at least ``target`` of the FLOPs (bisection over the
    sorted γ; folded pruning with the given ``round_to`` and ``narrow_residual``, see ``polar.prune``). Used to
    compare methods at matched FLOPs.

    Each step counts the candidate with ``polar.pruned_cost`` (exact, without building it): milliseconds per target
    where pruning and profiling every candidate took seconds (bench/threshold_search.py)."""
    if not is_finite_number(target) or not 0 <= target < 1:
        raise ConfigError(f"target FLOPs reduction must be in [0, 1), got {target}")
    gammas = sparse_gammas(model).detach().float().cpu().sort().values
    base = unpruned_cost(model, input_size)
    lo, hi = 0, len(gammas) - 1  # invariant: threshold gammas[hi] reaches the target (or is the largest)
    while lo < hi:
        mid = (lo + hi) // 2
        small = pruned_cost(model, float(gammas[mid]), input_size=input_size, round_to=round_to,
                            narrow_residual=narrow_residual)
        if flops_reduction(base, small) >= target - tolerance / 2:
            hi = mid
        else:
            lo = mid + 1
    return float(gammas[lo])
