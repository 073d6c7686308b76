"""Learning-rate schedules as pure functions of the step, and the λ scaling that follows from them.

Per SGD step the regularizer moves γ by about λ·lr·(t ± 1) (times 1/(1 − momentum) once momentum builds up), so
what a run's regularization achieves depends on λ × Σ lr over all its steps. ``scale_lambda`` carries a λ tuned
for one schedule (the paper's 200 epochs) to another (a brief run) by keeping that product fixed.
"""
from __future__ import annotations

import dataclasses
import math

from .config import SCHEDULES, TrainConfig

__all__ = ["lr_at", "lr_sum", "scale_lambda", "PAPER_CIFAR_STEPS_PER_EPOCH"]

PAPER_CIFAR_STEPS_PER_EPOCH = 50_000 // 64  # CIFAR training split at the paper's batch size


def lr_at(step: int, total_steps: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """The learning rate for a 0-based step: linear warm-up, then step (x0.1 at 50%, 75%), cosine or constant."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if cfg.lr_schedule == "step":
        return cfg.lr * 0.1 ** sum(progress >= m for m in (0.5, 0.75))
    if cfg.lr_schedule == "piecewise":
        epoch = step // max(1, steps_per_epoch)
        return cfg.lr * [f for first, f in cfg.piecewise_steps() if first <= epoch][-1]
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr


def lr_sum(cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Σ lr over every step of the run ``cfg`` describes."""
    total = cfg.epochs * steps_per_epoch
    return sum(lr_at(s, total, cfg, steps_per_epoch) for s in range(total))


def scale_lambda(lam: float, cfg: TrainConfig, steps_per_epoch: int, reference: TrainConfig | None = None,
                 reference_steps_per_epoch: int = PAPER_CIFAR_STEPS_PER_EPOCH) -> float:
    """The λ that gives ``cfg``'s run the same total regularization (λ × Σ lr) as ``lam`` gives the reference run
    (default: the paper's 200-epoch CIFAR schedule)."""
    reference = reference or dataclasses.replace(cfg, **SCHEDULES["cifar"])
    return lam * lr_sum(reference, reference_steps_per_epoch) / lr_sum(cfg, steps_per_epoch)
