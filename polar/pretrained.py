"""Trained baselines that ship with Polar, so a demo prunes a network that has learned.

    model = polar.pretrained("resnet20")        # ResNet-20 trained on CIFAR-10 by Polar's own CLI, checksum verified
    polar.list_pretrained()                      # {"resnet20": {...manifest entry...}}

Each baseline is a fp16 state_dict (a few hundred kB) under ``polar/baselines/`` with an entry in
``manifest.json``: model, dataset, test accuracy (measured by ``polar.evaluate`` on the fp16 weights), sha256, the
exact command that trained it and its per-epoch metrics. ``publish`` writes both from a finished run directory
(``scripts/publish_baseline.py``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_save, atomic_write_text
from .config import ConfigError, TrainConfig
from .device_dataset import DeviceDataset
from .evaluate import evaluate
from .models import create_model, unwrap
from .runs import CheckpointError, RunDir, read_torch_file
from .saving import model_from_record, model_record

__all__ = ["pretrained", "list_pretrained", "publish", "initial_model", "BASELINES"]

BASELINES = Path(__file__).resolve().parent / "baselines"


def list_pretrained() -> dict[str, dict[str, Any]]:
    """The manifest: baseline name -> model, dataset, test accuracy, sha256, command, metrics."""
    path = BASELINES / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def pretrained(name: str) -> nn.Module:
    """The shipped baseline ``name`` (fp32, eval mode) after checking its file against the manifest's sha256."""
    manifest = list_pretrained()
    if name not in manifest:
        raise ConfigError(f"no trained baseline named {name!r}; available: {', '.join(manifest) or 'none'} "
                         "(or train one: polar train --reg none ...)")
    entry = manifest[name]
    path = BASELINES / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; reinstall Polar or run git checkout -- {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise CheckpointError(f"{path} does not match its manifest checksum (sha256 {digest[:12]}…, expected "
                              f"{entry['sha256'][:12]}…); reinstall Polar or run git checkout -- {path}")
    return _fp32_model(path)


def _fp32_model(path: Path) -> nn.Module:
    """A stored fp16 baseline as an fp32 model in eval mode."""
    record = read_torch_file(path)
    record["state_dict"] = {k: v.float() if v.is_floating_point() else v for k, v in record["state_dict"].items()}
    return model_from_record(record).eval()


def publish(run_dir: str | Path, name: str, command: str, data: DeviceDataset) -> dict[str, Any]:
    """Store the last checkpoint of ``run_dir`` as baseline ``name`` (fp16 weights) and record it in the manifest,
    with its test accuracy measured by ``polar.evaluate`` on ``data`` after the fp16 round trip (what users get)."""
    run = RunDir(run_dir)
    config = run.read_config()
    record = model_record(model_from_record(run.load_checkpoint()))
    record["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in record["state_dict"].items()}
    file = f"{name}_{config['dataset']}.pt"
    atomic_save(record, BASELINES / file)
    entry = {"file": file, "model": record["model"], "dataset": config["dataset"], "dataset_source": data.source,
             "test_images": len(data.test_y), "test_acc": evaluate(_fp32_model(BASELINES / file), data)[1],
             "sha256": hashlib.sha256((BASELINES / file).read_bytes()).hexdigest(), "command": command,
             "config": config, "metrics": run.read_metrics()}
    manifest = {**list_pretrained(), name: entry}
    atomic_write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n", BASELINES / "manifest.json")
    return entry


def initial_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """Fresh weights from the seed (so polar/L1/none runs share them), the weights in the file ``cfg.init``, or
    with ``init="pretrained"`` the trained baseline Polar ships for ``cfg.model`` (``polar.pretrained``)."""
    if cfg.init == "pretrained":
        model = pretrained(cfg.model).train()
        if model.num_classes != num_classes:
            raise ConfigError(f"the pretrained {cfg.model} has {model.num_classes} classes but {cfg.dataset} has "
                              f"{num_classes}; use --init '' (fresh weights) for this dataset")
        return model
    if cfg.init:
        model = model_from_record(read_torch_file(cfg.init))
        if unwrap(model).num_classes != num_classes:
            raise ConfigError(f"{cfg.init} has {unwrap(model).num_classes} classes but {cfg.dataset} has {num_classes}")
        return model
    torch.manual_seed(cfg.seed)
    return create_model(cfg.model, num_classes=num_classes)
