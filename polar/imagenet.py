"""ImageNet-scale data: too large to hold on the device, so it streams through ``ImageFolder`` + DataLoader workers
with torchvision's standard transforms. Same interface as :class:`polar.device_dataset.DeviceDataset`, so the training
loop does not care which one it gets.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from .device_dataset import DatasetError

__all__ = ["ImageNetData"]

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ImageNetData:
    """``root/train/<class>/`` and ``root/val/<class>/`` (or ``test/``) read by DataLoader workers."""

    def __init__(self, root: str | Path, device: torch.device | str = "cpu", workers: int = 8,
                 image_size: int = 224) -> None:
        from torchvision import datasets, transforms

        root = Path(root)
        val = root / "val" if (root / "val").is_dir() else root / "test"
        if not (root / "train").is_dir() or not val.is_dir():
            raise DatasetError(f"imagenet needs --data-path with train/<class>/ and val/<class>/ folders, got {root}")
        normalize = transforms.Normalize(MEAN, STD)
        self.train_set = datasets.ImageFolder(str(root / "train"), transforms.Compose([
            transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), normalize]))
        self.test_set = datasets.ImageFolder(str(val), transforms.Compose([
            transforms.Resize(int(image_size * 256 / 224)), transforms.CenterCrop(image_size),
            transforms.ToTensor(), normalize]))
        self.device, self.workers = torch.device(device), workers
        self.classes, self.source = self.train_set.classes, f"ImageNet folders in {root}"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_train(self) -> int:
        return len(self.train_set)

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return self.num_train // world_size // batch_size

    def _loader(self, dataset, batch_size: int, seed: int, rank: int, world_size: int, train: bool) -> DataLoader:
        sampler = DistributedSampler(dataset, world_size, rank, shuffle=train, seed=seed, drop_last=train)
        sampler.set_epoch(0)
        return DataLoader(dataset, batch_size, sampler=sampler, num_workers=self.workers, drop_last=train,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def train_batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                      augment: bool = True) -> Iterator[tuple[Tensor, Tensor]]:
        yield from self._loader(self.train_set, batch_size, seed, rank, world_size, train=True)

    def test_batches(self, batch_size: int = 256, rank: int = 0,
                     world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        yield from self._loader(self.test_set, min(batch_size, 256), 0, rank, world_size, train=False)
