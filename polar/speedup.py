"""Prune to a measured speed, not a FLOPs count: ``polar.prune_to_speedup``.

    small = polar.prune_to_speedup(model, 2.0, runtime="onnxruntime")   # ~2x faster there, an ordinary pruned model

The widths come from a latency table (``polar.latency_table``: this machine, this runtime, this batch size) and the
channels from γ. The rule: a channel's importance is its γ (the smallest of its set's BNs' γ, as ``polar.prune``
ranks channels), and a set keeps its most important channels. Starting from the full widths, each step narrows the one
channel set whose next cut loses the least importance per millisecond the table predicts it saves (a greedy on
importance per ms, the fractional knapsack's rule, as in HALP); a cut takes a set down to the next multiple of the
table's granularity, so widths land where the hardware rewards them, and a ResNet block's set may go to 0 (the block
becomes its shortcut). It stops once the predicted latency is within the budget, then widens again, most importance
regained first, any set whose next block up still fits it (the last cut may have overshot). Polarized γ make the
importance side easy: the channels at γ ≈ 0 cost nothing to remove, so they go first wherever they save time.

The channels chosen are then removed by the same surgery as ``polar.prune`` (``polar.prune_channels``): the result
saves, loads and exports like any pruned model and equals the network with those channels' γ set to 0.

The table predicts random widths within ~10-20 %, but the greedy's choices are not random: it seeks out the widths
the table thinks cheapest, so its errors there add up in one direction (at batch 1 in ONNX Runtime, asked 1.5x,
measured 1.10-1.25x). ``pruned_for_speedup(..., replans=N)`` closes the loop on the machine itself: it measures the
network it chose and, while that is more than ``tolerance`` from the asked speed-up, plans again for a predicted
speed-up scaled by the shortfall (asked 2x, measured 1.6x: the next plan asks the table for 2.5x), keeping the
network measured closest.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from .errors import ConfigError
from .latency_table import LatencyTable, full_widths, latency_table, measured_speedup
from .models import ChannelSet, channel_sets, unwrap
from .prune import prune_channels

__all__ = ["plan_speedup", "prune_to_speedup", "pruned_for_speedup", "closest_measured", "SpeedupPruning",
           "strongest_kept"]


def _importance(cs: ChannelSet) -> torch.Tensor:
    """A channel set's channel importance: γ, the smallest over the set's BNs (as ``polar.prune`` ranks them)."""
    return torch.stack([bn.weight.detach().abs().float().cpu() for bn in cs.bns]).min(0).values


def plan_speedup(model: nn.Module, speedup: float, table: LatencyTable) -> list[int]:
    """The width of each channel set (``polar.channel_sets`` order) that the greedy above keeps for a predicted
    ``speedup`` over the unpruned network in ``table``'s runtime."""
    if not isinstance(speedup, (int, float)) or not math.isfinite(speedup) or speedup < 1:
        raise ConfigError(f"speedup must be a number of at least 1 (2 = twice as fast), got {speedup!r}")
    inner = unwrap(model)
    sets = channel_sets(inner)
    strengths = [_importance(cs).sort().values for cs in sets]  # ascending: a cut takes the weakest kept
    widths = full_widths(inner)
    step = table.granularity
    predict = table.predictor(inner)
    full = now = predict(widths)
    budget = full / speedup
    while now > budget:
        best: tuple[float, float, int, int] | None = None  # (importance per ms, -ms saved, set, new width)
        for i, (cs, w) in enumerate(zip(sets, widths)):
            if w == 0:
                continue  # already removed
            new = w - (w % step or step)  # the next multiple of the block below
            if new == 0 and not cs.allow_empty:
                continue  # a set that must keep a channel keeps a whole block
            n = len(strengths[i])
            lost = float(strengths[i][n - w:n - new].sum())
            saved = now - predict([*widths[:i], new, *widths[i + 1:]])
            if saved <= 0:
                continue
            candidate = (lost / saved, -saved, i, new)
            best = candidate if best is None or candidate < best else best
        if best is None:
            raise ConfigError(f"a {speedup:g}x speed-up is beyond what narrowing channels reaches in this table "
                              f"(predicted {full / now:.2f}x at most); ask for less")
        widths[best[2]] = best[3]
        now = predict(widths)
    return _give_back(widths, full_widths(inner), strengths, step, predict, budget)


