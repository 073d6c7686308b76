"""The explorer's steps after training — prune at matched FLOPs, fine-tune, the trade-off curve, ONNX export,
latency, pruning to a measured speed-up — and the points of a t/λ grid, as tasks a worker process runs
(``python -m polar.duel_process``, sent ``("task", spec)``).

Why a worker: each of these runs forward passes over a dataset (or times the network), which in a web server would
hold its CPU for seconds per click and stack up when a class clicks at once. A worker runs under the same pool rules
as training (a slot, a queue, killed when its tab is gone), with its own torch threads (the latency task also
sets the steady allocator, which stays with the short-lived worker).

A task is a plain dict in and a plain dict out — weights travel as ``weights_blob`` bytes, tables as lists of
records — so nothing pickled beyond builtins crosses the socket. ``run_task`` reports progress through a callback
``progress(done_share, text, partial=None)`` (``partial``: a first part of the result the page can show while the
rest is measured, e.g. Prune's table before its β-dropped column); the caller may stop the process at any
moment (only a grid point writes to disk: its JSON, atomically, once the point is done).
"""
from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .compare import finetune_config, matched_flops
from .config import TrainConfig
from .device_dataset import DeviceDataset
from .errors import ConfigError
from .evaluate import evaluate
from .export import export_onnx
from .flops import cost
from .grid import tl_grid
from .latency import deployed_latency, steady_allocator
from .latency_table import latency_table, measured_speedup
from .pretrained import initial_model
from .saving import read_weights, save, weights_blob
from .speedup import pruned_for_speedup
from .sweep import sweep
from .train import EpochEvent, StepEvent, train

__all__ = ["run_task", "task_data", "TASKS", "TRAINING_TASKS", "HOSTED_TASKS"]



class Progress(Protocol):
    def __call__(self, share: float, text: str, partial: dict[str, Any] | None = None) -> None: ...



def _prune(spec: dict[str, Any], data: DeviceDataset, progress: Progress) -> dict[str, Any]:
    """Polarization at ``threshold``, L1 to the FLOPs reduction that reached (``polar.matched_flops``); the
    unpruned networks' accuracies come with the spec when the trainer measured them."""
    models = read_weights(spec["models"])
    progress(0.0, "pruning both networks and measuring them")
    table, small = matched_flops(
        models, data, threshold=float(spec["threshold"]), reference=spec["reference"],
        accuracies=spec.get("accuracies"),
        on_pruned=lambda first: progress(0.5, "measuring them with the removed channels' β dropped",
                                         {"table": first.to_dict("records")}))
    buffer = io.BytesIO()
    save(small[spec["reference"]], buffer)
    return {"table": table.to_dict("records"), "pruned": weights_blob(small), "download": buffer.getvalue()}


def _finetune(spec: dict[str, Any], data: DeviceDataset, progress: Progress) -> dict[str, Any]:
    """Each pruned network for ``epochs`` with the one fine-tune recipe (``polar.finetune_config``)."""
    models = read_weights(spec["pruned"])
    accuracy = {}
    for i, (method, model) in enumerate(models.items()):
        cfg = finetune_config(TrainConfig.from_dict(spec["cfgs"][method]), epochs=int(spec["epochs"]),
                              lr=float(spec["lr"]))
        total = cfg.epochs * data.steps_per_epoch(cfg.batch_size)
        for event in train(cfg, model=model, data=data):
            if isinstance(event, StepEvent):
                progress((i + event.step / total) / len(models), f"fine-tuning {method}: step {event.step}/{total}")
            elif isinstance(event, EpochEvent):  # every fine-tune has one: its last is the accuracy reported
                accuracy[method] = event.test_acc
    return {"accuracy": accuracy, "pruned": weights_blob(models)}


def _tradeoff(spec: dict[str, Any], data: DeviceDataset, progress: Progress) -> dict[str, Any]:
    """``polar.sweep`` of each model over the FLOPs reductions, one row at a time (with ``zero_beta``, default
    true, the β-dropped accuracies too); the unpruned accuracies come with the spec where the trainer measured
    them."""
    models = read_weights(spec["models"])
    known = spec.get("accuracies") or {}
    reductions = [float(r) for r in spec["reductions"]]
    total, curves = len(models) * len(reductions), {}
    for i, (name, model) in enumerate(models.items()):
        rows: list[dict] = []

        def measured(row: dict, name: str = name, rows: list = rows, i: int = i) -> None:
            rows.append(row)
            progress((i * len(reductions) + len(rows)) / total,
                     f"{name}: {row['flops_reduction']:.0%} of FLOPs removed, {row['acc_folded']:.1%} accurate")

        progress(i * len(reductions) / total, f"sweeping {name}")
        curves[name] = sweep(model, data, reductions=reductions, on_row=measured, acc_unpruned=known.get(name),
                             measure_zero_beta=bool(spec.get("zero_beta", True))).to_dict("records")
    return {"curves": curves}


def _export(spec: dict[str, Any], data: DeviceDataset, progress: Progress) -> dict[str, Any]:
    """The pruned reference network as ONNX bytes."""
    model = read_weights(spec["pruned"])[spec["reference"]]
    progress(0.0, "exporting to ONNX")
    with tempfile.TemporaryDirectory() as folder:
        return {"onnx": export_onnx(model, Path(folder) / "model.onnx").read_bytes()}


