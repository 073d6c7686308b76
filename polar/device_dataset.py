"""Small-image datasets held on the training device, with batched augmentation there; and the names of the datasets
Polar loads (``polar.datasets`` loads them), with the error they raise.

Decoding and augmenting one PIL image at a time caps a 2-core CPU at ~430 img/s for ResNet-20; keeping the whole
split on the device as one tensor and cropping/flipping whole batches with tensor ops removes that work from the
hot loop (airbench's approach). Images are normalised and zero-padded once, at load time.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError, DatasetError

__all__ = ["ImageTensors", "DeviceDataset", "PAD", "DATASETS", "DatasetError"]

DATASETS = ("cifar10", "cifar100", "imagefolder", "synthetic", "imagenet")  # what TrainConfig.dataset may name



PAD = 4  # pixels of zero padding for the random crop, as torchvision's RandomCrop(32, padding=4)


@dataclass
class ImageTensors:
    """A decoded dataset: uint8 images (N, 3, H, W) and int64 labels for both splits."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    source: str  # where the pixels came from, for reports (e.g. "CIFAR-10 (JPEG copy)")
    train_stats: tuple[Tensor, Tensor] | None = None  # a subset's: its full split's mean and std (see stats())

    def subset(self, per_class: int | None, test_per_class: int | None = None) -> ImageTensors:
        """A balanced subset: the first ``per_class`` training images of each class, and the first
        ``test_per_class`` test images of each class (all of a split when None). The subset keeps the full
        training split's statistics, so it is normalised exactly as the full data (and as a model trained on it)."""
        for name, n in (("subset", per_class), ("test subset", test_per_class)):
            if n is not None and n <= 0:
                raise ConfigError(f"{name} must be a positive number of images per class, got {n}")
        train = _first_per_class(self.train_y, per_class, len(self.classes)) if per_class else None
        test = _first_per_class(self.test_y, test_per_class, len(self.classes)) if test_per_class else None
        return ImageTensors(self.train_x if train is None else self.train_x[train],
                            self.train_y if train is None else self.train_y[train],
                            self.test_x if test is None else self.test_x[test],
                            self.test_y if test is None else self.test_y[test], self.classes, self.source,
                            self.stats())

    def stats(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and std of the training images in [0, 1], shape (1, 3, 1, 1) each."""
        if self.train_stats is not None:
            return self.train_stats
        x = self.train_x.float()
        return x.mean(dim=(0, 2, 3)).view(1, -1, 1, 1) / 255, x.std(dim=(0, 2, 3)).view(1, -1, 1, 1) / 255


def _first_per_class(labels: Tensor, n: int, num_classes: int) -> Tensor:
    return torch.cat([torch.nonzero(labels == c).flatten()[:n] for c in range(num_classes)]).sort().values


class DeviceDataset:
    """Both splits on one device, normalised once; yields augmented training batches and plain test batches."""

    def __init__(self, images: ImageTensors, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.classes, self.source = images.classes, images.source
        train = images.train_x.to(self.device)
        # per-channel statistics of the (full) training split, so user data is normalised correctly too
        self.mean, self.std = (s.to(self.device) for s in images.stats())
        padded = F.pad(train, (PAD, PAD, PAD, PAD))  # zeros = black pixels, as RandomCrop's padding
        self.train_x = self._normalise(padded, dtype)  # (N, 3, H+8, W+8)
        self.train_y = images.train_y.to(self.device)
        self.test_x = self._normalise(images.test_x.to(self.device), dtype)  # (M, 3, H, W)
        self.test_y = images.test_y.to(self.device)

    def _normalise(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        return ((x.float() / 255 - self.mean) / self.std).to(dtype)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return self.num_train // world_size // batch_size

    def train_batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                      augment: bool = True) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of shuffled, augmented batches (drop_last); each rank gets its own shard of the order.

        ``seed`` fixes the order and the augmentation, so an epoch replays identically after a resume.
        """
        gen = torch.Generator(device=self.device).manual_seed(seed)
        order = torch.randperm(self.num_train, device=self.device, generator=gen)
        order = order[rank::world_size]
        aug_gen = torch.Generator(device=self.device).manual_seed(seed * 1_000_003 + rank)
        for i in range(len(order) // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = self.train_x[idx]
            x = random_crop(x, PAD, aug_gen) if augment else x[:, :, PAD:-PAD, PAD:-PAD]
            if augment:
                x = random_flip(x, aug_gen)
            yield x, self.train_y[idx]

    def test_batches(self, batch_size: int = 1000, rank: int = 0,
                     world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """The test split in large chunks (each rank its own contiguous share)."""
        n = len(self.test_y)
        lo, hi = n * rank // world_size, n * (rank + 1) // world_size
        for i in range(lo, hi, batch_size):
            j = min(i + batch_size, hi)
            yield self.test_x[i:j], self.test_y[i:j]


def random_crop(padded: Tensor, pad: int, gen: torch.Generator) -> Tensor:
    """Crop each image of a padded batch at its own random offset in [0, 2·pad], in one gather."""
    n, c, hp, wp = padded.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    dev = padded.device
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=gen)
    rows = (dy + torch.arange(h, device=dev)).view(n, 1, h, 1)  # (N, 1, H, 1)
    cols = (dx + torch.arange(w, device=dev)).view(n, 1, 1, w)  # (N, 1, 1, W)
    batch = torch.arange(n, device=dev).view(n, 1, 1, 1)
    chan = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[batch, chan, rows, cols]  # (N, C, H, W)


def random_flip(x: Tensor, gen: torch.Generator) -> Tensor:
    """Mirror a random half of the batch horizontally."""
    flip = torch.rand(len(x), 1, 1, 1, device=x.device, generator=gen) < 0.5
    return torch.where(flip, x.flip(-1), x)
