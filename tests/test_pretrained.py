"""The shipped baselines: listed in a manifest, checksum-verified, usable as a training start."""
from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch

import polar

shipped = importlib.import_module("polar.pretrained")  # the module (polar.pretrained is also the function)


def test_the_manifest_describes_each_baseline() -> None:
    manifest = polar.list_pretrained()
    assert "resnet20" in manifest
    entry = manifest["resnet20"]
    assert entry["model"] == "resnet20" and entry["dataset"] == "cifar10"
    assert 0.85 < entry["test_acc"] <= 1  # 88.07 % measured when published
    assert entry["command"].startswith("polar train") and len(entry["metrics"]) == entry["config"]["epochs"]
    assert (shipped.BASELINES / entry["file"]).stat().st_size < 2_000_000  # fp16: small enough to ship


def test_pretrained_loads_in_fp32_and_starts_a_training() -> None:
    model = polar.pretrained("resnet20")
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    cfg = polar.TrainConfig(model="resnet20", dataset="synthetic", init="pretrained")
    start = polar.initial_model(cfg, num_classes=10)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), start.state_dict().values()))
    with pytest.raises(polar.ConfigError, match="10 classes but cifar100 has 100"):
        polar.initial_model(polar.TrainConfig(model="resnet20", dataset="cifar100", init="pretrained"), 100)


def test_unknown_and_tampered_baselines_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="available: .*resnet20"):
        polar.pretrained("resnet21")
    copy = tmp_path / "baselines"
    shutil.copytree(shipped.BASELINES, copy)
    monkeypatch.setattr(shipped, "BASELINES", copy)
    file = copy / json.loads((copy / "manifest.json").read_text())["resnet20"]["file"]
    data = bytearray(file.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte
    file.write_bytes(bytes(data))
    with pytest.raises(polar.CheckpointError, match="checksum"):
        polar.pretrained("resnet20")
