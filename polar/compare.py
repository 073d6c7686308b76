"""Comparing regularizers the paper's way: prune each trained model to the same FLOPs, measure, fine-tune alike.

    table, small = polar.matched_flops({"polar": m_polar, "l1": m_l1}, data, threshold=valley, reference="polar")
    cfg = polar.finetune_config(train_cfg)            # the one fine-tune recipe (no regularizer)

The app's Prune button, notebook 02, the CLI and the study all use these, so a comparison means the same thing
everywhere.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .config import SCHEDULES, ConfigError, TrainConfig
from .device_dataset import DeviceDataset
from .evaluate import evaluate
from .flops import flops_reduction
from .prune import layer_thresholds, prune, pruned_channels, pruned_cost, unpruned_cost
from .threshold import NoValleyError, find_threshold, threshold_for_reduction

if TYPE_CHECKING:
    import pandas as pd  # imported where a table is built: ~0.4 s the explorer's first page does not need

__all__ = ["matched_flops", "prune_at_valley", "ValleyPruning", "finetune_config", "threshold_rules", "MATCHED_COLUMNS"]

MATCHED_COLUMNS = ["method", "threshold", "macs", "params", "flops_reduction", "acc_unpruned", "acc_pruned",
                   "acc_zero_beta"]


def matched_flops(models: Mapping[str, nn.Module], data: DeviceDataset, threshold: float | None = None,
                  reduction: float | None = None, reference: str | None = None, round_to: int = 1,
                  narrow_residual: bool = False,
                  accuracies: Mapping[str, float] | None = None,
                  on_pruned: Callable[[pd.DataFrame], None] | None = None
                  ) -> tuple[pd.DataFrame, dict[str, nn.Module]]:
    """Prune every model to one FLOPs reduction and measure it; a row per method and the pruned (folded) models.

    Either ``reference`` and ``threshold``: that model is pruned at the threshold (e.g. its valley) and the others
    to the FLOPs reduction it reached; or ``reduction``: every model is pruned to it (``threshold_for_reduction``).
    Accuracies are on ``data``'s test split before fine-tuning: unpruned, pruned with the removed channels'
    constants folded (``acc_pruned``, equal to masking) and with them dropped as the paper's code does
    (``acc_zero_beta``). ``accuracies``: the models' own test accuracies on ``data`` where already measured (the
    explorer's trainer measures them when it pauses), so only the pruned networks are evaluated. ``on_pruned``
    gets the table once every folded accuracy is measured, ``acc_zero_beta`` still NaN: the β-dropped networks are
    the second half of the work, and a page can show the answer asked for while they run.
    """
    if (threshold is None) == (reduction is None) or (threshold is not None and reference not in models):
        raise ConfigError("give a reference model's name with its threshold, or a FLOPs reduction for all models")
    options: dict[str, Any] = {"round_to": round_to, "narrow_residual": narrow_residual}
    thresholds: dict[str, float] = {}
    if threshold is not None and reference is not None:
        base = unpruned_cost(models[reference])
        reduction = flops_reduction(base, pruned_cost(models[reference], threshold, **options))
        thresholds[reference] = threshold
    for name, model in models.items():
        if name not in thresholds:  # nothing to remove: a threshold below every γ
            thresholds[name] = threshold_for_reduction(model, reduction, **options) if reduction > 0 else -1.0
    import pandas as pd

    rows, small = [], {}
    for name, model in models.items():  # the caller's models are only read: same device, mode and weights after
        small[name] = prune(model, thresholds[name], **options).to(data.device)
        before, after = unpruned_cost(model), pruned_cost(model, thresholds[name], **options)
        unpruned = (accuracies[name] if accuracies and name in accuracies
                    else evaluate(_on_device(model, data.device), data)[1])
        rows.append({"method": name, "threshold": thresholds[name], "macs": after.macs, "params": after.params,
                     "flops_reduction": flops_reduction(before, after), "acc_unpruned": unpruned,
                     "acc_pruned": evaluate(small[name], data)[1], "acc_zero_beta": float("nan")})
    if on_pruned is not None:
        on_pruned(pd.DataFrame(rows, columns=MATCHED_COLUMNS))
    for row, (name, model) in zip(rows, models.items()):
        dropped = prune(model, thresholds[name], zero_beta=True, **options).to(data.device)
        row["acc_zero_beta"] = evaluate(dropped, data)[1]
    return pd.DataFrame(rows, columns=MATCHED_COLUMNS), small


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself when it is on ``device`` already, else a copy there (the caller's model stays put)."""
    first = next(model.parameters(), None)
    return model if first is None or first.device == device else copy.deepcopy(model).to(device)


@dataclass(frozen=True)
class ValleyPruning:
    """What pruning at Polar's valley did: None for ``threshold`` and ``acc_pruned`` when γ has no valley yet
    (nothing was pruned)."""

    threshold: float | None
    flops_reduction: float
    acc_pruned: float | None


def prune_at_valley(model: nn.Module, data: DeviceDataset, upper: float = 1.0) -> ValleyPruning:
    """Polar's robust valley, the exact FLOPs it removes, and the pruned network's test accuracy (no fine-tuning):
    the one "prune, then measure" of a t/λ grid point and a λ-search trial."""
    try:
        threshold = find_threshold(model, "valley", upper=upper)
    except NoValleyError:
        return ValleyPruning(None, 0.0, None)
    reduction = flops_reduction(unpruned_cost(model), pruned_cost(model, threshold))
    return ValleyPruning(threshold, reduction, evaluate(prune(model, threshold).to(data.device), data)[1])


def finetune_config(cfg: TrainConfig, preset: str = "demo-finetune", **overrides: Any) -> TrainConfig:
    """``cfg`` turned into the fine-tuning recipe: no regularizer, ``preset``'s schedule, then ``overrides``.

    Model, data and seed stay those of ``cfg``, so every pruned network of a comparison is fine-tuned alike."""
    if preset not in SCHEDULES:
        raise ConfigError(f"unknown schedule preset {preset!r}; choose one of: {', '.join(SCHEDULES)}")
    return dataclasses.replace(cfg, **{**SCHEDULES[preset], "reg": "none", "lam": 0.0, **overrides})


THRESHOLD_RULES = {  # name -> find_threshold arguments
    "Polar's valley (global)": dict(method="valley"),
    "paper's rule (global)": dict(method="paper"),
    "paper's rule (per layer)": dict(method="paper", per_layer=True),
    "percentile (50 % of channels)": dict(method="percent", value=0.5),
}


def threshold_rules(model: nn.Module, upper: float = 1.0) -> pd.DataFrame:
    """What each threshold rule would do to ``model``: its threshold(s), the channels and the FLOPs it removes.
    A rule that finds no valley prunes nothing (its row says so)."""
    base, rows = unpruned_cost(model), []
    for name, kwargs in THRESHOLD_RULES.items():
        try:
            threshold = find_threshold(model, upper=upper, **kwargs)
        except NoValleyError:
            rows.append({"rule": name, "threshold": "no valley", "channels pruned": 0, "FLOPs reduction": 0.0})
            continue
        values = list(layer_thresholds(model, threshold).values())
        shown = f"{values[0]:.3f}" if not isinstance(threshold, Mapping) else f"{min(values):.3f} – {max(values):.3f}"
        rows.append({"rule": name, "threshold": shown, "channels pruned": pruned_channels(model, threshold),
                     "FLOPs reduction": flops_reduction(base, pruned_cost(model, threshold))})
    import pandas as pd
    return pd.DataFrame(rows)
