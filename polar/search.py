"""The paper's Algorithm 1: search λ (t fixed) with short runs until valley pruning removes the target share of
FLOPs, within a tolerance.

Stronger polarization pushes more channels into the spike at 0, so the FLOPs reduction at the valley grows with λ.
The search brackets the target by doubling or halving λ, then bisects in log space. Each trial is a short training
run in its own directory, logged as one row of ``trials.csv``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic import atomic_write_csv
from .compare import prune_at_valley
from .config import ConfigError, TrainConfig
from .datasets import load_training_data
from .device import resolve_device
from .pretrained import initial_model
from .train import EpochEvent, train

__all__ = ["Trial", "search_lambda"]


@dataclass
class Trial:
    """One short run of the search."""

    trial: int
    lam: float
    threshold: float  # the valley (nan when γ had no valley: λ too weak to polarize)
    flops_reduction: float
    test_acc: float  # the trained model, before pruning
    pruned_acc: float  # after valley pruning, before fine-tuning
    run_dir: str


def search_lambda(cfg: TrainConfig, target: float, out: str | Path, tolerance: float = 0.03,
                  max_trials: int = 8) -> Iterator[Trial]:
    """Yield one :class:`Trial` per short run until ``|reduction − target| ≤ tolerance`` or ``max_trials`` runs.

    ``cfg`` gives the model, data, schedule, t and the first λ to try (``cfg.lam``); ``cfg.reg`` must be polar.
    """
    if cfg.reg != "polar" or cfg.lam <= 0:
        raise ConfigError("the λ search needs --reg polar and a starting --lam > 0")
    if not 0 < target < 1:
        raise ConfigError(f"target FLOPs reduction must be in (0, 1), got {target}")
    out = Path(out)
    data = load_training_data(cfg, resolve_device(cfg.device))
    rows: list[dict] = []
    lo = hi = None  # the largest λ known to fall short of the target, the smallest known to overshoot it
    lam = cfg.lam
    for i in range(1, max_trials + 1):
        trial_cfg = dataclasses.replace(cfg, lam=lam)
        run_dir = out / f"trial{i:02d}_lam{lam:.3g}"
        model = initial_model(trial_cfg, data.num_classes)  # the same initial weights in every trial
        last = [e for e in train(trial_cfg, run_dir=run_dir, model=model, data=data) if isinstance(e, EpochEvent)][-1]
        pruned = prune_at_valley(model, data, upper=cfg.upper)  # no valley: NaN threshold and accuracy
        threshold = math.nan if pruned.threshold is None else pruned.threshold
        pruned_acc = math.nan if pruned.acc_pruned is None else pruned.acc_pruned
        trial = Trial(i, lam, threshold, pruned.flops_reduction, last.test_acc, pruned_acc, str(run_dir))
        rows.append(asdict(trial))
        atomic_write_csv(rows, out / "trials.csv")
        yield trial
        if abs(pruned.flops_reduction - target) <= tolerance:
            return
        if pruned.flops_reduction < target:
            lo = lam
        else:
            hi = lam
        lam = math.sqrt(lo * hi) if lo is not None and hi is not None else (lam * 2 if hi is None else lam / 2)
