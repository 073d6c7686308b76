"""The paper's Figure 3: how t and λ move the FLOPs a valley threshold removes and the accuracy pruning costs.

    for row in polar.tl_grid(base_cfg, lams=[0.005, 0.01, 0.02], ts=[1.0, 1.2, 1.4], data=data,
                             start=polar.pretrained("resnet20"), cache="runs/grid"):
        ...   # one dict per (λ, t, seed) as it finishes

Each point sparse-trains a copy of one start under polarization at (λ, t), prunes it at its own valley (Polar's
robust rule) and measures the test accuracy before and after pruning (no fine-tuning). Points are cached as JSON
the moment they finish: an interrupted grid resumes, a rerun skips what is done, and a reader (the explorer's
sweep page) can draw the points that exist while the rest train.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from .atomic import atomic_write_text
from .compare import prune_at_valley
from .config import TrainConfig, check_distinct, check_range
from .device_dataset import DeviceDataset
from .evaluate import evaluate
from .train import train

if TYPE_CHECKING:
    import pandas as pd  # imported where a table is built: ~0.4 s the explorer's first page does not need

__all__ = ["tl_grid", "grid_point", "read_grid", "grid_summary", "GRID_COLUMNS"]

GRID_COLUMNS = ["lam", "t", "seed", "acc_start", "acc_unpruned", "threshold", "flops_reduction", "acc_pruned",
                "acc_drop"]


def point_name(lam: float, t: float, seed: int) -> str:
    return f"lam{lam:g}_t{t:g}_seed{seed}.json"


def grid_point(cfg: TrainConfig, data: DeviceDataset, start: nn.Module, acc_start: float | None = None) -> dict:
    """One point: ``cfg`` (polarization at its λ and t) from a copy of ``start``, pruned at its valley.

    Without a valley (γ not polarized yet) nothing is pruned: FLOPs reduction 0, and the row says so (threshold
    None) rather than dropping the point.
    """
    model = copy.deepcopy(start)
    for _ in train(cfg, model=model, data=data):
        pass
    acc_unpruned = evaluate(model, data)[1]
    pruned = prune_at_valley(model, data, upper=cfg.upper)
    threshold, reduction = pruned.threshold, pruned.flops_reduction
    acc_pruned = acc_unpruned if pruned.acc_pruned is None else pruned.acc_pruned  # no valley: nothing pruned
    acc_start = evaluate(start, data)[1] if acc_start is None else acc_start
    return {"lam": cfg.lam, "t": cfg.t, "seed": cfg.seed, "acc_start": acc_start, "acc_unpruned": acc_unpruned,
            "threshold": threshold, "flops_reduction": reduction, "acc_pruned": acc_pruned,
            "acc_drop": acc_start - acc_pruned}


def tl_grid(base: TrainConfig, lams: Sequence[float], ts: Sequence[float], data: DeviceDataset, start: nn.Module,
            seeds: Sequence[int] = (0,), cache: str | Path | None = None) -> Iterator[dict]:
    """Every (λ, t, seed) of the grid, in order, as a row of ``GRID_COLUMNS``: read from ``cache`` when it is
    there, else trained (``base`` with reg="polar" and that λ, t and seed) and written to ``cache`` at once."""
    for lam in lams:
        check_range("lam", lam)
    for t in ts:
        check_range("t", t)
    for values, name in ((lams, "lams"), (ts, "ts"), (seeds, "seeds")):
        check_distinct(values, name)
    folder = Path(cache) if cache is not None else None
    acc_start = None
    for t in ts:
        for lam in lams:
            for seed in seeds:
                path = folder / point_name(lam, t, seed) if folder is not None else None
                if path is not None and path.is_file():
                    yield json.loads(path.read_text())
                    continue
                if acc_start is None:
                    acc_start = evaluate(start, data)[1]
                cfg = dataclasses.replace(base, reg="polar", lam=float(lam), t=float(t), seed=int(seed))
                row = grid_point(cfg, data, start, acc_start)
                if path is not None:
                    atomic_write_text(json.dumps(row, indent=1) + "\n", path)
                yield row


def read_grid(cache: str | Path) -> pd.DataFrame:
    """The finished points in a grid's cache folder (any order; possibly still growing) as a table."""
    rows = [json.loads(p.read_text()) for p in sorted(Path(cache).glob("lam*_t*_seed*.json"))]
    import pandas as pd
    return pd.DataFrame(rows, columns=GRID_COLUMNS)


def grid_summary(points: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each (λ, t): FLOPs reduction and accuracy drop."""
    rows = []
    for (lam, t), group in points.groupby(["lam", "t"]):
        row = {"lam": lam, "t": t, "seeds": len(group)}
        for column in ("flops_reduction", "acc_drop", "acc_pruned"):
            values = [float(v) for v in group[column]]
            row[column] = statistics.mean(values)
            row[column + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    import pandas as pd
    return pd.DataFrame(rows)
