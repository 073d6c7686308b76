"""One duel, timed: polarization vs. L1 from one start on the same batches, valley-pruned and compared at matched FLOPs.

    python bench/duel.py --device cuda --model resnet56 --epochs 8      # the GPU check: from scratch, full CIFAR-10
    python bench/duel.py --fast                                          # the test suite: tiny, synthetic
    python bench/duel.py --explorer --seeds 0,1,2,3 --threads 1          # the explorer's default duel, per seed

L1's λ is polar.l1_lambda_for(λ, t) (the same average pull on γ). λ is the paper's scaled to this schedule by
polar.scale_lambda, unless --lam is given. Writes results/bench/duel_<device>.json (duel_explorer_<device>.json
with --explorer: the sidebar's "Fast CPU demo" from Polar's trained ResNet-20, on its 1,000-image test subset, one row
per seed, so what pruning at the valley costs each regularizer is seen with its spread over seeds).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import polar

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--lam", type=float, default=0.0, help="polarization λ (default: the paper's, scaled)")
    parser.add_argument("--t", type=float, default=1.4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fast", action="store_true", help="resnet20, 2 epochs of a small synthetic set")
    parser.add_argument("--explorer", action="store_true",
                        help="the explorer's default duel (from the trained ResNet-20; its lr, λ, t and subsets)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one duel each")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; the explorer's "
                        "trainer uses 1 on a 2-core CPU, and results depend on it)")
    parser.add_argument("--out", default=str(REPO / "results" / "bench"))
    args = parser.parse_args()
    device = polar.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.explorer:  # the sidebar's "Fast CPU demo": the library's demo-baseline preset, on app/settings.py's subsets
        demo = polar.SCHEDULES["demo-baseline"]
        model, dataset, subset, epochs = "resnet20", "cifar10", 1000, demo["epochs"]
        args.batch_size, args.lr, args.t, args.lam = demo["batch_size"], demo["lr"], demo["t"], args.lam or demo["lam"]
    else:
        model, dataset, subset = ("resnet20", "synthetic", 50) if args.fast else (args.model, "cifar10", 0)
        epochs = 2 if args.fast else args.epochs
    data = polar.load_dataset(dataset, device, subset=subset or None, test_subset=100 if args.explorer else None)
    runs = [_duel(args, model, dataset, subset, epochs, int(seed), data, device) for seed in args.seeds.split(",")]
    result = {"model": model, "dataset": data.source, "device": str(device),
              "card": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "epochs": epochs,
              "threads": torch.get_num_threads()}
    if len(runs) == 1 and not args.explorer:
        result.update(runs[0])
    else:  # what pruning cost each method, per seed, in points of test accuracy
        lost = {row["method"]: [] for row in runs[0]["table"]}
        for run in runs:
            for row in run["table"]:
                lost[row["method"]].append(round(100 * (row["acc_unpruned"] - row["acc_pruned"]), 1))
        result.update(runs=runs, points_lost_by_seed=lost)
        print("points of accuracy lost by pruning, per seed:", lost)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"duel_{'explorer_' if args.explorer else ''}{device.type}.json"
    (out / name).write_text(json.dumps(result, indent=1) + "\n")


def _duel(args: argparse.Namespace, model: str, dataset: str, subset: int, epochs: int, seed: int,
          data: polar.DeviceDataset, device: torch.device) -> dict:
    """One duel with ``seed``: trained, polarization pruned at its valley, L1 at the FLOPs that reached."""
    base = polar.TrainConfig(model=model, dataset=dataset, subset=subset, epochs=epochs, batch_size=args.batch_size,
                             lr=args.lr, lr_schedule="cosine", weight_decay=1e-4, bn_wd=False, t=args.t, seed=seed,
                             device=str(device), init="pretrained" if args.explorer else "")
    lam = args.lam or (0.01 if args.fast else 0) or polar.scale_lambda(polar.PAPER_SETTINGS[model]["lam"], base,
                                         data.steps_per_epoch(args.batch_size))
    cfgs = {"polar": dataclasses.replace(base, reg="polar", lam=lam),
            "l1": dataclasses.replace(base, reg="l1", lam=polar.l1_lambda_for(lam, args.t))}
    print(f"{model} on {data.source}, {device}, {epochs} epochs, seed {seed}, λ {lam:.4g} (L1 {cfgs['l1'].lam:.4g}), "
          f"t {args.t}")
    t0 = time.perf_counter()
    duel = polar.Duel(cfgs, data)
    epochs_seen = []
    for method, event in duel:
        if isinstance(event, polar.EpochEvent):
            epochs_seen.append({"method": method, **event.metrics()})
            print(f"  {method} epoch {event.epoch}: test acc {event.test_acc:.4f}, {event.seconds:.1f}s")
    polar.synchronize(device)
    seconds = time.perf_counter() - t0
    try:
        threshold = polar.find_threshold(duel.models["polar"], "valley")
    except polar.NoValleyError:
        threshold = polar.find_threshold(duel.models["polar"], "percent", 0.4)
    table, _ = polar.matched_flops(duel.models, data, threshold=threshold, reference="polar")
    print(f"duel: {seconds:.1f}s for both; threshold {threshold:.3f}\n{table.to_string(index=False)}")
    return {"seed": seed, "seconds": seconds, "lam": lam, "l1_lam": cfgs["l1"].lam, "t": args.t,
            "threshold": threshold, "table": table.to_dict(orient="records"), "epochs_seen": epochs_seen}


if __name__ == "__main__":
    main()
