"""How well a latency table predicts widths it was not fitted on, with and without a minimum timing-sample length.

For each ``--sample-ms`` value: build ``polar.latency_table`` afresh (not from the cache) for the model, runtime and
batch, then predict the speed-up of five held-out random width vectors (the ones tests/test_speedup.py uses) and
measure each with ``polar.measured_speedup`` (median of 3). Prints the table's fit error and the held-out errors.

    python bench/latency_table_error.py --runtime onnxruntime --batch 1          # ResNet-20 baseline, ~5 min
    python bench/latency_table_error.py --runtime torch --batch 64 --sample-ms 20

Nothing else should run on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import polar  # noqa: E402
import polar.latency_table as latency_table  # noqa: E402
from polar.latency_table import RUNTIMES, _sample_widths, full_widths  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20", help="resnet20 (the shipped baseline) or any registered model")
    parser.add_argument("--runtime", default="onnxruntime", choices=RUNTIMES)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sample-ms", default="0,20", help="comma-separated minimum timing-sample lengths")
    args = parser.parse_args()
    model = (polar.pretrained("resnet20") if args.model == "resnet20"
             else polar.create_model(args.model, num_classes=10))
    for sample_ms in (float(v) for v in args.sample_ms.split(",")):
        latency_table.SAMPLE_MS = sample_ms  # measured_speedup's timers read it too
        t0 = time.time()
        table = polar.latency_table(model, args.runtime, args.batch, cache=False)
        full = table.predict(model, full_widths(model))
        vectors = _sample_widths(model, 9, seed=123, granularity=table.granularity)[4:]
        predicted = [full / table.predict(model, widths) for widths in vectors]
        pruned = [polar.prune_to_widths(model, widths) for widths in vectors]
        measured = [statistics.median(polar.measured_speedup(model, small, args.runtime, args.batch)
                                      for _ in range(3)) for small in pruned]
        errors = [abs(p - m) / m for p, m in zip(predicted, measured)]
        print(f"{args.model} {args.runtime} b{args.batch}, samples ≥ {sample_ms:g} ms: built in "
              f"{time.time() - t0:.0f} s, fit error {table.fit_error:.1%}; held-out errors median "
              f"{statistics.median(errors):.1%} ({', '.join(f'{e:.0%}' for e in errors)}); predicted "
              f"{', '.join(f'{p:.2f}' for p in predicted)}x, measured {', '.join(f'{m:.2f}' for m in measured)}x",
              flush=True)


if __name__ == "__main__":
    main()
