"""How long finding the threshold for a FLOPs target takes: counting each candidate without pruning it
(``polar.pruned_cost``, what ``polar.threshold_for_reduction`` does) against pruning and profiling it with thop
(what it did before, kept here as the baseline), in the same run.

For each model the sparse γ get a polarized random distribution (``bench/prune_speedup.py``'s, fixed seed); each
target FLOPs reduction is searched both ways, with ``round_to`` 1 and 8; both searches must return the same
threshold (checked). The explorer's trade-off curve asks 5 targets per network, the Prune button one.

    python bench/threshold_search.py                      # resnet20, resnet56, vgg16, mobilenet_v2
    python bench/threshold_search.py --models resnet56 --repeats 5

Writes results/bench/threshold_search.json (with this script's source). Time it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from prune_speedup import polarize

import polar

REPO = Path(__file__).resolve().parents[1]
TARGETS = (0.3, 0.5, 0.7)


def search_by_surgery(model: torch.nn.Module, target: float, round_to: int, tolerance: float = 0.005) -> float:
    """The baseline: the same bisection over the sorted γ, each candidate physically pruned and counted by thop."""
    base = polar.cost(model)
    gammas = polar.sparse_gammas(model).detach().float().cpu().sort().values
    lo, hi = 0, len(gammas) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        small = polar.prune(model, float(gammas[mid]), round_to=round_to)
        if polar.flops_reduction(base, polar.cost(small)) >= target - tolerance / 2:
            hi = mid
        else:
            lo = mid + 1
    return float(gammas[lo])


def seconds(fn, repeats: int) -> tuple[float, float]:
    """(median seconds, the result) of ``repeats`` calls."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet20,resnet56,vgg16,mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "results" / "bench"))
    args = parser.parse_args()
    print(f"CPU, {torch.get_num_threads()} threads; median of {args.repeats} searches per target")
    print(f"{'model':<14}{'round_to':>9}{'target':>8}{'surgery + thop (ms)':>21}{'pruned_cost (ms)':>18}"
          f"{'speed-up':>10}")
    rows = []
    for name in args.models.split(","):
        model = polarize(polar.create_model(name), seed=0)
        polar.pruned_cost(model, -1.0)  # the one forward pass that records layer sizes, as any first call pays
        for round_to in (1, 8):
            for target in TARGETS:
                old_s, old = seconds(lambda: search_by_surgery(model, target, round_to), args.repeats)
                new_s, new = seconds(lambda: polar.threshold_for_reduction(model, target, round_to=round_to),
                                     args.repeats)
                if old != new:
                    raise SystemExit(f"{name} round_to {round_to} target {target}: thresholds differ ({old} vs {new})")
                rows.append({"model": name, "round_to": round_to, "target": target, "surgery_ms": old_s * 1e3,
                             "pruned_cost_ms": new_s * 1e3, "speedup": old_s / new_s, "threshold": new})
                print(f"{name:<14}{round_to:>9}{target:>8.0%}{old_s * 1e3:>21.0f}{new_s * 1e3:>18.1f}"
                      f"{old_s / new_s:>9.0f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "repeats": args.repeats, "threads": torch.get_num_threads(), "torch": torch.__version__}
    polar.atomic.atomic_write_text(json.dumps({**result, "code": Path(__file__).read_text()}, indent=1),
                                   out / "threshold_search.json")


if __name__ == "__main__":
    main()
