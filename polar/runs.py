"""A run directory on disk: ``config.json``, ``metrics.csv`` (one row per epoch), ``gammas/epoch_NNNN.pt``
(every sparse γ per layer) and ``checkpoint.pt`` (the last epoch). Every file is written atomically, so a run that
is stopped at any moment keeps its last complete epoch and can be resumed.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from .atomic import atomic_save, atomic_write_csv, atomic_write_text, remove_stale_temporaries
from .errors import CheckpointError

__all__ = ["RunDir", "CheckpointError"]


def read_torch_file(source: str | Path | BinaryIO) -> dict[str, Any]:
    """``torch.load`` a Polar file or an open binary file (weights only: no pickled code runs), with a one-line
    error when unreadable."""
    if isinstance(source, (str, Path)):
        source = Path(source)
        if source.is_dir():
            raise CheckpointError(f"{source} is a folder, not a file; pass its checkpoint.pt (a run folder) or a "
                                  "file written by polar.save")
        if not source.is_file():
            raise CheckpointError(f"{source} does not exist; pass a checkpoint.pt or a saved model file")
        label = str(source)
    else:
        label = getattr(source, "name", None) or "the file"
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or from an untrusted pickle
        raise CheckpointError(f"{label} is not a readable Polar checkpoint ({type(err).__name__}); "
                              "re-run the training that wrote it or pass another file") from None
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise CheckpointError(f"{label} holds no model state_dict; pass a checkpoint.pt or a file from polar.save")
    return obj


class RunDir:
    """The files of one training run. Only rank 0 of a distributed run writes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def exists(self) -> bool:
        return (self.path / "config.json").is_file()

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(json.dumps(config, indent=2) + "\n", self.path / "config.json")

    def read_config(self) -> dict[str, Any]:
        try:
            config = json.loads((self.path / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{self.path}/config.json is missing or unreadable ({err}); "
                                  "is this a run directory?") from None
        if not isinstance(config, dict):
            raise CheckpointError(f"{self.path}/config.json holds a {type(config).__name__}, not the settings of a "
                                  "run; is this a run directory?")
        return config

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite metrics.csv with all rows so far (small: one row per epoch)."""
        if rows:
            atomic_write_csv(rows, self.path / "metrics.csv")

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.csv"
        if not path.is_file():
            return []
        with path.open() as f:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def save_gammas(self, epoch: int, gammas: dict[str, Tensor]) -> None:
        atomic_save(gammas, self.path / "gammas" / f"epoch_{epoch:04d}.pt")

    def gamma_epochs(self) -> list[int]:
        """The epochs with a γ snapshot; any other file in ``gammas/`` (a user's stray copy) is ignored."""
        found = (re.fullmatch(r"epoch_(\d+)\.pt", p.name) for p in (self.path / "gammas").glob("epoch_*.pt"))
        return sorted(int(m.group(1)) for m in found if m)

    def load_gammas(self, epoch: int) -> dict[str, Tensor]:
        return torch.load(self.path / "gammas" / f"epoch_{epoch:04d}.pt", weights_only=True)

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files that writes killed mid-way left in this run (see ``polar.atomic``); a write
        still in progress in another process keeps its file. Called when a training of this run starts."""
        return (remove_stale_temporaries(self.path, r"config\.json|metrics\.csv|checkpoint\.pt")
                + remove_stale_temporaries(self.path / "gammas", r"epoch_\d+\.pt"))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_save(state, self.checkpoint_path)

    def load_checkpoint(self) -> dict[str, Any]:
        return read_torch_file(self.checkpoint_path)


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
