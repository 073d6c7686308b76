"""Numbers that describe a γ distribution: binned histograms (what charts draw), the number of modes, and the
share of γ in the ambiguous middle band — the quantities that tell polarization's split from L1's shrinkage.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .config import check_range
from .errors import ConfigError, PolarError

__all__ = ["flat_gammas", "gamma_histogram", "count_modes", "middle_share", "valley", "is_polarized",
           "NoValleyError", "MIDDLE_BAND", "gamma_summary"]

MIDDLE_BAND = (0.1, 0.4)  # neither clearly pruned nor clearly kept, for γ in [0, 1]


def flat_gammas(gammas: Mapping[str, Tensor] | Tensor) -> Tensor:
    """All γ of a per-layer snapshot (or a tensor) as one flat float tensor."""
    if isinstance(gammas, Tensor):
        return gammas.detach().float().flatten()
    return torch.cat([g.detach().float().flatten() for g in gammas.values()])


def check_histogram(bins: int, upper: float) -> None:
    """A ConfigError with one line unless ``bins`` is a whole number of bins and ``upper`` in ``LIMITS``."""
    if not isinstance(bins, int) or isinstance(bins, bool) or not 2 <= bins <= 100_000:
        raise ConfigError(f"bins must be a whole number in [2, 100000], got {bins!r}")
    check_range("upper", upper)


def gamma_histogram(gammas: Mapping[str, Tensor] | Tensor, bins: int = 100,
                    upper: float = 1.0) -> tuple[Tensor, Tensor]:
    """Counts of γ in ``bins`` equal bins over [0, upper] (values outside are clipped into the end bins) and the
    bin edges. Charts send these counts rather than raw γ."""
    check_histogram(bins, upper)
    g = flat_gammas(gammas).clamp(0, upper)
    counts = torch.histc(g, bins=bins, min=0.0, max=upper)
    return counts, torch.linspace(0, upper, bins + 1)


def count_modes(counts: Tensor, min_prominence: float = 0.03) -> int:
    """Number of peaks of a histogram that rise above the lowest point since the previous peak by at least
    ``min_prominence`` of all counts (so sampling noise is not counted as a mode)."""
    c = counts.float() / counts.sum().clamp(min=1)
    modes, climbing = 0, True
    low = rising_from = peak = 0.0
    for value in c.tolist():
        if climbing:
            peak = max(peak, value)
            if peak - value >= min_prominence:  # came down from a peak far enough: it was a mode
                if peak - rising_from >= min_prominence:
                    modes += 1
                climbing, low = False, value
        else:
            low = min(low, value)
            if value - low >= min_prominence:  # climbing again out of a valley
                climbing, rising_from, peak = True, low, value
    if climbing and peak - rising_from >= min_prominence:
        modes += 1
    return modes


def middle_share(gammas: Mapping[str, Tensor] | Tensor, band: tuple[float, float] = MIDDLE_BAND) -> float:
    """The share of γ strictly inside ``band``."""
    g = flat_gammas(gammas)
    return float(((g > band[0]) & (g < band[1])).float().mean())


class NoValleyError(PolarError):
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


def is_polarized(gammas: Mapping[str, Tensor] | Tensor, upper: float = 1.0, share: float = 0.1) -> bool:
    """Whether γ show the paper's picture: a spike at 0 (at least ``share`` of γ within 5% of the range from 0),
    a mode away from it (at least ``share`` above 20% of the range) and a valley between them."""
    g = flat_gammas(gammas)
    if (g <= 0.05 * upper).float().mean() < share or (g >= 0.2 * upper).float().mean() < share:
        return False
    try:
        valley(*gamma_histogram(g, 100, upper))
    except NoValleyError:
        return False
    return True


def gamma_summary(gammas: Mapping[str, Tensor], upper: float = 1.0, bins: int = 50, layer_bins: int = 20) -> dict:
    """What a chart needs of one model's γ, as plain lists: overall and per-layer bin counts over [0, upper], the
    number of modes, whether γ show the split (spike at 0, valley, mode away), and the share exactly at 0."""
    g = flat_gammas(gammas)
    return {"counts": gamma_histogram(g, bins, upper)[0].tolist(),
            "layers": {name: gamma_histogram(v, layer_bins, upper)[0].tolist() for name, v in gammas.items()},
            "modes": count_modes(gamma_histogram(g, 20, upper)[0]), "split": is_polarized(g, upper),
            "zero_share": float((g <= 0).float().mean())}
