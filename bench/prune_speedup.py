"""Inference speed-up from physical pruning: original vs. pruned-to-about-50%-FLOPs, in PyTorch and ONNX Runtime.

For each model, the sparse γ are given a polarized random distribution (a fixed seed; about half the channels near
0, spread over all layers as in a trained network) and every β a non-zero value (so the pruned channels leave
constants to fold, as a trained network's do); the threshold is chosen so that pruning removes 50% of the MACs.
Both networks are timed on the CPU in eval mode by ``polar.deployed_latency`` — PyTorch (channels_last) and ONNX
Runtime, batch 64 and batch 1, in alternating rounds (medians) — and the measured speed-up is printed next to the
ideal one implied by the MACs ratio. Each model is pruned by the threshold exactly (round_to 1) and with every
layer's width rounded up to a multiple of 8 and of 16 (``round_to``), each at its own 50%-MACs threshold.

The process first calls ``polar.steady_allocator()``: with glibc's defaults the activations are page-faulted in
again at every pass and the timings swing by 2x from run to run (the README has the numbers).

    python bench/prune_speedup.py                    # resnet56, vgg16, mobilenet_v2; round_to 1, 8 and 16
    python bench/prune_speedup.py --models resnet56 --round-to 8 --repeats 20

Writes results/bench/prune_speedup.json (with this script's source).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import polar

REPO = Path(__file__).resolve().parents[1]


def polarize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in polar.sparse_bns(model):
            low = torch.rand(bn.num_features, generator=gen) < 0.5
            bn.weight.copy_(torch.where(low, torch.rand(bn.num_features, generator=gen) * 0.05,
                                        0.3 + 0.7 * torch.rand(bn.num_features, generator=gen)))
            bn.bias.copy_(torch.rand(bn.num_features, generator=gen) * 0.7 - 0.2)  # β in [-0.2, 0.5)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet56,vgg16,mobilenet_v2")
    parser.add_argument("--target", type=float, default=0.5, help="FLOPs reduction to prune to")
    parser.add_argument("--round-to", default="1,8,16", help="channel-count rounding(s) to compare")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (the median of their medians)")
    parser.add_argument("--out", default=str(REPO / "results" / "bench"))
    args = parser.parse_args()
    steady = polar.steady_allocator()
    print(f"CPU, {torch.get_num_threads()} threads, eval mode, median of {args.rounds} alternating rounds of "
          f"{args.repeats} runs; steady allocator: {steady}")
    print(f"{'model':<14}{'round':>6}{'FLOPs red.':>11}{'ideal':>8}  {'runtime':<14}{'batch 64: orig ms':>18}"
          f"{'pruned ms':>11}{'speed-up':>10}{'/ ideal':>9}{'batch 1: speed-up':>19}")
    rows = []
    for name, round_to in ((n, int(r)) for n in args.models.split(",") for r in args.round_to.split(",")):
        model = polarize(polar.create_model(name), seed=0)
        threshold = polar.threshold_for_reduction(model, args.target, round_to=round_to)
        small = polar.prune(model, threshold, round_to=round_to).eval()
        base, pruned = polar.cost(model), polar.cost(small)
        ideal = base.macs / pruned.macs
        table = polar.deployed_latency(model, small, batches=(64, 1), repeats=args.repeats, rounds=args.rounds)
        for runtime, timed in table.groupby("runtime", sort=False):
            by_batch = timed.set_index("batch")
            row = {"model": name, "round_to": round_to, "threshold": threshold, "runtime": runtime,
                   "flops_reduction": polar.flops_reduction(base, pruned), "macs": base.macs,
                   "macs_pruned": pruned.macs, "ideal_speedup": ideal}
            for batch in (64, 1):
                row |= {f"orig_ms_b{batch}": float(by_batch.at[batch, "original_ms"]),
                        f"pruned_ms_b{batch}": float(by_batch.at[batch, "pruned_ms"]),
                        f"speedup_b{batch}": float(by_batch.at[batch, "speedup"])}
            rows.append(row)
            print(f"{name:<14}{round_to:>6}{row['flops_reduction']:>10.1%}{ideal:>7.2f}x  {runtime:<14}"
                  f"{row['orig_ms_b64']:>18.1f}{row['pruned_ms_b64']:>11.1f}{row['speedup_b64']:>9.2f}x"
                  f"{row['speedup_b64'] / ideal:>9.2f}{row['speedup_b1']:>18.2f}x", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    polar.atomic.atomic_write_text(json.dumps(
        {"rows": rows, "threads": torch.get_num_threads(), "torch": torch.__version__, "steady_allocator": steady,
         "code": Path(__file__).read_text()}, indent=1), out / "prune_speedup.json")


if __name__ == "__main__":
    main()
