"""Sparsity regularizers on the sparse BN scaling factors γ: polarization (Zhuang et al. 2020) and L1 (Liu et al.
2017).

The math lives in pure functions of one flat γ tensor; ``Polarization`` and ``L1`` are small callables that gather
a model's sparse γ and return ``λ · penalty`` as a scalar tensor for the loss, so autograd supplies the
subgradient and both methods go through the same training code.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .config import check_range
from .errors import ConfigError
from .models import regularized_bns, sparse_bns

__all__ = ["polarization", "l1", "Polarization", "L1", "NoRegularizer", "Regularizer", "make_regularizer",
           "sparse_gammas", "l1_lambda_for", "optimal_zero_share"]


def sparse_gammas(model: nn.Module) -> Tensor:
    """All sparse (prunable) γ of the model concatenated into one flat tensor (in the graph, not detached)."""
    return torch.cat([bn.weight.view(-1) for bn in sparse_bns(model)])


def polarization(gamma: Tensor, t: float, weights: Tensor | None = None) -> Tensor:
    """R(γ) = t·‖γ‖₁ − ‖γ − mean(γ)‖₁ over one flat γ (the mean is over all of it and is not detached).

    The first term pushes every γ to 0; the second pushes γ away from their mean, so together they split γ into a
    spike at 0 and a mode away from it instead of shrinking all of them as L1 does. ``weights`` (one per γ, e.g.
    :func:`polar.channel_cost.flops_layer_weights` spread over each layer's channels) weight each γ's term.
    """
    terms = t * gamma.abs() - (gamma - gamma.mean()).abs()
    return (terms if weights is None else weights * terms).sum()


def l1(gamma: Tensor, weights: Tensor | None = None) -> Tensor:
    """‖γ‖₁ (network slimming), each |γ| optionally weighted."""
    return (gamma.abs() if weights is None else weights * gamma.abs()).sum()


class Regularizer:
    """A penalty on the sparse γ: ``reg(model)`` is the scalar to add to the loss; ``clamp`` runs after each step.

    ``layer_weights``: one weight per regularized BN (``polar.regularized_bns`` order) multiplying that layer's
    terms, e.g. :func:`polar.channel_cost.flops_layer_weights` (the official ``--flops-weighted``); None = all 1.
    """

    name = "none"
    lam = 0.0
    layer_weights: list[float] | None = None

    def __call__(self, model: nn.Module) -> Tensor:
        raise NotImplementedError

    def penalized(self, model: nn.Module) -> list[bool]:
        """For each regularized BN, whether the penalty covers it (all of them, unless a subclass says otherwise)."""
        return [True] * len(regularized_bns(model))

    def clamp_(self, model: nn.Module) -> None:
        """Project γ back to the regularizer's domain after an optimizer step (a no-op by default)."""

    def _set_layer_weights(self, layer_weights: Sequence[float] | None) -> None:
        if layer_weights is not None:
            layer_weights = [float(w) for w in layer_weights]
            if not all(0.0 <= w < float("inf") for w in layer_weights):
                raise ConfigError(f"layer weights must be finite and >= 0, got {layer_weights}")
        self.layer_weights = layer_weights
        # per model: its penalized BNs and each γ's weight. They depend on the architecture only, and finding them
        # walks the module tree three times and builds the weights (~1.7 ms of a weighted ResNet-20 step on CPU)
        self._layouts: weakref.WeakKeyDictionary[nn.Module, tuple[list[nn.Module], Tensor | None]] = \
            weakref.WeakKeyDictionary()

    def _layout(self, model: nn.Module) -> tuple[list[nn.Module], Tensor | None]:
        regularized = regularized_bns(model)
        if self.layer_weights is not None and len(self.layer_weights) != len(regularized):
            raise ConfigError(f"{len(self.layer_weights)} layer weights for {len(regularized)} regularized BNs; "
                             "compute them for this model (polar.channel_cost.flops_layer_weights)")
        chosen = [i for i, covered in enumerate(self.penalized(model)) if covered]
        bns = [regularized[i] for i in chosen]
        if self.layer_weights is None:
            return bns, None
        sizes = torch.tensor([bn.num_features for bn in bns])
        return bns, torch.tensor([self.layer_weights[i] for i in chosen]).repeat_interleave(sizes)

    def _gammas_and_weights(self, model: nn.Module) -> tuple[Tensor, Tensor | None]:
        """The penalized γ as one flat tensor, and each γ's layer weight (None when unweighted)."""
        layout = self._layouts.get(model)
        if layout is None:
            layout = self._layouts[model] = self._layout(model)
        bns, weights = layout
        gamma = torch.cat([bn.weight.view(-1) for bn in bns])
        if weights is not None and (weights.device != gamma.device or weights.dtype != gamma.dtype):
            weights = weights.to(gamma)
            self._layouts[model] = (bns, weights)
        return gamma, weights


class Polarization(Regularizer):
    """λ · Σ_l [t·‖γ_l‖₁ − ‖γ_l − γ̄‖₁] over the regularized BNs that are prunable, γ̄ their mean over the whole
    network; every regularized BN (a CIFAR ResNet's stem too, as in the official code) clamped to [0, upper].

    Args:
        lam: strength λ ≥ 0. The paper's values suit 200-epoch runs; brief runs need proportionally more.
        t: the pull to zero relative to the push apart, in ``polar.LIMITS['t']`` (the paper uses about 1.0–1.6).
           t ≤ 1 makes the penalty reward γ above the mean for growing, which the clamp to ``upper`` then bounds.
        upper: the upper bound a of γ after every step (the paper uses a = 1).
    """

    name = "polar"

    def __init__(self, lam: float, t: float = 1.2, upper: float = 1.0,
                 layer_weights: Sequence[float] | None = None) -> None:
        self.lam, self.t, self.upper = check_range("lam", lam), check_range("t", t), check_range("upper", upper)
        self._set_layer_weights(layer_weights)

    def penalized(self, model: nn.Module) -> list[bool]:
        """The prunable ones: the official code polarizes its sparse layers only, and γ̄ is their mean."""
        sparse = {id(bn) for bn in sparse_bns(model)}
        return [id(bn) in sparse for bn in regularized_bns(model)]

    def __call__(self, model: nn.Module) -> Tensor:
        gamma, weights = self._gammas_and_weights(model)
        return self.lam * polarization(gamma, self.t, weights)

    @torch.no_grad()
    def clamp_(self, model: nn.Module) -> None:
        for bn in regularized_bns(model):
            bn.weight.clamp_(0.0, self.upper)

    def __repr__(self) -> str:
        weighted = "" if self.layer_weights is None else f", layer_weights=<{len(self.layer_weights)}>"
        return f"Polarization(lam={self.lam}, t={self.t}, upper={self.upper}{weighted})"


class L1(Regularizer):
    """λ · Σ_l ‖γ_l‖₁ over every regularized BN (network slimming; a CIFAR ResNet's stem too, as the official code's
    L1 penalizes every BN); γ is left unclamped, as Liu et al. do."""

    name = "l1"

    def __init__(self, lam: float, layer_weights: Sequence[float] | None = None) -> None:
        self.lam = check_range("lam", lam)
        self._set_layer_weights(layer_weights)

    def __call__(self, model: nn.Module) -> Tensor:
        return self.lam * l1(*self._gammas_and_weights(model))

    def __repr__(self) -> str:
        weighted = "" if self.layer_weights is None else f", layer_weights=<{len(self.layer_weights)}>"
        return f"L1(lam={self.lam}{weighted})"


class NoRegularizer(Regularizer):
    """The baseline: no penalty (a zero that still lives on the model's device)."""

    def __call__(self, model: nn.Module) -> Tensor:
        return sparse_gammas(model).new_zeros(())

    def __repr__(self) -> str:
        return "NoRegularizer()"


def optimal_zero_share(t: float) -> float:
    """Theorem 3.2 of the paper: minimising the polarization regularizer alone over γ ∈ [0, a]^n, the share of γ
    at 0 is 1/2 + t/4 for −2 ≤ t ≤ 2 (0 below, 1 above), and the rest sit at a. Training departs from it because
    the task loss pulls the γ the network needs upward (the paper gives no theory for the full objective)."""
    return min(1.0, max(0.0, 0.5 + t / 4))


def l1_lambda_for(lam: float, t: float) -> float:
    """L1's λ for a comparison with polarization at (λ, t): (t − 1)·λ, the same pull on the channels that are kept.

    Per unit of lr, polarization pulls each γ above the mean toward 0 by λ(t−1) and each below it by λ(t+1); L1
    pulls every γ by its λ. With λ' = (t−1)λ both shrink the large γ — the channels the network relies on — equally
    fast, and only polarization drives the small ones to 0. Equal λ (or the equal *average* pull, tλ) makes L1
    shrink the important channels 1/(t−1) times faster: with t = 1.2 and a brief run, L1's network then loses most of
    its accuracy during training, before any pruning (measured in the explorer: 88 % → 46 % in a minute). For
    t ≤ 1 polarization does not pull the large γ down at all, so L1 gets λ = 0. (The official code tuned each
    method's λ on its own; this rule is Polar's default for a duel; the study compares grids.) The product is
    rounded to 12 significant digits, so a URL or a config shows 0.004 rather than binary noise.
    """
    return check_range("lam", float(f"{max(0.0, t - 1.0) * lam:.12g}"))  # 0.004, not the product's 0.003999999999999999


def make_regularizer(reg: str, lam: float = 0.0, t: float = 1.2, upper: float = 1.0,
                     layer_weights: Sequence[float] | None = None) -> Regularizer:
    """Build a regularizer by name: ``polar``, ``l1`` or ``none`` (which has no layers to weight)."""
    if reg == "polar":
        return Polarization(lam, t, upper, layer_weights)
    if reg == "l1":
        return L1(lam, layer_weights)
    if reg == "none":
        return NoRegularizer()
    raise ConfigError(f"unknown regularizer {reg!r}; choose polar, l1 or none")
