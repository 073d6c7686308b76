"""Atomic file writes: a crash or Ctrl-C mid-write never leaves a truncated checkpoint, cache or CSV behind.

Each write goes to ``.NAME.PID.RANDOM.tmp`` beside its target and is renamed over it. A write killed outright
(kill -9) cannot remove its temporary file; the writer's pid in the name lets :func:`remove_stale_temporaries`
tell such leftovers from a write still in progress."""
from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (by any means: a library that wants a file name); renamed over
    ``path`` when the block ends, removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write(path: Path, write: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write text to a temporary file in the same folder, then rename over ``path``."""
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def atomic_write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write dict rows (the first row's keys are the columns) as CSV, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(buf.getvalue(), path)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(folder: str | Path, targets: str = r".+") -> list[Path]:
    """Delete ``folder``'s temporary files of writes to files named like ``targets`` (a regular expression) whose
    writer no longer runs — ``.NAME.PID.RANDOM.tmp`` — and those of the older ``.NAME.RANDOM.tmp`` form, which named
    no writer; returns what was removed."""
    removed = []
    for path in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else ():
        parts = re.fullmatch(rf"\.({targets})\.(?:(\d+)\.)?[^.]+\.tmp", path.name)
        if parts and (parts.group(2) is None or not _process_exists(int(parts.group(2)))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
