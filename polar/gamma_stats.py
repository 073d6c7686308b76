"""Numbers that describe a γ distribution: binned histograms (what charts draw), the number of modes, and the
share of γ in the ambiguous middle band — the quantities that tell polarization's split from L1's shrinkage.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["flat_gammas", "gamma_histogram", "count_modes", "middle_share", "MIDDLE_BAND"]

MIDDLE_BAND = (0.1, 0.4)  # neither clearly pruned nor clearly kept, for γ in [0, 1]


def flat_gammas(gammas: Mapping[str, Tensor] | Tensor) -> Tensor:
    """All γ of a per-layer snapshot (or a tensor) as one flat float tensor."""
    if isinstance(gammas, Tensor):
        return gammas.detach().float().flatten()
    return torch.cat([g.detach().float().flatten() for g in gammas.values()])


def gamma_histogram(gammas: Mapping[str, Tensor] | Tensor, bins: int = 100,
                    upper: float = 1.0) -> tuple[Tensor, Tensor]:
    """Counts of γ in ``bins`` equal bins over [0, upper] (values outside are clipped into the end bins) and the
    bin edges. Charts send these counts rather than raw γ."""
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
