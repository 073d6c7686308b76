"""Test accuracy: the one evaluation every part of Polar reports (training epochs, pruning tables, baselines)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .device import autocast, rank_world
from .device_dataset import DeviceDataset

__all__ = ["evaluate", "to_input"]


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceDataset, batch_size: int | None = None,
             channels_last: bool | None = None, amp: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the test split (summed over ranks when distributed).

    In fp32 unless ``amp``; ``channels_last`` (default: on a CPU or GPU) only changes the memory layout. The batch
    (default: 64 on a CPU, 256 elsewhere) only changes the speed: with glibc's defaults a large batch's activations
    (16 MB for a ResNet's first stage at 256) are handed back to the system after each pass and page-faulted in
    again at the next; a small batch's stay in the heap glibc reuses. On the 2-core CPU (``bench/eval_batch.py``,
    1,000 test images, two threads) batch 64 evaluates a ResNet-20 in 0.48 s and a ResNet-56 in 1.39 s, 1.49x and
    1.44x faster than batch 256; under ``polar.steady_allocator`` (nothing handed back) every batch from 64 up
    takes what 64 does."""
    was_training = model.training
    model.eval()
    rank, world = rank_world()
    device = data.device
    if batch_size is None:
        batch_size = 64 if device.type == "cpu" else 256
    if channels_last is None:
        channels_last = device.type in ("cpu", "cuda")
    total = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, count
    for x, y in data.test_batches(batch_size, rank, world):
        x, y = to_input(x, y, device, channels_last)
        with autocast(device, amp):
            logits = model(x)
        total += torch.stack([F.cross_entropy(logits.float(), y, reduction="sum").double(),
                              (logits.argmax(1) == y).sum().double(), torch.tensor(len(y), device=device).double()])
    if world > 1:
        dist.all_reduce(total)
    model.train(was_training)
    loss, correct, count = total.tolist()  # CPU-GPU sync, once per evaluation
    return loss / max(count, 1), correct / max(count, 1)


def to_input(x: Tensor, y: Tensor, device: torch.device, channels_last: bool) -> tuple[Tensor, Tensor]:
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)
