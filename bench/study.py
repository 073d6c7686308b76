"""A fair study: polarization vs L1 vs uniform width at matched FLOPs, each method at its own λ, with seeds.

    python bench/study.py                 # ResNet-20 on CIFAR-10 from the shipped baseline (~1.5-2 h, 2-core CPU)
    python bench/study.py --fast          # tiny and synthetic: the test suite's version
    python bench/study.py --report        # tables, verdict and figure from the runs finished so far (trains nothing)

Protocol (fixed in this docstring before any of its numbers existed; README quotes it):
- Start: the trained ResNet-20 baseline Polar ships (``polar.pretrained``), full CIFAR-10. Sparse training from it
  with one schedule for every method: SPARSE below (epochs, lr, batch size, weight decay), seed 0 first.
- Grid (GRID below; every point is kept and reported): polarization at 4 λ with t = 1.2 plus one λ at t = 1.4; L1
  at 4 λ from "γ barely move" to "γ collapse".
- Pruning targets: 50 % and 70 % FLOPs reduction (``threshold_for_reduction``), and polarization also at its own
  valley. Accuracy on the full test split before fine-tuning (folded constants, and dropped as the paper's code
  does: ``zero_beta``) and after one fine-tune recipe, FINETUNE below, the same for every pruned network.
- Uniform width (the paper's UCS baseline, Table 3): the same network with every prunable layer (the channels
  pruning may remove: both BNs of each block) scaled by one factor to the target FLOPs; residual stream, stem and
  classifier keep their widths, as under pruning. Trained from scratch with UCS below. Budget difference, stated:
  UCS gets UCS["epochs"] epochs from scratch; the pruned networks got the baseline's 160 epochs, then sparse training
  and fine-tuning.
- Choice rule: per method and target, the grid point with the best accuracy after fine-tuning at seed 0; that point
  is rerun with seeds 1 and 2 (sparse training order and fine-tuning change with the seed; the start does not), and
  UCS runs with seeds 0-2. The headline table is the mean ± standard deviation over the 3 seeds.
- Verdict (``verdict`` below): at each target, method A beats B when its mean exceeds B's by more than
  sqrt(std_A² + std_B²); otherwise "no clear difference". Computed from the table, never typed.

Each finished run is cached as JSON under results/<study>/runs/ the moment it ends: an interrupted study resumes and a
rerun skips finished points. Outputs: points.csv (every run and target), summary.csv (the headline), verdict.txt,
study.png (accuracy vs FLOPs reduction, and the γ of each chosen point).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import polar  # noqa: E402
from polar.atomic import atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GRID = {"polar": [{"lam": lam, "t": 1.2} for lam in (0.005, 0.01, 0.02, 0.04)] + [{"lam": 0.02, "t": 1.4}],
        "l1": [{"lam": lam} for lam in (0.001, 0.003, 0.01, 0.03)]}
TARGETS = (0.5, 0.7)
SEEDS = (0, 1, 2)
SPARSE = dict(epochs=2, batch_size=128, lr=0.02, lr_schedule="cosine", weight_decay=1e-4, bn_wd=False)
FINETUNE = dict(epochs=1, lr=0.01)  # on top of polar.finetune_config's demo-finetune recipe
UCS = dict(epochs=15, batch_size=128, lr=0.1, lr_schedule="cosine", weight_decay=5e-4, bn_wd=False)
FAST = dict(SPARSE=dict(SPARSE, epochs=1, batch_size=32), UCS=dict(UCS, epochs=1, batch_size=32),
            GRID={"polar": [{"lam": 0.005, "t": 1.2}, {"lam": 0.02, "t": 1.2}, {"lam": 0.02, "t": 1.4}],
                  "l1": [{"lam": 0.001}, {"lam": 0.01}]})


@dataclasses.dataclass
class Study:
    """What every run of one study shares, and where its finished runs are cached."""

    data: polar.DeviceDataset
    start: torch.nn.Module
    base: polar.TrainConfig  # the sparse-training config without method, λ, t, seed
    ucs: polar.TrainConfig
    cache: Path

    def cached(self, key: str, compute) -> dict:
        path = self.cache / f"{key}.json"
        if path.exists():
            return json.loads(path.read_text())
        t0 = time.perf_counter()
        result = {**compute(), "key": key, "seconds": round(time.perf_counter() - t0, 1)}
        atomic_write_text(json.dumps(result, indent=1) + "\n", path)
        print(f"  {key}: done in {result['seconds']:.0f}s", flush=True)
        return result


def _train(cfg: polar.TrainConfig, model: torch.nn.Module, data: polar.DeviceDataset) -> torch.nn.Module:
    for _ in polar.train(cfg, model=model, data=data):
        pass
    return model


def sparse_run(study: Study, method: str, params: dict, seed: int) -> dict:
    """Sparse-train the start under one grid point, prune it to each target, fine-tune each pruned network."""
    cfg = dataclasses.replace(study.base, reg=method, seed=seed, **params)
    key = f"{method}_lam{cfg.lam:g}" + (f"_t{cfg.t:g}" if method == "polar" else "") + f"_seed{seed}"

    def compute() -> dict:
        model = _train(cfg, copy.deepcopy(study.start), study.data)
        rows = []
        targets: list[tuple[str, float | None]] = [(f"{t:.0%}", t) for t in TARGETS]
        if method == "polar":
            targets.append(("valley", None))
        for name, target in targets:
            try:
                threshold = (polar.find_threshold(model, "valley") if target is None
                             else polar.threshold_for_reduction(model, target))
            except polar.NoValleyError:
                rows.append({"target": name, "threshold": None})
                continue
            table, small = polar.matched_flops({method: model}, study.data, threshold=threshold, reference=method)
            row = table.iloc[0].to_dict()
            tuned = _train(polar.finetune_config(cfg, **FINETUNE), small[method], study.data)
            rows.append({"target": name, "threshold": threshold, "flops_reduction": row["flops_reduction"],
                         "acc_unpruned": row["acc_unpruned"], "acc_pruned": row["acc_pruned"],
                         "acc_zero_beta": row["acc_zero_beta"], "acc_finetuned": polar.evaluate(tuned, study.data)[1]})
        gammas = polar.gamma_snapshot(model)
        return {"method": method, **params, "seed": seed, "rows": rows,
                "gamma_counts": polar.gamma_histogram(gammas, bins=50)[0].tolist()}
    return study.cached(key, compute)


def ucs_run(study: Study, target: float, seed: int) -> dict:
    def compute() -> dict:
        scale, model = polar.uniform_width_model("resnet20", target, num_classes=study.data.num_classes)
        full = polar.cost(polar.create_model("resnet20", num_classes=study.data.num_classes))
        _train(dataclasses.replace(study.ucs, seed=seed), model, study.data)
        return {"method": "ucs", "seed": seed, "scale": scale, "rows": [{
            "target": f"{target:.0%}", "flops_reduction": polar.flops_reduction(full, polar.cost(model)),
            "acc_finetuned": polar.evaluate(model, study.data)[1]}]}
    return study.cached(f"ucs_{target:.0%}_seed{seed}".replace("%", "pct"), compute)


def points_table(results: list[dict]) -> pd.DataFrame:
    rows = [{"method": r["method"], "lam": r.get("lam"), "t": r.get("t"), "seed": r["seed"], **row}
            for r in results for row in r["rows"]]
    return pd.DataFrame(rows)


def choose(points: pd.DataFrame) -> dict[tuple[str, str], dict]:
    """Per method and target, the seed-0 grid point with the best accuracy after fine-tuning (the choice rule)."""
    chosen = {}
    seed0 = points[(points["seed"] == 0) & (points["method"] != "ucs") & points["acc_finetuned"].notna()]
    for (method, target), group in seed0.groupby(["method", "target"]):
        best = group.loc[group["acc_finetuned"].idxmax()]
        chosen[(method, target)] = {"lam": float(best["lam"])} | ({"t": float(best["t"])} if method == "polar" else {})
    return chosen


def summarize(points: pd.DataFrame, chosen: dict[tuple[str, str], dict]) -> pd.DataFrame:
    rows = []
    for (method, target), params in sorted(chosen.items()):
        mine = points[(points["method"] == method) & (points["target"] == target)]
        for key, value in params.items():
            mine = mine[mine[key] == value]
        rows.append(_mean_std(mine, method, target, params))
    for target, mine in points[points["method"] == "ucs"].groupby("target"):
        rows.append(_mean_std(mine, "ucs", target, {}))
    return pd.DataFrame(rows)


def _mean_std(rows: pd.DataFrame, method: str, target: str, params: dict) -> dict:
    out = {"method": method, "target": target, "params": json.dumps(params), "seeds": len(rows)}
    for column in ("flops_reduction", "acc_pruned", "acc_zero_beta", "acc_finetuned"):
        values = [float(v) for v in rows[column]] if column in rows else []
        values = [v for v in values if not math.isnan(v)]
        out[column] = statistics.mean(values) if values else float("nan")
        out[column + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def verdict(summary: pd.DataFrame) -> list[str]:
    """At each matched target: polarization vs L1, and polarization vs uniform width, after fine-tuning."""
    lines = []
    table = summary.set_index(["method", "target"])
    for target in sorted(set(summary["target"]) - {"valley"}):
        for other in ("l1", "ucs"):
            if ("polar", target) not in table.index or (other, target) not in table.index:
                continue
            a, b = table.loc[("polar", target)], table.loc[(other, target)]
            if min(a["seeds"], b["seeds"]) < len(SEEDS):
                lines.append(f"VERDICT at {target} FLOPs reduction, polarization vs {other.upper()}: pending "
                             f"({int(a['seeds'])} and {int(b['seeds'])} of {len(SEEDS)} seeds finished)")
                continue
            diff = 100 * (a["acc_finetuned"] - b["acc_finetuned"])
            noise = 100 * math.hypot(a["acc_finetuned_std"], b["acc_finetuned_std"])
            if diff > noise:
                outcome = f"polarization beats {other.upper()} by {diff:.2f} ± {noise:.2f} points"
            elif diff < -noise:
                outcome = f"{other.upper()} beats polarization by {-diff:.2f} ± {noise:.2f} points"
            else:
                outcome = f"no clear difference between polarization and {other.upper()} ({diff:+.2f} ± {noise:.2f})"
            lines.append(f"VERDICT at {target} FLOPs reduction, after fine-tuning: {outcome} "
                         f"(means of {int(a['seeds'])} and {int(b['seeds'])} seeds)")
    return lines


METHOD_NAMES = {"polar": "polarization", "l1": "L1 (network slimming)", "ucs": "uniform width (UCS)"}


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as the README shows it (table.md): mean ± std in percent, a dash where a method has no value."""
    def cell(row: pd.Series, column: str) -> str:
        mean, std = 100 * row[column], 100 * row[column + "_std"]
        if math.isnan(mean):
            return "–"
        return f"{mean:.2f} ± {std:.2f}" if row["seeds"] > 1 else f"{mean:.2f}"

    def setting(row: pd.Series) -> str:
        if row["method"] == "ucs":
            return f"{UCS['epochs']} epochs from scratch"
        params = json.loads(row["params"])
        return f"λ {params['lam']:g}" + (f", t {params['t']:g}" if "t" in params else "")

    lines = ["| target | method | chosen setting | seeds | FLOPs reduction | acc after pruning (folded) | "
             "acc, β dropped | acc after fine-tuning |", "|---|---|---|---|---|---|---|---|"]
    order = {"50%": 0, "70%": 1, "valley": 2}
    for _, row in sorted(summary.iterrows(), key=lambda r: (order.get(r[1]["target"], 3), r[1]["method"])):
        lines.append(f"| {row['target']} | {METHOD_NAMES[row['method']]} | {setting(row)} | {int(row['seeds'])} | "
                     f"{100 * row['flops_reduction']:.1f} % | {cell(row, 'acc_pruned')} | "
                     f"{cell(row, 'acc_zero_beta')} | {cell(row, 'acc_finetuned')} |")
    return "\n".join(lines) + "\n"


