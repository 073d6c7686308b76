"""The regularizers without a network: n scaling factors under a task-like pull, descended with L1 or polarization.

    snaps = polar.toy_gammas("polar", lam=0.3, t=1.2)      # {step: γ} at the snapshot steps

Each γ_i has a task term ½·w_i·(γ_i − p_i)², a "how much the task needs channel i" weight w_i (log-normal, so a few
channels matter a lot and many little) and a preferred value p_i in [0.3, 0.7]; plain gradient descent adds λ·R(γ).
L1 shrinks every γ by the same amount, so the weakly needed channels drift down together; polarization pushes those
below the mean down harder than those above, so they split into a spike at 0 and a mode. Notebook 01 and the
explorer's playground page both run this function.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from .config import check_range
from .errors import ConfigError

__all__ = ["toy_gammas", "penalty_gradient"]


def toy_gammas(reg: str, lam: float, t: float = 1.2, n: int = 2000, steps: int = 400, lr: float = 0.05,
               clamp: bool = True, snapshots: Iterable[int] = (0, 50, 150, 400), seed: int = 0) -> dict[int, Tensor]:
    """γ at each snapshot step of gradient descent on task + λ·R(γ) (``reg``: ``polar`` or ``l1``), from γ = 0.5.

    ``clamp``: keep γ in [0, 1] after every step (the paper's polarization does; turning it off shows why it is
    needed: without it, the γ below the mean keep falling past 0)."""
    if reg not in ("polar", "l1"):
        raise ConfigError(f"reg must be polar or l1, got {reg!r}")
    check_range("lam", lam)
    check_range("t", t)
    if n < 2 or steps < 0:
        raise ConfigError(f"need n >= 2 factors and steps >= 0, got n={n}, steps={steps}")
    gen = torch.Generator().manual_seed(seed)
    importance = torch.exp(torch.randn(n, generator=gen))  # log-normal(0, 1): how much the task needs each channel
    preferred = 0.3 + 0.4 * torch.rand(n, generator=gen)
    wanted = set(snapshots)
    g = torch.full((n,), 0.5)
    out = {}
    for step in range(steps + 1):
        if step in wanted:
            out[step] = g.clone()
        if step == steps:
            break
        g -= lr * (importance * (g - preferred) + lam * penalty_gradient(reg, g, t))
        if clamp:
            g.clamp_(0, 1)
    return out


def penalty_gradient(reg: str, g: Tensor, t: float = 1.2) -> Tensor:
    """The subgradient autograd takes of ``polarization(g, t)`` or ``l1(g)`` (sign(0) = 0), in closed form: the
    playground redraws within a fraction of a second because it skips autograd's per-step overhead."""
    if reg == "l1":
        return torch.sign(g)
    spread = torch.sign(g - g.mean())
    return t * torch.sign(g) - (spread - spread.mean())
