"""Deployment: a (pruned) model as an ONNX file that ONNX Runtime runs with the same outputs.

    polar.export_onnx(small, "pruned.onnx")            # input "images" (N, 3, H, W), output "logits"; any N

Pruned networks are ordinary modules of smaller widths (folded constants are plain bias maps), so torch.onnx's
exporter (torch.export based) handles every registered model; the tests check ONNX Runtime == PyTorch within 1e-4.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .errors import ConfigError
from .models import unwrap

__all__ = ["export_onnx"]


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int, int, int] | None = None) -> Path:
    """Write ``model`` (a copy in eval mode, on the CPU) to ``path`` as ONNX, atomically, with a dynamic batch.

    ``input_size``: the example input's shape (default: the model's own, e.g. (1, 3, 32, 32) for CIFAR)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; pass a file path such as {path / 'model.onnx'}")
    inner = unwrap(model)
    if input_size is None and not isinstance(getattr(inner, "input_size", None), int):
        raise ConfigError(f"{type(inner).__name__} does not say its input size; pass input_size=(1, C, H, W) "
                         "(models from polar.create_model know theirs)")
    # a contiguous CPU copy: channels_last weights make torch.export specialise the batch size
    inner = copy.deepcopy(inner).eval().cpu().to(memory_format=torch.contiguous_format)
    size = input_size or (1, 3, inner.input_size, inner.input_size)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals, not the user's model
        program = torch.onnx.export(inner, (torch.randn(size),), dynamo=True, verbose=False,
                                    input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},))
        program.save(tmp)
    return path
