"""What narrowing the residual stream buys on a trained polarized network: pruned at its valley threshold without
and with ``narrow_residual`` (exact widths and ``round_to=8``): residual-stream widths, FLOPs and CPU latency.

    polar train --preset demo --model resnet20 --dataset cifar10 --reg polar --lam 0.00845 --t 1.2 --out runs/r20
    python bench/narrow_residual.py --run runs/r20

Needs a trained polarized run of a CIFAR ResNet; prints a table and writes results/bench/narrow_residual.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import polar

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run directory with checkpoint.pt (a CIFAR ResNet)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(REPO / "results" / "bench"))
    args = parser.parse_args()
    run = polar.RunDir(args.run)
    model = polar.load(run.checkpoint_path).eval()
    threshold = polar.find_threshold(model, "valley")
    base = polar.cost(model)
    print(f"{args.run}: valley threshold {threshold:.3f}; CPU, channels_last, batch 64, median of {args.repeats}, "
          "the two pruned networks timed alternately")
    print(f"{'round_to':>8}{'stream widths':>16}{'FLOPs red.':>11}{'narrowed':>10}{'wide ms':>9}{'narrow ms':>10}"
          f"{'speed-up':>9}")
    rows = []
    for round_to in (1, 8):
        wide = polar.prune(model, threshold, round_to=round_to).eval()
        narrow = polar.prune(model, threshold, round_to=round_to, narrow_residual=True).eval()
        streams = [len(chans) for chans in narrow.stream_lists()]
        wide_ms, narrow_ms = polar.paired_latency_ms(wide, narrow, 64, args.repeats, True, rounds=8)
        row = {"round_to": round_to, "stream_widths": streams,
               "flops_reduction_wide": polar.flops_reduction(base, polar.cost(wide)),
               "flops_reduction_narrow": polar.flops_reduction(base, polar.cost(narrow)),
               "wide_ms_b64": wide_ms, "narrow_ms_b64": narrow_ms}
        row["speedup_b64"] = row["wide_ms_b64"] / row["narrow_ms_b64"]
        rows.append(row)
        print(f"{round_to:>8}{'/'.join(map(str, streams)):>16}{row['flops_reduction_wide']:>10.1%}"
              f"{row['flops_reduction_narrow']:>9.1%}{row['wide_ms_b64']:>9.1f}{row['narrow_ms_b64']:>10.1f}"
              f"{row['speedup_b64']:>8.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "narrow_residual.json").write_text(json.dumps({"run": args.run, "threshold": threshold, "rows": rows,
                                                          "code": Path(__file__).read_text()}, indent=1))


if __name__ == "__main__":
    main()
