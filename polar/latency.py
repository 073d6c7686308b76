"""Is the pruned network faster where it will run? Latency of original vs pruned, in PyTorch and ONNX Runtime.

    table = polar.deployed_latency(model, small)   # runtime, batch, original and pruned ms, speed-up, MACs ratio

The two networks are timed in alternating rounds (medians), so load drift on the machine hits both alike; fewer
MACs need not mean less time (odd channel widths, memory-bound layers), which is why the MACs ratio stands beside
the measured speed-up.
"""
from __future__ import annotations

import copy
import ctypes
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .export import export_onnx
from .flops import cost

if TYPE_CHECKING:
    import pandas as pd  # imported where a table is built: ~0.4 s the explorer's first page does not need

__all__ = ["latency_ms", "paired_latency_ms", "deployed_latency", "steady_allocator"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit systems


def steady_allocator() -> bool:
    """Make glibc reuse freed memory instead of handing it back to the OS, for timing scripts.

    With glibc's defaults a large activation can be a fresh ``mmap``, page-faulted in again at every forward pass:
    on a 2-core VM that made a ResNet-56's batch-64 time swing between 42 and 84 ms from run to run, and the swing
    fell unevenly on the original and the pruned network (bench/prune_speedup.py). Deployed runtimes do not pay it
    (ONNX Runtime's arena, jemalloc or tcmalloc), so steady-state timing needs it gone. Process-wide and permanent
    (memory freed is kept for reuse): call it in a benchmark process, not in a long-lived server. Returns False
    where it cannot (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def latency_ms(run: Callable[[], object], repeats: int = 10, warmup: int = 3, min_sample_ms: float = 0.0) -> float:
    """Median wall time of ``run()`` in milliseconds, after ``warmup`` untimed calls.

    With ``min_sample_ms``, each of the ``repeats`` samples is the mean of as many calls as fill that time (judged
    from the warm-up): a network that runs in a millisecond, timed one call at a time, is timed mostly by the
    scheduler and its thread pool's wake-ups."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        run()
    per_call_ms = 1000 * (time.perf_counter() - t0) / max(warmup, 1)
    calls = max(1, math.ceil(min_sample_ms / per_call_ms)) if min_sample_ms > 0 and per_call_ms > 0 else 1
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            run()
        times.append((time.perf_counter() - t0) / calls)
    return 1000 * statistics.median(times)


def _torch_runner(model: nn.Module, batch: int, channels_last: bool) -> Callable[[], object]:
    model = copy.deepcopy(model).eval()  # the caller's model keeps its memory format
    x = torch.randn(batch, 3, model.input_size, model.input_size)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    def run() -> object:
        with torch.inference_mode():
            return model(x)
    return run


def paired_latency_ms(a: nn.Module, b: nn.Module, batch: int, repeats: int = 10, channels_last: bool = True,
                      rounds: int = 3) -> tuple[float, float]:
    """Median PyTorch latencies of two models timed in alternating rounds."""
    runs = (_torch_runner(a, batch, channels_last), _torch_runner(b, batch, channels_last))
    a_ms, b_ms = [], []
    for _ in range(rounds):
        a_ms.append(latency_ms(runs[0], repeats))
        b_ms.append(latency_ms(runs[1], repeats))
    return statistics.median(a_ms), statistics.median(b_ms)


def deployed_latency(original: nn.Module, pruned: nn.Module, batches: Sequence[int] = (1, 64), repeats: int = 5,
                     rounds: int = 3) -> pd.DataFrame:
    """Original vs pruned latency in PyTorch (channels_last, CPU) and in ONNX Runtime (CPU), at each batch size."""
    import onnxruntime as ort

    ratio = cost(original).macs / cost(pruned).macs
    rows = []
    for batch in batches:
        a, b = paired_latency_ms(original, pruned, batch, repeats, True, rounds)
        rows.append({"runtime": "PyTorch", "batch": batch, "original_ms": a, "pruned_ms": b})
    with tempfile.TemporaryDirectory() as folder:
        sessions = [ort.InferenceSession(str(export_onnx(m, Path(folder) / f"{i}.onnx")),
                                         providers=["CPUExecutionProvider"]) for i, m in enumerate((original, pruned))]
        for batch in batches:
            x = torch.randn(batch, 3, original.input_size, original.input_size).numpy()
            times: list[list[float]] = [[], []]
            for _ in range(rounds):
                for i, session in enumerate(sessions):
                    times[i].append(latency_ms(lambda s=session: s.run(["logits"], {"images": x}), repeats))
            rows.append({"runtime": "ONNX Runtime", "batch": batch, "original_ms": statistics.median(times[0]),
                         "pruned_ms": statistics.median(times[1])})
    import pandas as pd
    table = pd.DataFrame(rows)
    table["speedup"] = table["original_ms"] / table["pruned_ms"]
    table["macs_ratio"] = ratio
    return table
