"""Why a pruned ResNet-56 runs far below its MACs ratio on this CPU: a 3x3 convolution's time against its widths.

Times one 3x3 convolution (batch 64, channels_last, eval, the steady allocator) at the widths a ResNet-56 has
(16/32/64 at 32x32/16x16/8x8) and at the halves that pruning to 50% of the MACs leaves. On an AVX-512 CPU oneDNN
computes output channels in blocks of 16, so 16→8 costs what 16→16 does: halving a stage-1 layer's outputs halves
its MACs and saves no time.

    python bench/conv_widths.py

Writes results/bench/conv_widths.json (with this script's source).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import polar

REPO = Path(__file__).resolve().parents[1]
SHAPES = [(32, 16, 16), (32, 16, 8), (32, 8, 16), (32, 8, 8), (16, 32, 32), (16, 32, 16), (16, 16, 32),
          (16, 16, 16), (8, 64, 64), (8, 64, 32), (8, 32, 64), (8, 32, 32)]  # (H = W, in channels, out channels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=str(REPO / "results" / "bench"))
    args = parser.parse_args()
    polar.steady_allocator()
    print(f"CPU, {torch.get_num_threads()} threads, 3x3 conv, batch {args.batch}, channels_last, median of "
          f"{args.repeats}")
    print(f"{'H=W':>4}{'in':>5}{'out':>5}{'ms':>8}{'GMAC/s':>9}")
    rows = []
    for size, c_in, c_out in SHAPES:
        conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False).eval().to(memory_format=torch.channels_last)
        x = torch.randn(args.batch, c_in, size, size).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            ms = polar.latency_ms(lambda: conv(x), args.repeats)
        macs = args.batch * size * size * c_in * c_out * 9
        rows.append({"size": size, "in": c_in, "out": c_out, "ms": ms, "gmacs_per_s": macs / ms / 1e6})
        print(f"{size:>4}{c_in:>5}{c_out:>5}{ms:>8.3f}{macs / ms / 1e6:>9.1f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    polar.atomic.atomic_write_text(json.dumps({"rows": rows, "batch": args.batch, "threads": torch.get_num_threads(),
                                               "torch": torch.__version__, "code": Path(__file__).read_text()},
                                              indent=1), out / "conv_widths.json")


if __name__ == "__main__":
    main()
