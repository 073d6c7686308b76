"""Data: batched augmentation equals the per-image definition; sources, caching, subsets and error messages."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import polar
from polar.atomic import atomic_save
from polar.device_dataset import PAD, DatasetError, random_crop, random_flip


def test_random_crop_matches_per_image_crops() -> None:
    x = torch.randn(16, 3, 32 + 2 * PAD, 32 + 2 * PAD)
    gen = torch.Generator().manual_seed(5)
    out = random_crop(x, PAD, gen)
    gen = torch.Generator().manual_seed(5)
    dy = torch.randint(0, 2 * PAD + 1, (16, 1), generator=gen)
    dx = torch.randint(0, 2 * PAD + 1, (16, 1), generator=gen)
    for i in range(16):
        a, b = int(dy[i]), int(dx[i])
        torch.testing.assert_close(out[i], x[i, :, a:a + 32, b:b + 32])
    assert len({(int(a), int(b)) for a, b in zip(dy, dx)}) > 4  # the offsets really vary


def test_random_flip_flips_about_half() -> None:
    x = torch.arange(2000 * 4, dtype=torch.float32).view(2000, 1, 1, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).all(dim=(1, 2, 3))
    assert ((out == x).all(dim=(1, 2, 3)) | flipped).all()
    assert 0.45 < flipped.float().mean() < 0.55


def test_device_dataset_normalises_and_pads_once(synthetic: polar.DeviceDataset) -> None:
    assert synthetic.train_x.shape[-1] == 32 + 2 * PAD and synthetic.test_x.shape[-1] == 32
    inner = synthetic.train_x[:, :, PAD:-PAD, PAD:-PAD]
    assert inner.mean(dim=(0, 2, 3)).abs().max() < 1e-3  # normalised with the split's own statistics
    assert (inner.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    border = synthetic.train_x[:, :, 0, 0]  # the zero (black) padding, in normalised units
    torch.testing.assert_close(border, (-synthetic.mean / synthetic.std).view(1, 3).expand_as(border))


def test_train_batches_replay_with_the_same_seed_and_shard_by_rank(synthetic: polar.DeviceDataset) -> None:
    a = list(synthetic.train_batches(50, seed=7))
    b = list(synthetic.train_batches(50, seed=7))
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert len(a) == synthetic.num_train // 50
    r0 = torch.cat([y for _, y in synthetic.train_batches(10, seed=1, rank=0, world_size=2, augment=False)])
    r1 = torch.cat([y for _, y in synthetic.train_batches(10, seed=1, rank=1, world_size=2, augment=False)])
    assert len(r0) == len(r1) == synthetic.num_train // 2


def test_synthetic_is_deterministic_and_balanced() -> None:
    a, b = polar.datasets.synthetic_images(seed=1), polar.datasets.synthetic_images(seed=1)
    assert torch.equal(a.train_x, b.train_x) and a.train_x.dtype == torch.uint8
    assert torch.bincount(a.train_y).tolist() == [200] * 10


def test_subset_is_balanced_first_n_per_class() -> None:
    images = polar.datasets.synthetic_images()
    sub = images.subset(7)
    assert torch.bincount(sub.train_y).tolist() == [7] * 10
    first = torch.nonzero(images.train_y == 3).flatten()[:7]
    assert torch.equal(sub.train_x[sub.train_y == 3], images.train_x[first])
    with pytest.raises(ValueError, match="positive"):
        images.subset(0)


def _write_folder(root: Path, classes: list[str], per_class: int, size: int = 8) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")


def test_imagefolder_decodes_and_caches(tmp_path: Path) -> None:
    _write_folder(tmp_path / "mine", ["cats", "dogs", "owls"], per_class=4)
    images = polar.load_images("imagefolder", data_dir=tmp_path / "cache", path=tmp_path / "mine")
    assert images.train_x.shape == (12, 3, 8, 8) and images.classes == ["cats", "dogs", "owls"]
    pixel = np.array(Image.open(tmp_path / "mine" / "train" / "dogs" / "2.png"))
    idx = 4 + 2  # ImageFolder order: class-major, file names sorted
    assert torch.equal(images.train_x[idx], torch.from_numpy(pixel).permute(2, 0, 1))
    assert list((tmp_path / "cache").glob("imagefolder_*_uint8.pt"))
    again = polar.load_images("imagefolder", data_dir=tmp_path / "cache", path=tmp_path / "mine")
    assert torch.equal(again.train_x, images.train_x)
    # the cache stores the training split's statistics with the pixels (they cost ~1 s to compute for CIFAR-10)
    x = images.train_x.float()
    expected = (x.mean(dim=(0, 2, 3)).view(1, -1, 1, 1) / 255, x.std(dim=(0, 2, 3)).view(1, -1, 1, 1) / 255)
    for got in (images.train_stats, again.train_stats):
        assert got is not None and all(torch.equal(a, b) for a, b in zip(got, expected))
    cache = next((tmp_path / "cache").glob("imagefolder_*_uint8.pt"))
    # a cache written before statistics were stored (atomically, as Polar writes: the loaded tensors map the file)
    atomic_save({**vars(again), "train_stats": None}, cache)
    upgraded = polar.load_images("imagefolder", data_dir=tmp_path / "cache", path=tmp_path / "mine")
    assert all(torch.equal(a, b) for a, b in zip(upgraded.train_stats, expected))
    assert torch.load(cache, weights_only=True)["train_stats"] is not None  # stored for the next load


def test_missing_cifar_offline_gives_one_line_instruction(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        polar.load_images("cifar10", data_dir=tmp_path, download=False)
    message = str(err.value)
    assert "\n" not in message and "cifar-10-python.tar.gz" in message and "train/<class>/" in message


def test_offline_download_fails_at_once_with_the_same_instruction(tmp_path: Path, monkeypatch) -> None:
    """With the network refused, load_images says so in well under a second (it asks before importing torchvision's
    datasets, which alone take ~1.3 s), with the same one-line instruction."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a closed port: every request is refused
    t0 = time.perf_counter()
    with pytest.raises(DatasetError) as err:
        polar.load_images("cifar100", data_dir=tmp_path, download=True)
    assert time.perf_counter() - t0 < 1.0
    message = str(err.value)
    assert "could not be downloaded (URLError)" in message and "cifar-100-python.tar.gz" in message
    assert "\n" not in message and not list(tmp_path.rglob("*.tar.gz"))


def test_unknown_dataset_and_bad_folder() -> None:
    with pytest.raises(DatasetError, match="choose one of"):
        polar.load_images("mnist")
    with pytest.raises(DatasetError, match="train/ and test/"):
        polar.load_images("imagefolder", path="/nonexistent")


def test_real_cifar10_split_sizes_and_balance(cifar10_images: polar.ImageTensors) -> None:
    assert cifar10_images.train_x.shape == (50_000, 3, 32, 32)
    assert cifar10_images.test_x.shape == (10_000, 3, 32, 32)
    assert cifar10_images.classes[:3] == ["airplane", "automobile", "bird"] and len(cifar10_images.classes) == 10
    assert torch.bincount(cifar10_images.train_y).tolist() == [5000] * 10
    assert torch.bincount(cifar10_images.test_y).tolist() == [1000] * 10
    x = cifar10_images.train_x
    mean = x.sum(dim=(0, 2, 3), dtype=torch.float64) / (x.numel() / 3) / 255
    # the real CIFAR-10 training statistics (the JPEG copy agrees to about 1e-4)
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64), atol=2e-3)
