"""What this machine is — its CPU's model name and instruction-set flags, its memory — read from Linux's /proc.

Several choices depend on them (bf16 autocast only where the CPU computes bf16 natively, the channel block latency
tables are measured on, the cache key of a latency table, how many paused trainers the explorer keeps), and each
must fall back sensibly where /proc is absent (macOS, Windows): these return empty values there, never raise.
"""
from __future__ import annotations

import collections
import functools
import os
import time
from pathlib import Path

__all__ = ["cpu_model", "cpu_flags", "memory_gib", "OthersLoad"]


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


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``: everything but idle and iowait)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK


def _tree_seconds(root: int) -> float:
    """CPU seconds of process ``root`` and its children (one level: the explorer's trainers are direct children)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone between the listing and the read
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root or ppid == root:
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return total


class OthersLoad:
    """How many cores other programs have kept busy over the last ``window_s`` seconds: the machine's busy time
    minus this process's and its children's, sampled by ``sample()`` (about once a second) and reported as the
    *least* over the window, so a sustained load counts and a burst does not.

    Why: a task's OpenMP threads wait for each other at every barrier, so one thread sharing a core with a
    CPU-bound program at normal priority stalls them all (a ResNet-20 latency table, niced, beside one busy loop on
    two cores: 16 s on one thread, over 300 s on two). Zero where ``/proc`` is absent."""

    def __init__(self, window_s: float = 3.0, root: int | None = None) -> None:
        self.window_s, self.root = window_s, root or os.getpid()
        self._last: tuple[float, float, float] | None = None
        self._recent: collections.deque[tuple[float, float]] = collections.deque()

    def sample(self) -> None:
        """Note the load since the last sample (at most every half second: shorter gaps read few clock ticks)."""
        if self._last is not None and time.monotonic() - self._last[0] < 0.5:
            return
        busy = _machine_busy_seconds()
        if busy is None:
            return
        now, ours = time.monotonic(), _tree_seconds(self.root)
        if self._last is not None and now > self._last[0]:
            others = max(0.0, (busy - self._last[1]) - (ours - self._last[2])) / (now - self._last[0])
            self._recent.append((now, others))
        self._last = (now, busy, ours)
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent.popleft()

    def cores(self) -> float:
        """The least of the window's samples (0 before two samples)."""
        return min((others for _, others in self._recent), default=0.0)
