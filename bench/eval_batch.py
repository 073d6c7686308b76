"""Which evaluation batch is fastest on this CPU: ``polar.evaluate``'s time on the CIFAR-10 test images against
its batch size, per model, as ratios against batch 256 measured in the same run.

With glibc's default allocator an activation of a large batch (16 MB for a ResNet's first stage at batch 256) is a
fresh ``mmap`` at every forward pass, page-faulted in again each time; small batches stay in the heap glibc reuses.
``--steady`` runs the same sweep under ``polar.steady_allocator`` (nothing handed back to the system), which
removes that cost and shows what is left.

    python bench/eval_batch.py [--steady]

Writes results/bench/eval_batch.json (or eval_batch_steady.json), with this script's source.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import polar

REPO = Path(__file__).resolve().parents[1]
BATCHES = (16, 32, 64, 128, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "vgg16"])
    parser.add_argument("--test-images", type=int, default=1000, help="balanced test subset (the explorer's default)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds over all batch sizes; the median is kept")
    parser.add_argument("--steady", action="store_true", help="under polar.steady_allocator")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--out", default=str(REPO / "results" / "bench"))
    args = parser.parse_args()
    if args.steady:
        polar.steady_allocator()
    data = polar.load_dataset(args.dataset, subset=1, test_subset=args.test_images // 10)
    print(f"CPU, {torch.get_num_threads()} threads, {len(data.test_y)} test images, fp32, channels_last, "
          f"{'steady allocator' if args.steady else 'glibc defaults'}; median of {args.repeats} rounds (s)")
    print(f"{'model':<10}" + "".join(f"{b:>9}" for b in BATCHES) + "   fastest / 256")
    rows = []
    for name in args.models:
        model = polar.create_model(name, num_classes=data.num_classes).eval()
        polar.evaluate(model, data, batch_size=BATCHES[-1])  # warm-up: oneDNN's kernels for this model
        seconds: dict[int, list[float]] = {b: [] for b in BATCHES}
        for _ in range(args.repeats):  # rounds over the batch sizes: a drift of the machine falls on all of them
            for batch in BATCHES:
                start = time.perf_counter()
                polar.evaluate(model, data, batch_size=batch)
                seconds[batch].append(time.perf_counter() - start)
        median = {b: statistics.median(s) for b, s in seconds.items()}
        fastest = min(median, key=median.get)
        rows.append({"model": name, "median_s": median, "fastest": fastest,
                     "speedup_over_256": median[256] / median[fastest]})
        print(f"{name:<10}" + "".join(f"{median[b]:>9.3f}" for b in BATCHES)
              + f"   {fastest}: {median[256] / median[fastest]:.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "eval_batch_steady.json" if args.steady else "eval_batch.json"
    polar.atomic.atomic_write_text(json.dumps({"rows": rows, "test_images": len(data.test_y), "steady": args.steady,
                                               "threads": torch.get_num_threads(), "torch": torch.__version__,
                                               "code": Path(__file__).read_text()}, indent=1), out / name)


if __name__ == "__main__":
    main()
