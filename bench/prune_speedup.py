"""Inference speed-up from physical pruning: original vs. pruned-to-about-50%-FLOPs, measured in one run.

For each model, the sparse γ are given a polarized random distribution (a fixed seed; about half the channels near
0, spread over all layers as in a trained network), the threshold is chosen so that pruning removes 50% of the
MACs, and both networks are timed on the CPU in eval mode (batch 64 and batch 1, median of repeated runs). The
measured speed-up is printed next to the ideal one implied by the MACs ratio. Each model is pruned twice: by the
threshold exactly (round_to 1) and with every layer's width rounded up to a multiple of 8 (``round_to=8``: oneDNN's
convs are much slower on odd channel counts), each at its own 50%-MACs threshold.

    python bench/prune_speedup.py                    # resnet56, vgg16, mobilenet_v2; round_to 1 and 8
    python bench/prune_speedup.py --models resnet56 --round-to 8 --repeats 20

Writes results/bench/prune_speedup_<format>.json (with this script's source).
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
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet56,vgg16,mobilenet_v2")
    parser.add_argument("--target", type=float, default=0.5, help="FLOPs reduction to prune to")
    parser.add_argument("--round-to", default="1,8", help="channel-count rounding(s) to compare")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC for both networks (default; oneDNN's fast path on CPU, and Polar's training format)")
    parser.add_argument("--out", default=str(REPO / "results" / "bench"))
    args = parser.parse_args()
    fmt = "channels_last" if args.channels_last else "NCHW"
    print(f"CPU, {torch.get_num_threads()} threads, eval mode, {fmt}, median of {args.repeats} runs")
    print(f"{'model':<14}{'round':>6}{'FLOPs red.':>11}{'ideal':>8}{'batch 64: orig ms':>19}{'pruned ms':>11}"
          f"{'speed-up':>10}{'/ ideal':>9}{'batch 1: speed-up':>19}")
    rows = []
    for name, round_to in ((n, int(r)) for n in args.models.split(",") for r in args.round_to.split(",")):
        model = polarize(polar.create_model(name), seed=0)
        threshold = polar.threshold_for_reduction(model, args.target, round_to=round_to)
        small = polar.prune(model, threshold, round_to=round_to).eval()
        base, pruned = polar.cost(model), polar.cost(small)
        ideal = base.macs / pruned.macs
        row = {"model": name, "round_to": round_to, "threshold": threshold,
               "flops_reduction": polar.flops_reduction(base, pruned), "macs": base.macs, "macs_pruned": pruned.macs,
               "ideal_speedup": ideal}
        for batch in (64, 1):
            orig_ms, small_ms = polar.paired_latency_ms(model, small, batch, args.repeats, args.channels_last,
                                                        rounds=3)
            row |= {f"orig_ms_b{batch}": orig_ms, f"pruned_ms_b{batch}": small_ms,
                    f"speedup_b{batch}": orig_ms / small_ms}
        rows.append(row)
        print(f"{name:<14}{round_to:>6}{row['flops_reduction']:>10.1%}{ideal:>7.2f}x{row['orig_ms_b64']:>19.1f}"
              f"{row['pruned_ms_b64']:>11.1f}{row['speedup_b64']:>9.2f}x{row['speedup_b64'] / ideal:>9.2f}"
              f"{row['speedup_b1']:>18.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"prune_speedup_{fmt}.json").write_text(json.dumps({"rows": rows, "threads": torch.get_num_threads(),
                                                        "torch": torch.__version__,
                                                        "code": Path(__file__).read_text()}, indent=1))


if __name__ == "__main__":
    main()