def _latency(spec: dict[str, Any], data: DeviceDataset, progress: Progress) -> dict[str, Any]:
    """Original vs pruned, PyTorch and ONNX Runtime (``polar.deployed_latency``), in steady state: this process
    is short-lived, so the allocator setting stays with it."""
    steady_allocator()
    original = read_weights(spec["models"])[spec["reference"]]
    pruned = read_weights(spec["pruned"])[spec["reference"]]
    progress(0.0, "timing both networks in alternating rounds")
    return {"latency": deployed_latency(original, pruned, repeats=int(spec.get("repeats", 3))).to_dict("records")}


REPLANS = 2  # the speed-up task's re-plans for a measured shortfall (polar.pruned_for_speedup): a few seconds each


def _speedup(spec: dict[str, Any], data: DeviceDataset, progress: Progress) -> dict[str, Any]:
    """The reference network pruned for a measured ``speedup`` (``polar.pruned_for_speedup``) in ``runtime`` at
    ``batch_size``, beside the FLOPs-threshold network Prune made from it: each one's MACs, test accuracy before
    fine-tuning and speed-up over the unpruned network measured here in alternating rounds, with the latency
    table's prediction for the first (measured, and planned again for a shortfall, while it is chosen). The table
    is measured once per machine, runtime and batch (tens of seconds for a ResNet-20), then read from the
    cache."""
    original = read_weights(spec["models"])[spec["reference"]]
    by_threshold = read_weights(spec["pruned"])[spec["reference"]]
    runtime, batch_size = spec["runtime"], int(spec["batch_size"])
    progress(0.0, f"the latency table of {runtime} at batch {batch_size} (measured once on this machine, then cached)")
    table = latency_table(original, runtime, batch_size)
    progress(0.5, "choosing the widths, pruning and measuring the result (planned again for a shortfall)")
    done = pruned_for_speedup(original, float(spec["speedup"]), runtime, batch_size, table=table, replans=REPLANS)
    rows = []
    for i, (name, model) in enumerate((("speed-up target", done.model), ("FLOPs threshold (Prune)", by_threshold))):
        progress(0.6 + 0.2 * i, f"measuring the {name} network against the original")
        rows.append({"pruning": name, "macs": cost(model).macs, "acc_pruned": evaluate(model.to(data.device), data)[1],
                     "predicted_speedup": done.predicted_speedup if model is done.model else None,
                     "measured_speedup": measured_speedup(original, model, runtime, batch_size)})
    buffer = io.BytesIO()
    save(done.model, buffer)
    return {"rows": rows, "granularity": table.granularity, "fit_error": table.fit_error,
            "asked_of_table": done.asked_of_table, "download": buffer.getvalue()}


def _grid_point(spec: dict[str, Any], data: DeviceDataset, progress: Progress) -> dict[str, Any]:
    """One (λ, t, seed) of a t/λ grid (``polar.tl_grid`` with one value each), from the start ``spec["cfg"]``
    names, cached in ``spec["folder"]`` (read back if it is already there)."""
    base = TrainConfig.from_dict(spec["cfg"])
    lam, t, seed = float(spec["lam"]), float(spec["t"]), int(spec["seed"])
    progress(0.0, f"training λ = {lam:g}, t = {t:g}, seed {seed}")
    start = initial_model(base, data.num_classes).to(data.device)
    return next(tl_grid(base, [lam], [t], data, start, [seed], cache=spec["folder"]))


TRAINING_TASKS = frozenset({"finetune", "grid_point"})  # the tasks that read the training split

# The tasks a *paused* trainer may run itself, on the dataset it holds (``python -m polar.duel_process``): a fresh
# worker would first load and normalise the data (~1-2 s of a core for the duel's training subset) and build its
# kernels; the trainer has done both. They only read the weights their spec carries, so the duel's own models are
# untouched. Export and latency keep a short-lived worker: the exporter's state and the steady allocator should
# not stay in a process that goes on training.
HOSTED_TASKS = frozenset({"prune", "finetune", "tradeoff"})


TASKS: dict[str, Callable[[dict[str, Any], DeviceDataset, Progress], dict[str, Any]]] = {
    "prune": _prune, "finetune": _finetune, "tradeoff": _tradeoff, "export": _export, "latency": _latency,
    "speedup": _speedup, "grid_point": _grid_point}


def task_data(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``polar.load_dataset`` arguments a task needs: the spec's own for a task that trains; one training image
    per class for one that only evaluates or times. Normalising the duel's training subset is most of a worker's
    start (~1 s of a core for 10,000 images, padded to 40x40 in float32); the normalisation statistics come from
    the full training split either way (stored in the cache), so test accuracy is the same."""
    return spec["data"] if spec.get("kind") in TRAINING_TASKS else {**spec["data"], "subset": 1}


def run_task(spec: dict[str, Any], data: DeviceDataset, progress: Progress) -> dict[str, Any]:
    """Run ``spec["kind"]`` (one of :data:`TASKS`) on ``data``; the result is a dict of builtins and bytes."""
    if spec.get("kind") not in TASKS:
        raise ConfigError(f"unknown task {spec.get('kind')!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[spec["kind"]](spec, data, progress)
