"""Lockstep training of one start under several regularizers: the paper's comparison, made visible.

    duel = polar.Duel({"polar": cfg_polar, "l1": cfg_l1}, data)
    for method, event in duel:            # one step of each method in turn: same weights, same batches
        ...
    duel.models["polar"]                   # the trained models, updated in place

Every method trains a copy of one initial model (``start``, or fresh weights from the first config's seed) on the
same data order (``polar.train`` shuffles by the config's seed, so the configs share a seed and a batch size). The
explorer's trainer process, notebook 02 and the study all consume this generator. ``duel.states`` hold each
method's :class:`polar.TrainState`: with the models' weights they continue the duel exactly in another process
(``Duel(..., models=..., states=...)``).
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path

from torch import nn

from .config import ConfigError, TrainConfig
from .device_dataset import DeviceDataset
from .pretrained import initial_model
from .train import EpochEvent, StepEvent, TrainState, train

__all__ = ["Duel"]


class Duel:
    """Several regularizers trained in lockstep from one start; iterate for ``(method, event)`` pairs."""

    def __init__(self, cfgs: Mapping[str, TrainConfig], data: DeviceDataset, start: nn.Module | None = None,
                 run_root: str | Path | None = None, models: Mapping[str, nn.Module] | None = None,
                 states: Mapping[str, TrainState] | None = None) -> None:
        """``models`` and ``states``: each method's weights and training state where an earlier duel of these
        configs stood (its ``models`` and ``states``), to continue it; otherwise every method starts from
        ``start``."""
        if not cfgs:
            raise ConfigError("a duel needs at least one config")
        first = next(iter(cfgs.values()))
        for name, cfg in cfgs.items():
            if (cfg.seed, cfg.batch_size, cfg.epochs, cfg.model) != (first.seed, first.batch_size, first.epochs,
                                                                      first.model):
                raise ConfigError(f"{name}: every method of a duel needs the same model, seed, batch size and epochs "
                                  "(the same start and the same batches)")
        self.cfgs = dict(cfgs)
        self.data = data
        if (models is None) != (states is None) or (models is not None and set(models) != set(cfgs)) or (
                states is not None and set(states) != set(cfgs)):
            raise ConfigError("to continue a duel give models and states for every method, or neither")
        if models is None:
            start = start if start is not None else initial_model(first, data.num_classes)
            models = {name: start for name in cfgs}
        self.models: dict[str, nn.Module] = {name: copy.deepcopy(models[name]) for name in cfgs}
        self.states: dict[str, TrainState] = {name: states[name] if states else TrainState() for name in cfgs}
        root = Path(run_root) if run_root is not None else None
        self._runs = {name: train(cfg, run_dir=root / name if root else None, model=self.models[name], data=data,
                                  state=self.states[name]) for name, cfg in cfgs.items()}

    @property
    def steps_per_epoch(self) -> int:
        return self.data.steps_per_epoch(next(iter(self.cfgs.values())).batch_size)

    def __iter__(self) -> Iterator[tuple[str, StepEvent | EpochEvent]]:
        """One event of each method in turn until all have finished (their epochs end on the same step)."""
        while True:
            for name, run in self._runs.items():
                event = next(run, None)
                if event is None:
                    return
                yield name, event

    def close(self) -> None:
        """Stop every method's training (their run directories keep the last complete epoch)."""
        for run in self._runs.values():
            run.close()
