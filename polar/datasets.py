"""Where images come from: CIFAR-10/100 (torchvision), image folders, a synthetic set; decoded once and cached.

Every source ends as :class:`polar.device_dataset.ImageTensors` (uint8), cached as one ``.pt`` file under the data
folder, so later runs skip decoding. ImageNet is the exception: too large to hold, it streams through DataLoader
workers.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_save
from .config import TrainConfig
from .device_dataset import DATASETS, DatasetError, DeviceDataset, ImageTensors
from .imagenet import ImageNetData

__all__ = ["load_images", "load_dataset", "load_training_data", "synthetic_images",
           "default_data_dir"]

def default_data_dir() -> Path:
    """``$POLAR_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("POLAR_DATA", "data"))


# ---------------------------------------------------------------- CIFAR

# The official archives, as torchvision's CIFAR classes name and fetch them.
ARCHIVES = {"cifar10": ("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
            "cifar100": ("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")}


def _unreachable(url: str, timeout: float = 3.0) -> OSError | None:
    """Why ``url`` cannot be fetched now (None when it can): asked before importing torchvision's datasets, which
    alone takes ~1.3 s — offline, the explorer falls back to synthetic data that much sooner."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except OSError as err:  # URLError, a refused or timed-out connection
        return err
    return None


def _cifar(name: str, root: Path, download: bool) -> ImageTensors:
    """CIFAR-10/100: the official archive via torchvision, else ``<root>/<name>/{train,test}/<class>/`` folders."""
    folder = root / name
    filename, url = ARCHIVES[name]
    extracted = folder / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    has_files = (folder / filename).is_file() or extracted.is_dir() or (folder / "train").is_dir()
    offline = _unreachable(url) if download and not has_files else None
    if offline is not None:
        raise DatasetError(
            f"{name} not found in {folder} and could not be downloaded ({type(offline).__name__}); place the official "
            f"archive ({filename}) in {folder}/ or images in {folder}/train/<class>/ and {folder}/test/<class>/")
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    if (folder / "train").is_dir() and (folder / "test").is_dir() and not _has_official(cls, folder):
        images = _decode_folders(folder)
        sample = next((folder / "test").rglob("*.*"), None)
        kind = "JPEG copy" if sample is not None and sample.suffix.lower() in (".jpg", ".jpeg") else "image folders"
        images.source = f"{_pretty(name)} ({kind} in {folder})"
        return images
    try:
        train = cls(str(folder), train=True, download=download)
        test = cls(str(folder), train=False, download=download)
    except (RuntimeError, OSError) as err:  # missing archive offline: URLError is an OSError
        raise DatasetError(
            f"{name} not found in {folder} and could not be downloaded ({type(err).__name__}); place the official "
            f"archive ({cls.filename}) in {folder}/ or images in {folder}/train/<class>/ and {folder}/test/<class>/"
        ) from None
    return ImageTensors(
        torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(train.targets),
        torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(test.targets),
        list(train.classes), f"{_pretty(name)} (official, checksum-verified)")


def _pretty(name: str) -> str:
    return name.upper().replace("CIFAR", "CIFAR-")


def _has_official(cls: type, folder: Path) -> bool:
    return (folder / cls.base_folder).is_dir()


# ---------------------------------------------------------------- image folders

def _decode_split(split: Path, classes: list[str] | None = None,
                  size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from torchvision.datasets import ImageFolder

    listing = ImageFolder(str(split))
    if classes is not None and listing.classes != classes:
        raise DatasetError(f"{split} has classes {listing.classes}, expected the training classes {classes}")
    if not listing.samples:
        raise DatasetError(f"{split} has no images; put them in {split}/<class>/")

    def decode(path: str) -> np.ndarray:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        arrays = list(pool.map(decode, (p for p, _ in listing.samples), chunksize=256))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DatasetError(f"images in {split} differ in size ({sorted(shapes)[:3]}...); pass an image size")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
    return x, torch.tensor(listing.targets), listing.classes


def _decode_folders(folder: Path, size: int | None = None) -> ImageTensors:
    for split in ("train", "test"):
        if not (folder / split).is_dir():
            raise DatasetError(f"{folder} needs train/<class>/ and test/<class>/ subfolders of images")
    train_x, train_y, classes = _decode_split(folder / "train", size=size)
    test_x, test_y, _ = _decode_split(folder / "test", classes, size=size if size else train_x.shape[-1])
    return ImageTensors(train_x, train_y, test_x, test_y, classes, f"image folders in {folder}")


# ---------------------------------------------------------------- synthetic

def synthetic_images(num_classes: int = 10, per_class: int = 200, test_per_class: int = 50, size: int = 32,
                     seed: int = 0) -> ImageTensors:
    """A small learnable dataset: each class is a fixed smooth colour pattern, each image a shifted, noisy copy.

    For unit tests and offline demos: it needs no files, is deterministic in ``seed``, and a small CNN learns it in
    an epoch or two while still having to generalise over shifts and noise.
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=gen)
    templates = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(num_classes).repeat_interleave(n)
        shift = torch.randint(-3, 4, (len(y), 2), generator=gen)
        x = torch.stack([templates[c].roll((int(s[0]), int(s[1])), dims=(1, 2)) for c, s in zip(y, shift)])
        x = x * (0.6 + 0.8 * torch.rand(len(y), 1, 1, 1, generator=gen))  # brightness
        x = x + 0.25 * torch.randn(x.shape, generator=gen)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train_x, train_y = draw(per_class)
    test_x, test_y = draw(test_per_class)
    return ImageTensors(train_x, train_y, test_x, test_y, [f"pattern{c}" for c in range(num_classes)],
                        f"synthetic ({num_classes} classes, seed {seed})")