def _give_back(widths: list[int], full: list[int], strengths: list[torch.Tensor], step: int,
               predict: Callable[[Sequence[int]], float], budget: float) -> list[int]:
    """The last cuts can overshoot the budget (a block, or a whole ResNet block, at a time): widen again, the most
    importance regained first, every set whose next block up still keeps the predicted time within it."""
    while True:
        best: tuple[float, float, int, int] | None = None  # (importance regained, -ms, set, new width)
        for i, (w, n) in enumerate(zip(widths, full)):
            if w >= n:
                continue
            new = min(n, w - w % step + step)
            ms = predict([*widths[:i], new, *widths[i + 1:]])
            if ms <= budget:
                candidate = (float(strengths[i][n - new:n - w].sum()), -ms, i, new)
                best = candidate if best is None or candidate > best else best
        if best is None:
            return widths
        widths[best[2]] = best[3]


def strongest_kept(model: nn.Module, widths: list[int]) -> list[torch.Tensor]:
    """The channels to remove (one bool mask per channel set) so that each set keeps its ``widths[i]`` most
    important channels: the input of ``polar.prune_channels`` for a width plan."""
    removed = []
    for cs, w in zip(channel_sets(unwrap(model)), widths):
        importance = _importance(cs)
        gone = torch.ones_like(importance, dtype=torch.bool)
        gone[importance.argsort(descending=True)[:w]] = False
        removed.append(gone)
    return removed


@dataclass(frozen=True)
class SpeedupPruning:
    """What :func:`pruned_for_speedup` did: the pruned model, the widths planned, the table's predicted speed-up,
    the table itself (its granularity and fit error say how far to trust the prediction), and with ``replans``
    the speed-up measured here and the predicted speed-up the kept plan asked the table for."""

    model: nn.Module
    widths: list[int]
    predicted_speedup: float
    table: LatencyTable
    measured_speedup: float | None = None
    asked_of_table: float | None = None


T = TypeVar("T")


def closest_measured(plan: Callable[[float], T], measure: Callable[[T], float], speedup: float, replans: int,
                     tolerance: float = 0.1) -> tuple[T, float, float]:
    """The loop of :func:`pruned_for_speedup`, apart from what it plans and measures: ``plan(ask)`` for the asked
    ``speedup`` first, then, while its speed-up ``measure(result)`` is more than ``tolerance`` (a share) from
    ``speedup`` and ``replans`` remain, for ``ask * speedup / measured`` (never below 1). Returns the result
    measured closest, its measured speed-up and the ask that made it. A re-plan the table cannot reach
    (``ConfigError``) ends the loop with the closest so far."""
    def off(measured: float) -> float:
        return abs(measured / speedup - 1)

    ask, best = float(speedup), None
    for _ in range(max(replans, 0) + 1):
        try:
            result = plan(ask)
        except ConfigError:
            if best is None:
                raise
            break
        measured = measure(result)
        if best is None or off(measured) < off(best[1]):
            best = (result, measured, ask)
        if off(measured) <= tolerance:
            break
        ask = max(1.0, ask * speedup / measured)
    return best


def pruned_for_speedup(model: nn.Module, speedup: float, runtime: str = "torch", batch_size: int = 64,
                       table: LatencyTable | None = None, replans: int = 0,
                       tolerance: float = 0.1) -> SpeedupPruning:
    """:func:`prune_to_speedup` with its plan and prediction kept, for a report (the CLI, the explorer). With
    ``replans`` > 0 each network chosen is measured against ``model`` (``polar.measured_speedup``, a few seconds
    each) and planned again for the shortfall, at most ``replans`` times (see the module doc): the result is the
    one measured closest to ``speedup``, with that measurement."""
    table = table or latency_table(model, runtime, batch_size)
    predict = table.predictor(model)
    full = predict(full_widths(model))

    def plan(ask: float) -> tuple[list[int], nn.Module]:
        widths = plan_speedup(model, ask, table)
        return widths, prune_channels(model, strongest_kept(model, widths))

    if replans <= 0:
        widths, small = plan(speedup)
        return SpeedupPruning(small, widths, full / predict(widths), table)
    (widths, small), measured, ask = closest_measured(
        plan, lambda chosen: measured_speedup(model, chosen[1], runtime, batch_size), speedup, replans, tolerance)
    return SpeedupPruning(small, widths, full / predict(widths), table, measured, ask)


def prune_to_speedup(model: nn.Module, speedup: float, runtime: str = "torch", batch_size: int = 64,
                     table: LatencyTable | None = None, replans: int = 0) -> nn.Module:
    """``model`` pruned for a ``speedup`` in ``runtime`` at ``batch_size`` on this machine, as predicted by its
    latency table (measured now, or read from the cache; pass ``table`` to reuse one): widths from
    :func:`plan_speedup`, each set keeping its largest-γ channels, removed by ``polar.prune_channels``. With
    ``replans``, measured and planned again for a shortfall (:func:`pruned_for_speedup`)."""
    return pruned_for_speedup(model, speedup, runtime, batch_size, table, replans).model
