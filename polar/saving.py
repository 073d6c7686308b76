"""Saving and loading models as architecture name + channel configuration + weights (no pickled classes).

A pruned model is its class built with smaller widths, so ``spec()`` (the constructor arguments) and the
state_dict are all it takes to rebuild it anywhere.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from .atomic import atomic_save
from .models import create_model, unwrap
from .runs import CheckpointError, read_torch_file

__all__ = ["save", "load", "model_record", "model_from_record", "weights_blob", "read_weights"]


def model_record(model: nn.Module) -> dict:
    """The plain dict that rebuilds ``model``: its registry name, constructor spec and state_dict."""
    inner = unwrap(model)
    return {"model": inner.name, "spec": inner.spec(), "state_dict": inner.state_dict()}


def model_from_record(record: dict) -> nn.Module:
    """Rebuild a model from :func:`model_record`'s dict (also accepts a training checkpoint)."""
    try:
        model = create_model(record["model"], **record["spec"])
        model.load_state_dict(record["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"the saved model does not match its architecture ({str(err).splitlines()[0]})") from None
    return model


def save(model: nn.Module, path: str | Path | BinaryIO) -> None:
    """Write ``model`` (architecture, channel configuration, weights) to ``path`` atomically, or into an open
    binary file (e.g. ``io.BytesIO`` for a download)."""
    if isinstance(path, (str, Path)):
        atomic_save(model_record(model), path)
    else:
        torch.save(model_record(model), path)


def load(path: str | Path | BinaryIO) -> nn.Module:
    """Load a model written by :func:`save` (or a run's ``checkpoint.pt``), from a path or an open binary file, on
    the CPU, in eval mode. Only tensors and plain data are read: a file carrying pickled code is refused."""
    return model_from_record(read_torch_file(path)).eval()


def weights_blob(models: dict[str, nn.Module]) -> bytes:
    """Named models' records as one ``torch.save`` blob: how weights cross a socket to a worker process."""
    buffer = io.BytesIO()
    torch.save({name: model_record(model) for name, model in models.items()}, buffer)
    return buffer.getvalue()


def read_weights(blob: bytes) -> dict[str, nn.Module]:
    """The models of :func:`weights_blob` (weights only: nothing pickled is executed)."""
    records = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    return {name: model_from_record(record) for name, record in records.items()}