def figure(points: pd.DataFrame, summary: pd.DataFrame, results: list[dict], chosen: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = {"polar": "tab:blue", "l1": "tab:orange", "ucs": "tab:green"}
    for ax, column, title in ((axes[0], "acc_pruned", "before fine-tuning (folded)"),
                              (axes[1], "acc_finetuned", "after fine-tuning")):
        for method, group in points.groupby("method"):
            ax.scatter(100 * group["flops_reduction"], 100 * group[column], s=12, alpha=0.35, color=colors[method])
        for _, row in summary.iterrows():
            ax.errorbar(100 * row["flops_reduction"], 100 * row[column], yerr=100 * row[column + "_std"], fmt="o",
                        color=colors[row["method"]], capsize=4, label=f"{row['method']} {row['target']}")
        ax.set(xlabel="FLOPs reduction (%)", ylabel="test accuracy (%)", title=title)
    axes[1].legend(fontsize=7)
    for (method, target), params in sorted(chosen.items()):
        if target != "50%":
            continue
        match = [r for r in results if r["method"] == method and r["seed"] == 0
                 and all(r.get(k) == v for k, v in params.items())]
        if match:
            axes[2].stairs(match[0]["gamma_counts"], [i / 50 for i in range(51)], color=colors[method],
                           label=f"{method} {params}")
    axes[2].set(xlabel="γ", ylabel="channels", yscale="log", title="γ after sparse training (chosen at 50 %)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="tiny and synthetic (the test suite)")
    parser.add_argument("--report", action="store_true",
                        help="write the tables, verdict and figure from the finished runs only; train nothing")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", default=str(REPO / "results"), help="results/<study>/ is written under this")
    args = parser.parse_args()
    sparse, ucs, grid = (FAST["SPARSE"], FAST["UCS"], FAST["GRID"]) if args.fast else (SPARSE, UCS, GRID)
    dataset, subset = ("synthetic", 20) if args.fast else ("cifar10", 0)
    if args.report:
        out = Path(args.results) / f"study_resnet20_{dataset}"
        write_outputs([json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))], out)
        return
    device = polar.resolve_device(args.device)
    data = polar.load_dataset(dataset, device, subset=subset or None)
    start = polar.create_model("resnet20", num_classes=data.num_classes) if args.fast else polar.pretrained("resnet20")
    name = f"study_resnet20_{dataset}"
    out = Path(args.results) / name
    (out / "runs").mkdir(parents=True, exist_ok=True)
    common = dict(model="resnet20", dataset=dataset, subset=subset, device=str(device))
    study = Study(data, start.to(device), polar.TrainConfig(**common, **sparse),
                  polar.TrainConfig(**common, **ucs, reg="none", lam=0.0), out / "runs")
    print(f"{name}: start at {polar.evaluate(study.start, data)[1]:.2%} test accuracy on {data.source}", flush=True)
    results = [sparse_run(study, method, params, 0) for method, points in grid.items() for params in points]
    chosen = choose(points_table(results))
    for method, params in sorted({(m, json.dumps(p, sort_keys=True)) for (m, _), p in chosen.items()}):
        results += [sparse_run(study, method, json.loads(params), seed) for seed in SEEDS[1:]]
    results += [ucs_run(study, target, seed) for target in TARGETS for seed in SEEDS]
    write_outputs(results, out)


def write_outputs(results: list[dict], out: Path) -> None:
    """points.csv, summary.csv, table.md, verdict.txt and study.png from the runs' results (all of them, or those
    finished)."""
    points = points_table(results).sort_values(["method", "lam", "t", "seed", "target"]).reset_index(drop=True)
    chosen = choose(points)
    summary = summarize(points, chosen)
    points.to_csv(out / "points.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    atomic_write_text(markdown_table(summary), out / "table.md")
    lines = verdict(summary)
    atomic_write_text("\n".join(lines) + "\n", out / "verdict.txt")
    figure(points, summary, results, chosen, out / "study.png")
    print(summary.to_string(index=False))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
