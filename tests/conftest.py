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


def polarize_randomly(model: torch.nn.Module, seed: int = 0, share_pruned: float = 0.5) -> torch.nn.Module:
    """Give every BN random running statistics and β, and the sparse γ a polarized random distribution (about
    ``share_pruned`` near 0, the rest in [0.3, 1]) — what a trained network looks like to pruning."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 1.5 + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
        for bn in polar.sparse_bns(model):
            low = torch.rand(bn.num_features, generator=gen) < share_pruned
            bn.weight.copy_(torch.where(low, torch.rand(bn.num_features, generator=gen) * 0.05,
                                        0.3 + 0.7 * torch.rand(bn.num_features, generator=gen)))
    return model.eval()


@pytest.fixture(scope="session")
def trained_polar(synthetic) -> torch.nn.Module:
    """ResNet-20 after 2 epochs of polarization on the synthetic set: γ split into a spike at exactly 0 and a mode
    (λ = 0.02; at 0.01 some γ were still on their way down after 2 epochs, at 0.05-0.2, and pruning them cost
    accuracy)."""
    cfg = polar.TrainConfig(model="resnet20", dataset="synthetic", epochs=2, batch_size=64, lr=0.1,
                            lr_schedule="cosine", weight_decay=5e-4, bn_wd=False, reg="polar", lam=0.02, t=1.2)
    torch.manual_seed(0)
    model = polar.create_model("resnet20")
    for _ in polar.train(cfg, model=model, data=synthetic):
        pass
    return model.eval()