# ---------------------------------------------------------------- entry points

def _cache_path(name: str, root: Path, path: Path | None) -> Path:
    if name == "imagefolder":
        if path is None:
            raise DatasetError("the imagefolder dataset needs its folder: pass --data-path (train/ and test/ inside)")
        key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
        return root / f"imagefolder_{key}_uint8.pt"
    return root / name / f"{name}_uint8.pt"


def load_images(name: str, data_dir: str | Path | None = None, path: str | Path | None = None,
                download: bool = True) -> ImageTensors:
    """Decoded uint8 images of a small-image dataset, from the cache under ``data_dir`` when present.

    Args:
        name: ``cifar10``, ``cifar100``, ``imagefolder`` (needs ``path``) or ``synthetic``.
        data_dir: the data folder (default ``$POLAR_DATA`` or ``./data``).
        path: for ``imagefolder``, a folder with ``train/<class>/`` and ``test/<class>/`` subfolders.
        download: allow torchvision to download CIFAR when it is absent.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if name == "synthetic":
        return synthetic_images()
    if name not in ("cifar10", "cifar100", "imagefolder"):
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if name == "imagefolder":
        if path is None or not Path(path).is_dir():
            raise DatasetError(f"imagefolder needs --data-path pointing at a folder with train/ and test/, got {path}")
        path = Path(path)
    cache = _cache_path(name, root, path)
    if cache.exists():
        try:  # memory-mapped: a subset reads only its own images' pages
            images = ImageTensors(**torch.load(cache, weights_only=True, mmap=True))
        except Exception:  # a stale or truncated cache is rebuilt, not fatal
            cache.unlink()
        else:
            if images.train_stats is None:  # a cache from before the statistics were stored: add them once
                images.train_stats = images.stats()
                atomic_save(vars(images), cache)
            return images
    images = _decode_folders(path) if name == "imagefolder" else _cifar(name, root, download)  # type: ignore[arg-type]
    images.train_stats = images.stats()  # stored with the pixels: computing them takes ~1 s on 2 cores
    atomic_save(vars(images), cache)
    return images


def load_dataset(name: str, device: torch.device | str = "cpu", subset: int | None = None,
                 data_dir: str | Path | None = None, path: str | Path | None = None,
                 download: bool = True, test_subset: int | None = None) -> DeviceDataset:
    """A small-image dataset resident on ``device``, optionally a balanced subset of ``subset`` training (and
    ``test_subset`` test) images per class."""
    images = load_images(name, data_dir, path, download)
    if subset or test_subset:
        images = images.subset(subset or None, test_subset or None)
    return DeviceDataset(images, device)


def load_training_data(cfg: TrainConfig, device: torch.device | str = "cpu") -> DeviceDataset:
    """The dataset ``cfg`` names, on ``device`` (small images resident there; ImageNet streamed)."""
    if cfg.dataset == "imagenet":
        return ImageNetData(cfg.data_path, device, workers=cfg.workers)  # type: ignore[return-value]
    return load_dataset(cfg.dataset, device, subset=cfg.subset or None, data_dir=cfg.data_dir,
                        path=cfg.data_path or None)
