"""What this machine is — its CPU's model name and instruction-set flags, its memory — read from Linux's /proc.

Several choices depend on them (bf16 autocast only where the CPU computes bf16 natively, the channel block latency
tables are measured on, the cache key of a latency table, how many paused trainers the explorer keeps), and each
must fall back sensibly where /proc is absent (macOS, Windows): these return empty values there, never raise.
"""
from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["cpu_model", "cpu_flags", "memory_gib"]


@functools.cache
def _fields(name: str) -> dict[str, str]:
    """The first value of each ``key : value`` line of ``/proc/<name>`` (the first CPU's, for cpuinfo)."""
    try:
        text = Path("/proc", name).read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str | None:
    """The CPU's model name (e.g. "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"), or None where unknown."""
    return _fields("cpuinfo").get("model name")


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (``avx512f``, ``avx512_bf16``, …); empty where unknown."""
    return frozenset(_fields("cpuinfo").get("flags", "").split())


def memory_gib() -> float | None:
    """The machine's total memory in GiB, or None where unknown."""
    total = _fields("meminfo").get("MemTotal", "")  # "24576000 kB"
    try:
        return int(total.split()[0]) / 2**20
    except (IndexError, ValueError):
        return None
