"""Prune to a measured speed-up, and compare with pruning to a FLOPs target at the same measured speed.

The user's question: "I want this network 2x faster where it runs; what do I lose?" For each model and each
(runtime, batch) the network is pruned by ``polar.pruned_for_speedup`` for 1.5x and 2x, and by a FLOPs target
(``polar.threshold_for_reduction`` with ``round_to=16``, the rounding that suits AVX-512 best in
bench/prune_speedup.py) whose reduction is tuned, by measurement, until that network runs as fast as the speed-pruned
one. Both networks then get the same short fine-tune. Protocol, fixed before any number was measured:

- Models: ResNet-20 from Polar's trained baseline, briefly polarized (the explorer's default run: 1,000 images per
  class, 2 epochs, batch 64, lr 0.02, λ 0.02, t 1.2); ResNet-56, VGG-16 and MobileNetV2 polarized from scratch
  (``--scratch-subset`` images per class, ``--scratch-epochs`` epochs, batch 64, lr 0.1 cosine, λ 0.01, t 1.2):
  brief runs, so their accuracies are far below the paper's; both networks of a row start from the same weights.
- Runtimes: PyTorch (channels_last) at batch 64, ONNX Runtime at batch 64 and at batch 1; the process's threads.
- Speed-pruned network: ``polar.pruned_for_speedup(..., replans=--replans)`` (default 2, since 2026-12-07; the
  table before was measured with the table's prediction alone): the network chosen is measured and, more than 10 %
  off, planned again for the shortfall; the row's speed-up is then measured afresh, like the FLOPs-targeted one's.
- Speed-ups are medians of ``--measures`` calls of ``polar.measured_speedup`` (each the ratio of medians over 5
  alternating rounds), so load drift hits both networks alike.
- FLOPs-targeted network: bisection on the FLOPs reduction (``--bisect`` steps, one measurement each) towards the
  speed-pruned network's measured speed-up; the step measured closest is measured again like the other.
- Accuracy: ``polar.evaluate`` on ``--test-subset`` test images per class, before and after one fine-tune of
  ``--finetune-epochs`` epoch(s) on the training subset (``polar.finetune_config``, the explorer's recipe).
- Verdicts, computed from the rows: the measured speed-up within 10 % of the asked one; at equal measured speed
  (the two speed-ups within 5 % of each other), accuracy before fine-tuning at least the FLOPs-targeted network's.

Run with nothing else on the machine: its timings are the point.

    python bench/latency_pruning.py                          # about 1.5 hours on a quiet 2-core CPU, resumable
    python bench/latency_pruning.py --models resnet20 --quick    # a look (minutes)
    python bench/latency_pruning.py --report                 # the results from the rows finished so far

Each trained model and each finished row is cached under ``--work`` (delete it to start over); writes
results/bench/latency_pruning.json (with this script's source) and prints the table.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

import polar
from polar.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
SETTINGS = (("torch", 64), ("onnxruntime", 64), ("onnxruntime", 1))
SPEEDUPS = (1.5, 2.0)
SPEEDUP_TOLERANCE = 0.10  # the target: measured within 10 % of the asked speed-up
EQUAL_SPEED = 0.05  # two networks count as equally fast when their measured speed-ups are within 5 %


def polarized(name: str, data: polar.DeviceDataset, args: argparse.Namespace, work: Path) -> torch.nn.Module:
    """The model after its brief polarization run (cached in ``work``)."""
    path = work / f"{name}.pt"
    if path.exists():
        return polar.load(path).eval()
    if name == "resnet20":
        cfg = polar.TrainConfig(model=name, dataset="cifar10", init="pretrained", epochs=2, batch_size=64, lr=0.02,
                                lr_schedule="cosine", weight_decay=1e-4, reg="polar", lam=0.02, t=1.2, seed=0)
    else:
        cfg = polar.TrainConfig(model=name, dataset="cifar10", epochs=args.scratch_epochs, batch_size=64, lr=0.1,
                                lr_schedule="cosine", weight_decay=5e-4, reg="polar", lam=0.01, t=1.2, seed=0)
    model = polar.initial_model(cfg, data.num_classes)
    t0 = time.perf_counter()
    for event in polar.train(cfg, model=model, data=data):
        if isinstance(event, polar.EpochEvent):
            print(f"  {name}: epoch {event.epoch} test acc {event.test_acc:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    polar.save(model, path)
    return model.eval()


def speedup_of(original: torch.nn.Module, pruned: torch.nn.Module, runtime: str, batch: int, measures: int) -> float:
    return statistics.median(polar.measured_speedup(original, pruned, runtime, batch) for _ in range(measures))


def flops_pruned_at_speed(model: torch.nn.Module, wanted: float, runtime: str, batch: int,
                          steps_allowed: int) -> tuple[torch.nn.Module, float, list[dict]]:
    """The ``round_to=16`` FLOPs-targeted network whose measured speed-up is closest to ``wanted`` (bisection on the
    FLOPs reduction), its reduction and every step tried."""
    low, high, steps = 0.0, 0.95, []
    for _ in range(steps_allowed):
        reduction = (low + high) / 2
        threshold = polar.threshold_for_reduction(model, reduction, round_to=16)
        small = polar.prune(model, threshold, round_to=16)
        measured = polar.measured_speedup(model, small, runtime, batch)
        steps.append({"reduction": reduction, "threshold": threshold, "measured_speedup": measured})
        low, high = (reduction, high) if measured < wanted else (low, reduction)
    best = min(steps, key=lambda s: abs(s["measured_speedup"] - wanted))
    return polar.prune(model, best["threshold"], round_to=16), best["reduction"], steps


def finetuned_accuracy(name: str, model: torch.nn.Module, data: polar.DeviceDataset, epochs: int) -> float:
    """Test accuracy after the explorer's fine-tune recipe (``polar.finetune_config``) for ``epochs``, on a copy."""
    cfg = polar.finetune_config(polar.TrainConfig(model=name, dataset="cifar10", batch_size=64, seed=0), epochs=epochs)
    model = copy.deepcopy(model)
    for _ in polar.train(cfg, model=model, data=data):
        pass
    return polar.evaluate(model, data)[1]


