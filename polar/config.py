"""A run's settings: one flat, typed dataclass that the CLI, the app and the notebooks all fill.

The paper's schedules and per-model regularizer settings live in plain dicts (``SCHEDULES``, ``PAPER_SETTINGS``);
``TrainConfig.from_preset`` starts from them and applies overrides. Unknown keys and wrong types are errors.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from .device_dataset import DATASETS
from .errors import ConfigError
from .models import list_models

__all__ = ["TrainConfig", "SCHEDULES", "PAPER_SETTINGS", "ConfigError", "LIMITS", "check_range", "is_finite_number",
           "parse_numbers", "check_distinct", "field_types"]


# Schedules (SGD, momentum 0.9). "cifar": network slimming's (batch 64, lr 0.1 divided by 10 at 50% and 75% of
# training, weight decay 1e-4 with --bn-wd); "imagenet": 120 epochs, cosine. "paper-*": the official polarization
# scripts exactly. "demo*" are Polar's own: a few epochs for laptops and the app.
SCHEDULES: dict[str, dict[str, Any]] = {
    "cifar": dict(epochs=200, batch_size=64, lr=0.1, lr_schedule="step", weight_decay=1e-4, bn_wd=True),
    "imagenet": dict(epochs=120, batch_size=256, lr=0.1, lr_schedule="cosine", weight_decay=1e-4, bn_wd=True),
    "demo": dict(epochs=5, batch_size=128, lr=0.1, lr_schedule="cosine", weight_decay=5e-4, bn_wd=False),
    "demo-finetune": dict(epochs=3, batch_size=128, lr=0.02, lr_schedule="cosine", weight_decay=5e-4, bn_wd=False),
    # the explorer's and notebook 02's default: brief sparse training of the trained baseline Polar ships
    # (polar.pretrained), at a fine-tuning learning rate, with λ ~400x the paper's for a few hundred steps
    "demo-baseline": dict(epochs=2, batch_size=64, lr=0.02, lr_schedule="cosine", weight_decay=1e-4, bn_wd=False,
                          init="pretrained", lam=0.02, t=1.2),
    # The official code's scripts (its CIFAR README, paper Table 4), by name. Sparse training: lr 0.01 for epoch 0,
    # then 0.1, 0.02, 0.004, 0.0008 from epochs 1, 60, 120, 160; wd 5e-4 on BN too; batch 64 as in the code (the
    # paper's table says 128). λ and t per model: PAPER_SETTINGS.
    "paper-cifar": dict(epochs=200, batch_size=64, lr=0.1, lr_schedule="piecewise",
                        lr_steps="0:0.1,1:1,60:0.2,120:0.04,160:0.008", weight_decay=5e-4, bn_wd=True),
    "paper-cifar-finetune-resnet56": dict(epochs=200, batch_size=64, lr=1e-3, lr_schedule="piecewise",
                                          lr_steps="0:1,30:0.5,80:0.25,150:0.1", weight_decay=5e-4, bn_wd=True,
                                          reg="none", lam=0.0),
    "paper-cifar-finetune-vgg16": dict(epochs=200, batch_size=64, lr=5e-4, lr_schedule="piecewise",
                                       lr_steps="0:1,60:0.5,150:0.2", weight_decay=5e-4, bn_wd=True, reg="none",
                                       lam=0.0),
    # ImageNet: the official total batch is 512; Polar's batch_size is per process (8 GPUs: --batch-size 64)
    "paper-imagenet": dict(epochs=120, batch_size=512, lr=0.1, lr_schedule="piecewise", lr_steps="0:1,40:0.1,80:0.01",
                           weight_decay=1e-4, bn_wd=True),
    "paper-imagenet-finetune": dict(epochs=128, batch_size=512, lr=0.05, lr_schedule="cosine", weight_decay=1e-4,
                                    bn_wd=True, reg="none", lam=0.0),
}

# Network slimming fine-tunes a pruned network with its training settings; here with no regularizer.
SCHEDULES["cifar-finetune"] = dict(SCHEDULES["cifar"], reg="none", lam=0.0)

# Polarization settings at the paper's scale (200 CIFAR epochs). Its released CIFAR scripts use λ = 1e-4;
# the ResNet-56 value is the one this project's spec fixes. Brief runs need a proportionally larger λ.
PAPER_SETTINGS: dict[str, dict[str, float]] = {
    "resnet20": dict(lam=1e-4, t=1.2),
    "resnet32": dict(lam=1e-4, t=1.2),
    "resnet56": dict(lam=5e-5, t=1.4),
    "resnet110": dict(lam=5e-5, t=1.4),
    "vgg16": dict(lam=3e-5, t=1.5),  # the official VGG-16 script
    "mobilenet_v2": dict(lam=1e-4, t=1.2),
    "resnet50_imagenet": dict(lam=8e-5, t=1.2),  # the official ImageNet ResNet-50 script
    "mobilenet_v2_imagenet": dict(lam=1e-4, t=1.0),
}


# Allowed values (inclusive) of every numeric setting: the one source the CLI, the app's widgets and URL parsing,
# TrainConfig and the regularizers all check against. NaN and infinity are never allowed.
LIMITS: dict[str, tuple[float, float]] = {
    "subset": (0, 1_000_000),  # images per class; 0 = all
    "lam": (0.0, 10.0),
    "t": (0.0, 4.0),  # Theorem 3.2: for t > 2 the regularizer alone sends every γ to 0
    "upper": (1e-3, 100.0),
    "epochs": (1, 100_000),
    "batch_size": (1, 1 << 16),
    "lr": (1e-8, 10.0),
    "warmup_epochs": (0.0, 100_000.0),
    "momentum": (0.0, 0.999),
    "weight_decay": (0.0, 1.0),
    "seed": (0, 2**31 - 1),
    "workers": (0, 256),
}


def is_finite_number(value: object) -> bool:
    """A real number (int or float, not bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_range(name: str, value: float) -> float:
    """``value`` if it is a finite number inside ``LIMITS[name]``; a ConfigError naming the range otherwise."""
    lo, hi = LIMITS[name]
    if not is_finite_number(value):
        raise ConfigError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in [{lo:g}, {hi:g}], got {value:g}")
    return value


def parse_numbers(text: str, name: str, cast: Callable[[str], Any] = float, limit: str | None = None) -> list:
    """Comma-separated numbers (a grid's λ values, its seeds…) as a list; a ConfigError naming ``name`` (what the
    user typed into) with an example when the text holds none, anything that is not a finite number, or a value
    twice (a grid point trained twice is one point). With ``limit`` (a LIMITS key) each value is also checked
    against its range, so the CLI and the explorer refuse the same grids with the same words."""
    if limit is not None and limit not in LIMITS:
        raise ConfigError(f"no limit named {limit!r}; choose one of: {', '.join(LIMITS)}")
    try:
        values = [cast(v) for v in text.split(",") if v.strip()]
    except (ValueError, TypeError, AttributeError):
        values = []
    if not values or not all(is_finite_number(v) for v in values):
        raise ConfigError(f"{name} must be comma-separated numbers, e.g. 0.005,0.01; got {text!r}")
    for value in values if limit else ():
        check_range(limit, value)
    check_distinct(values, name)
    return values


def check_distinct(values: Sequence[float], name: str) -> None:
    """A ConfigError naming the first value ``values`` holds twice."""
    seen: set[float] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{name} lists {value:g} twice; give each value once")
        seen.add(value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved as ``config.json`` in the run directory. Frozen: a variant is
    ``dataclasses.replace(cfg, lam=...)``, checked like the original."""

    model: str = "resnet56"  # a name from polar.list_models()
    dataset: str = "cifar10"  # cifar10 | cifar100 | imagefolder | synthetic | imagenet
    data_dir: str = "data"  # cache and CIFAR download folder
    data_path: str = ""  # the folder for imagefolder / imagenet (train/ and test/ or val/ subfolders)
    subset: int = 0  # images per class for a balanced training subset; 0 = all
    reg: str = "polar"  # polar | l1 | none
    lam: float = 5e-5  # regularizer strength λ; 0 turns it off
    t: float = 1.4  # polarization: pull to zero relative to the push apart
    upper: float = 1.0  # polarization: γ is clamped to [0, upper] after every step
    epochs: int = 200
    batch_size: int = 64  # per process
    lr: float = 0.1  # peak learning rate
    lr_schedule: str = "step"  # step (x0.1 at 50% and 75%) | cosine | constant | piecewise (lr_steps)
    lr_steps: str = ""  # piecewise: "EPOCH:FACTOR,..." from epoch 0, e.g. "0:0.1,1:1,60:0.2" (lr × factor)
    warmup_epochs: float = 0.0  # linear warm-up from 0 (ImageNet-scale batches)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    bn_wd: bool = True  # weight decay on BatchNorm γ and β too (the paper's --bn-wd)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    channels_last: bool = True  # NHWC convolutions: faster on CPU and on tensor-core GPUs
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (else fp32); False: always fp32
    compile: bool = False  # CUDA only: torch.compile the training forward into CUDA graphs (launch-bound small models)
    workers: int = 8  # DataLoader workers (imagenet only)
    init: str = ""  # a checkpoint or saved model to start from, "pretrained" (the shipped baseline), "" = fresh
    flops_weights: str = ""  # "LOW,HIGH": weight each layer's penalty by what its channels cost (the official
    # --flops-weighted --weight-min LOW --weight-max HIGH; polar.channel_cost.flops_layer_weights); "" = unweighted

    def __post_init__(self) -> None:
        for name, kind in field_types().items():
            value = getattr(self, name)
            want = (int, float) if kind is float else kind
            if not isinstance(value, want) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"{name} must be {kind.__name__}, got {value!r}")
            if kind is float:
                object.__setattr__(self, name, float(value))  # frozen: the one normalisation, at construction
        self.validate()

    def validate(self) -> None:
        """Range checks with a one-line message each (the ranges are ``LIMITS``)."""
        for name in LIMITS:
            check_range(name, getattr(self, name))
        if self.model not in list_models():
            raise ConfigError(f"unknown model {self.model!r}; choose one of: {', '.join(list_models())}")
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASETS)}")
        if self.reg not in ("polar", "l1", "none"):
            raise ConfigError(f"reg must be polar, l1 or none, got {self.reg!r}")
        if self.lr_schedule not in ("step", "cosine", "constant", "piecewise"):
            raise ConfigError(f"lr_schedule must be step, cosine, constant or piecewise, got {self.lr_schedule!r}")
        if self.lr_schedule == "piecewise" or self.lr_steps:  # checked even where unused: a typo is never stored
            self.piecewise_steps()
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) cannot exceed epochs ({self.epochs})")
        self.flops_weight_range()

    def flops_weight_range(self) -> tuple[float, float] | None:
        """``flops_weights`` parsed: (low, high) with 0 <= low <= high <= 100, or None when it is empty."""
        if not self.flops_weights:
            return None
        try:
            low, high = (float(v) for v in self.flops_weights.split(","))
        except ValueError:
            low = high = float("nan")
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high <= 100):
            raise ConfigError(f"flops_weights must be LOW,HIGH with 0 <= LOW <= HIGH <= 100, e.g. 0.5,1.5; "
                              f"got {self.flops_weights!r}")
        return low, high

    def piecewise_steps(self) -> list[tuple[int, float]]:
        """``lr_steps`` parsed: (first epoch, lr factor) pairs, from epoch 0, epochs rising, factors finite > 0."""
        try:
            steps = [(int(e), float(f)) for e, f in (item.split(":") for item in self.lr_steps.split(","))]
        except ValueError:
            steps = []
        if (not steps or steps[0][0] != 0 or any(b[0] <= a[0] for a, b in zip(steps, steps[1:]))
                or not all(math.isfinite(f) and f > 0 for _, f in steps)):
            raise ConfigError(f"lr_steps must be EPOCH:FACTOR pairs from epoch 0 with rising epochs and positive "
                              f"factors, e.g. 0:0.1,1:1,60:0.2; got {self.lr_steps!r}")
        return steps

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys are an error (a typo must not silently fall back to a default)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_preset(cls, schedule: str, **overrides: Any) -> TrainConfig:
        """The model's ``PAPER_SETTINGS``, a schedule from ``SCHEDULES`` over them, then ``overrides`` on top."""
        if schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule preset {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        values = dict(PAPER_SETTINGS.get(overrides.get("model", cls.model), {}))
        values.update(SCHEDULES[schedule])  # a schedule that sets λ and t (demo-baseline) wins over the paper's
        values.update(overrides)
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def field_types() -> dict[str, type]:
    """Each ``TrainConfig`` field's type as a class (the annotations are strings under ``from __future__ import
    annotations``; ``typing.get_type_hints`` resolves them)."""
    hints = get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}
