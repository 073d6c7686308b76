"""Where training runs: device choice, bf16 autocast, and the torchrun process group.

bf16 autocast is used on CUDA and on CPUs with native bf16 instructions (AVX512-BF16 or AMX): on such a 2-core CPU
a ResNet-20 training step ran ~1.7x faster than fp32. Without them oneDNN emulates bf16 and it is slower than
fp32, so those CPUs train in fp32. Master weights, the regularizer and the γ clamp always stay fp32.
"""
from __future__ import annotations

import functools
import os
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.distributed as dist

from .config import ConfigError
from .machine import cpu_flags

__all__ = ["resolve_device", "cpu_has_native_bf16", "uses_bf16", "autocast", "rank_world", "init_distributed",
           "synchronize"]


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else must name an available device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available; use --device cpu")
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag), so autocast pays.

    Read from /proc/cpuinfo: torch reports whether oneDNN *can* run bf16, which includes slow emulation.
    ``POLAR_CPU_BF16=0`` or ``=1`` overrides the detection (e.g. to compare both on one machine)."""
    forced = os.environ.get("POLAR_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())  # unknown (not Linux): stay on fp32


def uses_bf16(device: torch.device, amp: bool) -> bool:
    """Whether training with ``amp`` on ``device`` runs under bf16 autocast."""
    return amp and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()))


def autocast(device: torch.device, amp: bool) -> AbstractContextManager:
    """bf16 autocast where it is fast (see :func:`uses_bf16`); otherwise nothing (fp32)."""
    if uses_bf16(device, amp):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def rank_world() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device_spec: str) -> torch.device:
    """Join the torchrun process group when launched by torchrun; return this process's device."""
    device = resolve_device(device_spec)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def finish_distributed() -> None:
    """Leave the torchrun process group, if this process joined one: wait for every rank (a barrier), then destroy it.

    Gloo's worker threads can still hold pending work when one rank exits early; left to interpreter shutdown, that
    can abort the process (SIGABRT, "terminate called without an active exception", seen once in CI).
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (for honest timings); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