def row_path(work: Path, name: str, runtime: str, batch: int, asked: float, replans: int) -> Path:
    return work / f"{name}_{runtime}_b{batch}_x{asked:g}_r{replans}.json"


def row(name: str, model: torch.nn.Module, acc_unpruned: float, runtime: str, batch: int, asked: float,
        data: polar.DeviceDataset, args: argparse.Namespace, work: Path) -> dict:
    """One row of the table (cached in ``work``); ``acc_unpruned``: ``model``'s own accuracy, measured once per
    model."""
    path = row_path(work, name, runtime, batch, asked, args.replans)
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    table = polar.latency_table(model, runtime, batch)
    done = polar.pruned_for_speedup(model, asked, runtime, batch, table=table, replans=args.replans)
    speed = speedup_of(model, done.model, runtime, batch, args.measures)
    by_flops, reduction, steps = flops_pruned_at_speed(model, speed, runtime, batch, args.bisect)
    flops_speed = speedup_of(model, by_flops, runtime, batch, args.measures)
    base, epochs = polar.cost(model), args.finetune_epochs
    result = {
        "model": name, "runtime": runtime, "batch": batch, "asked": asked, "granularity": table.granularity,
        "table_fit_error": table.fit_error, "predicted_speedup": done.predicted_speedup, "measured_speedup": speed,
        "replans": args.replans, "asked_of_table": done.asked_of_table, "measured_while_chosen": done.measured_speedup,
        "macs_ratio": polar.cost(done.model).macs / base.macs, "acc_unpruned": acc_unpruned,
        "acc_pruned": polar.evaluate(done.model, data)[1],
        "acc_finetuned": finetuned_accuracy(name, done.model, data, epochs),
        "flops_reduction_asked": reduction, "flops_measured_speedup": flops_speed,
        "flops_macs_ratio": polar.cost(by_flops).macs / base.macs,
        "flops_acc_pruned": polar.evaluate(by_flops, data)[1],
        "flops_acc_finetuned": finetuned_accuracy(name, by_flops, data, epochs),
        "bisection": steps, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(json.dumps(result, indent=1) + "\n", path)
    return result


def verdicts(rows: list[dict]) -> list[str]:
    """What the table says about the issue's two targets, from its numbers."""
    lines = []
    off = [r for r in rows if abs(r["measured_speedup"] / r["asked"] - 1) > SPEEDUP_TOLERANCE]
    lines.append(f"measured speed-up within {SPEEDUP_TOLERANCE:.0%} of the asked one: {len(rows) - len(off)} of "
                 f"{len(rows)} rows" + ("" if not off else " (missed: " + ", ".join(
                     f"{r['model']} {r['runtime']} b{r['batch']} {r['asked']:g}x → {r['measured_speedup']:.2f}x"
                     for r in off) + ")"))
    equal = [r for r in rows if abs(r["flops_measured_speedup"] / r["measured_speedup"] - 1) <= EQUAL_SPEED]
    better = [r for r in equal if r["acc_pruned"] >= r["flops_acc_pruned"]]
    lines.append(f"at equal measured speed (within {EQUAL_SPEED:.0%}; {len(equal)} of {len(rows)} rows), accuracy "
                 f"before fine-tuning ≥ the FLOPs-targeted network's: {len(better)} of {len(equal)}")
    return lines


def markdown(rows: list[dict], lines: list[str]) -> str:
    """The table and its verdicts as the README shows them (pasted from results/bench/latency_pruning.md)."""
    out = ["| model (unpruned acc) | runtime, batch | asked | speed-pruned: measured (predicted) | MACs "
           "| acc pruned → fine-tuned | FLOPs-targeted (round_to 16): measured | MACs | acc pruned → fine-tuned |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} ({100 * r['acc_unpruned']:.1f} %) | {r['runtime']} b{r['batch']} "
                   f"| {r['asked']:g}x | {r['measured_speedup']:.2f}x ({r['predicted_speedup']:.2f}x) "
                   f"| {r['macs_ratio']:.2f} | {100 * r['acc_pruned']:.1f} → {100 * r['acc_finetuned']:.1f} % "
                   f"| {r['flops_measured_speedup']:.2f}x | {r['flops_macs_ratio']:.2f} "
                   f"| {100 * r['flops_acc_pruned']:.1f} → {100 * r['flops_acc_finetuned']:.1f} % |")
    return "\n".join(out) + "\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet20,resnet56,vgg16,mobilenet_v2")
    parser.add_argument("--scratch-subset", type=int, default=500, help="training images per class, from scratch")
    parser.add_argument("--scratch-epochs", type=int, default=6)
    parser.add_argument("--test-subset", type=int, default=200, help="test images per class")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--measures", type=int, default=3, help="measured_speedup calls per reported speed-up")
    parser.add_argument("--bisect", type=int, default=6, help="bisection steps of the FLOPs-targeted network")
    parser.add_argument("--replans", type=int, default=2,
                        help="polar.pruned_for_speedup's re-plans for a measured shortfall (0: the table alone)")
    parser.add_argument("--quick", action="store_true", help="one speed-up (2x), PyTorch only, 1 measure, 3 steps")
    parser.add_argument("--report", action="store_true",
                        help="write the results from the rows finished so far (nothing is trained or timed)")
    parser.add_argument("--work", default=str(REPO / "runs" / "latency_pruning"))
    parser.add_argument("--out", default=str(REPO / "results" / "bench"))
    args = parser.parse_args()
    if args.quick:
        args.measures, args.bisect = 1, 3
    steady = polar.steady_allocator()
    settings, speedups = (SETTINGS[:1], SPEEDUPS[1:]) if args.quick else (SETTINGS, SPEEDUPS)
    work = Path(args.work)
    print(f"CPU, {torch.get_num_threads()} threads, steady allocator: {steady}", flush=True)
    cells = [(runtime, batch, asked) for runtime, batch in settings for asked in speedups]  # one model's rows
    rows, missing = [], []
    for name in args.models.split(","):
        if args.report:
            for runtime, batch, asked in cells:
                path = row_path(work, name, runtime, batch, asked, args.replans)
                if path.exists():
                    rows.append(json.loads(path.read_text()))
                else:
                    missing.append(f"{name} {runtime} b{batch} {asked:g}x")
            continue
        subset = 1000 if name == "resnet20" else args.scratch_subset
        data = polar.load_dataset("cifar10", subset=subset, test_subset=args.test_subset, data_dir=REPO / "data")
        model = polarized(name, data, args, work)
        acc_unpruned = polar.evaluate(model, data)[1]
        for runtime, batch, asked in cells:
            rows.append(row(name, model, acc_unpruned, runtime, batch, asked, data, args, work))
            r = rows[-1]
            print(f"{name:<13}{runtime:<12}b{batch:<3}{asked:>4g}x  speed-up {r['measured_speedup']:.2f}x "
                  f"(predicted {r['predicted_speedup']:.2f}x, MACs {r['macs_ratio']:.2f})  acc {r['acc_pruned']:.3f} "
                  f"→ {r['acc_finetuned']:.3f} | FLOPs-targeted {r['flops_measured_speedup']:.2f}x (MACs "
                  f"{r['flops_macs_ratio']:.2f}) acc {r['flops_acc_pruned']:.3f} → {r['flops_acc_finetuned']:.3f}  "
                  f"[{r['seconds']:.0f} s]", flush=True)
    lines = verdicts(rows) + ([f"not run yet ({len(missing)} rows): " + ", ".join(missing)] if missing else [])
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings_used = {k: _relative(v) if k in ("work", "out") else v for k, v in vars(args).items()}
    result = {"rows": rows, "verdicts": lines, "args": settings_used, "threads": torch.get_num_threads(),
              "code": Path(__file__).read_text()}
    atomic_write_text(json.dumps(result, indent=1) + "\n", out / "latency_pruning.json")
    atomic_write_text(markdown(rows, lines), out / "latency_pruning.md")


def _relative(path: str) -> str:
    """``path`` relative to the repository when inside it: committed results name no machine's paths."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else resolved.name


if __name__ == "__main__":
    main()
