"""Deployment: a (pruned) model as an ONNX file that ONNX Runtime runs with the same outputs.

    polar.export_onnx(small, "pruned.onnx")            # input "images" (N, 3, H, W), output "logits"; any N

Pruned networks are ordinary modules of smaller widths (folded constants are plain bias maps), so torch.onnx's
exporter (torch.export based) handles every registered model; the tests check ONNX Runtime == PyTorch within 1e-4.
"""
from __future__ import annotations

import copy
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .models import unwrap

__all__ = ["export_onnx"]


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int, int, int] | None = None) -> Path:
    """Write ``model`` (a copy in eval mode, on the CPU) to ``path`` as ONNX, atomically, with a dynamic batch.

    ``input_size``: the example input's shape (default: the model's own, e.g. (1, 3, 32, 32) for CIFAR)."""
    # a contiguous CPU copy: channels_last weights make torch.export specialise the batch size
    inner = copy.deepcopy(unwrap(model)).eval().cpu().to(memory_format=torch.contiguous_format)
    size = input_size or (1, 3, inner.input_size, inner.input_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals, not the user's model
            program = torch.onnx.export(inner, (torch.randn(size),), dynamo=True, verbose=False,
                                        input_names=["images"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},))
        program.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
