"""Shared fixtures: the synthetic dataset (session-wide) and the real CIFAR-10 copy when it is present."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import polar

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "data"
CIFAR10_DIR = DATA_DIR / "cifar10"


def cifar10_present() -> bool:
    return (CIFAR10_DIR / "train").is_dir() or (CIFAR10_DIR / "cifar-10-batches-py").is_dir()


requires_cifar10 = pytest.mark.skipif(
    not cifar10_present(),
    reason="real CIFAR-10 is not in data/cifar10 (.ci/run extracts ../shared/datasets/cifar10-jpeg.tar.gz there; "
           "online, python -m polar train --dataset cifar10 downloads it)")


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def synthetic() -> polar.DeviceDataset:
    return polar.load_dataset("synthetic")


@pytest.fixture(scope="session")
def cifar10_images() -> polar.ImageTensors:
    if not cifar10_present():
        pytest.skip(requires_cifar10.kwargs["reason"])
    return polar.load_images("cifar10", data_dir=DATA_DIR, download=False)
