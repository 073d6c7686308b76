"""The explorer page: the duel (polarization vs. L1 from the same start), live γ histograms, then pruning."""
from __future__ import annotations

import io
import json
import os
import time
import uuid
from pathlib import Path
from typing import Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

import charts
import polar
from settings import Settings
import worker
from worker import DuelTrainer

RUNS = Path(os.environ.get("POLAR_RUNS", "runs")) / "app"
TEST_PER_CLASS = 100  # a balanced 1,000-image test subset keeps per-epoch evaluation interactive


@st.cache_resource(show_spinner="Loading the dataset onto the device…")
def device_data(dataset: str, subset: int, device: str) -> tuple[polar.DeviceDataset, str]:
    """The dataset on the device, shared read-only by all sessions; falls back to synthetic data offline."""
    try:
        return polar.load_dataset(dataset, polar.resolve_device(device), subset=subset or None,
                                  test_subset=TEST_PER_CLASS), ""
    except polar.DatasetError as err:
        data = polar.load_dataset("synthetic", polar.resolve_device(device), subset=subset or None)
        return data, f"{dataset} is not available here ({err}). Showing the **synthetic** dataset instead."


@st.cache_resource
def warm_up_trainers() -> None:
    """Once per server: start the process trainers are forked from (it imports torch while the user reads)."""
    worker.warm_up()


def duel_configs(settings: Settings) -> dict[str, polar.TrainConfig]:
    """The settings' two configs, on the synthetic dataset when the chosen one is not available."""
    cfgs = settings.configs()
    if device_data(settings.dataset, settings.subset, settings.device)[1]:
        cfgs = {m: polar.TrainConfig(**{**c.to_dict(), "dataset": "synthetic"}) for m, c in cfgs.items()}
    return cfgs


def new_duel(settings: Settings) -> DuelTrainer | None:
    """A duel for the current settings, not started yet (it shows the initial γ); None with a message when the
    settings cannot make one."""
    try:
        cfgs = duel_configs(settings)
        data = device_data(settings.dataset, settings.subset, settings.device)[0]
    except (polar.ConfigError, ValueError) as err:
        st.error(f"Cannot start: {err}")
        return None
    run_root = RUNS / f"{time.strftime('%Y%m%d-%H%M%S')}-{settings.model}-{uuid.uuid4().hex[:6]}"
    try:
        return DuelTrainer(cfgs, data, run_root)
    except ValueError as err:
        st.error(f"Cannot start: {err}")
        return None


settings: Settings = st.session_state["settings"]
st.title("Polarization vs. L1: watch γ split")
st.markdown("Both networks start from **the same weights** and see **the same batches**; the only difference is "
            "the regularizer on the BatchNorm scaling factors γ. Polarization should split γ into a spike at 0 and a "
            "mode away from it; L1 shrinks them all.")

url_errors = st.session_state.pop("_url_errors", [])
if url_errors:
    st.warning(f"Ignored URL settings {', '.join(url_errors)}: out of range or unreadable; using the defaults.")
try:
    settings.configs()
    settings_ok = True
except (polar.ConfigError, ValueError) as err:
    st.error(f"Fix the settings: {err}")
    settings_ok = False

data, fallback = device_data(settings.dataset, settings.subset, settings.device)
if fallback:
    st.warning(fallback)
device = polar.resolve_device(settings.device)
st.caption(f"Data: {data.source} · {data.num_train:,} training images, {len(data.test_y):,} test images · "
           f"device: **{device}**" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

warm_up_trainers()
duel: DuelTrainer | None = st.session_state["duel"]
if duel is None or duel.snapshot().state == "idle":  # an idle duel follows the settings and shows its initial γ
    if duel is not None and (not settings_ok or duel.cfgs != duel_configs(settings)):
        duel.stop()
        duel = st.session_state["duel"] = None
    if duel is None and settings_ok:
        duel = st.session_state["duel"] = new_duel(settings)
    if duel is not None:
        duel.prepare()  # its trainer process gets ready while the user reads the page
cols = st.columns(4)
if cols[0].button("▶ Start", type="primary", width="stretch",
                  disabled=duel is not None and duel.snapshot().state in ("running", "done")):
    if duel is None or duel.snapshot().state in ("stopped", "error"):
        duel = st.session_state["duel"] = new_duel(settings)
        st.session_state.update(prune_result=None, tradeoff=None)
    if duel is not None:
        duel.start()
if cols[1].button("⏸ Pause", width="stretch", disabled=duel is None or duel.snapshot().state != "running"):
    duel.pause()
if cols[2].button("⏭ Step one epoch", width="stretch",
                  disabled=duel is not None and duel.snapshot().state in ("running", "done")):
    if duel is None:
        duel = st.session_state["duel"] = new_duel(settings)
    if duel is not None:
        duel.step_epoch()
if cols[3].button("⟲ Reset", width="stretch", disabled=duel is None):
    duel.stop()
    duel = st.session_state["duel"] = new_duel(settings) if settings_ok else None
    if duel is not None:
        duel.prepare()
    st.session_state.update(prune_result=None, tradeoff=None)

c1, c2 = st.columns(2)
log_y = c1.toggle("log-scale counts", value=False)
c2.toggle("per-layer γ", value=False, key="show_layers", help="one row per sparse BN: where its γ lie")
running = duel is not None and duel.snapshot().state == "running"
getting_ready = duel is not None and duel.snapshot().state == "idle" and not duel.snapshot().ready


CURVES_EVERY = 10  # published steps between redraws of the loss curves while training (the browser's CPU is scarce)


def figure(name: str, key: tuple, build: Callable[[], go.Figure]) -> go.Figure:
    """A figure rebuilt only when ``key`` (what it shows) changed: the fragment polls ~3 times a second and
    building Plotly figures is most of a rerun's cost."""
    cached = st.session_state.setdefault("_figures", {}).get(name)
    if cached is None or cached[0] != key:
        cached = st.session_state["_figures"][name] = (key, build())
    return cached[1]


@st.fragment(run_every=0.3 if running or getting_ready else None)
def live() -> None:
    """Redraws from the latest snapshot; polls ~3 times a second while training runs (or the trainer gets ready)."""
    duel: DuelTrainer | None = st.session_state["duel"]
    if duel is None:
        st.info("Nothing to train until the settings are fixed (see the message above).")
        return
    snap = duel.snapshot()
    if snap.state == "idle":
        st.info("Press **Start** to train both networks (or **Step one epoch**). Below: γ before training. "
                + ("Trainer ready." if snap.ready else "Trainer getting ready…"))
    done_epochs = sorted({e["epoch"] for e in snap.epochs})
    progress = snap.step / max(1, snap.total_steps)
    st.progress(min(1.0, progress), text=f"{snap.state} · step {snap.step}/{snap.total_steps} · epoch "
                f"{snap.epoch}/{duel.cfgs['polar'].epochs}" + (f" · {snap.seconds_per_epoch:.1f} s per epoch "
                                                               f"(both networks)" if snap.seconds_per_epoch else ""))
    if snap.state == "error":
        st.error(f"Training stopped: {snap.message}")
    replay = None
    if done_epochs and snap.state != "running":
        replay = st.select_slider("Replay γ at the end of epoch", options=["latest"] + done_epochs, value="latest")
    hist = snap.hist
    if replay not in (None, "latest"):
        hist = {e["method"]: e for e in snap.epochs if e["epoch"] == replay}
    threshold = st.session_state.get("threshold")
    shown = (id(duel), snap.published_at, len(snap.epochs), replay)
    st.plotly_chart(figure("histograms", (*shown, threshold, log_y),
                           lambda: charts.histograms(hist, duel.upper, threshold, log_y)), width="stretch",
                    key="histograms")
    yes = {True: "yes", False: "no"}
    st.caption(f"step {snap.step} · split into a spike at 0 and a mode away: polarization "
               f"{yes[hist['polar']['split']]} · L1 {yes[hist['l1']['split']]} · "
               f"updated {time.strftime('%H:%M:%S', time.localtime(snap.published_at))}.{int(snap.published_at * 10) % 10}")
    if snap.steps or snap.epochs:
        steps_shown = len(snap.steps) // CURVES_EVERY if snap.state == "running" else len(snap.steps)
        st.plotly_chart(figure("curves", (id(duel), steps_shown, len(snap.epochs)),
                               lambda: charts.curves(snap.steps, snap.epochs)), width="stretch", key="curves")
    if st.session_state.get("show_layers"):
        st.plotly_chart(figure("layers", shown, lambda: charts.layer_heatmaps(hist, duel.upper)), width="stretch",
                        key="layers")
    if running and snap.state != "running" or getting_ready and snap.ready:
        st.rerun()  # training ended or paused, or the trainer is ready: switch the page out of polling mode


live()

# ---------------------------------------------------------------- pruning
st.header("Prune")
if duel is None or duel.snapshot().epoch == 0 and duel.snapshot().state != "paused":
    st.info("Train at least one epoch (or pause) to prune.")
    st.stop()
if not duel.idle():
    st.info("Pause training to prune: the weights are moving.")
    st.stop()

models = duel.models
try:
    valley = polar.find_threshold(models["polar"], "valley", upper=duel.upper)
    valley_note = f"the valley rule gives {valley:.3f}"
except polar.NoValleyError:
    valley, valley_note = 0.05, "no valley yet (γ not polarized): 0.05 as a start"
threshold = st.slider(f"Threshold on γ ({valley_note})", 0.0, duel.upper, value=round(valley, 3), step=0.005,
                      key="threshold")
gammas = {m: torch.cat([bn.weight.detach().cpu() for bn in polar.sparse_bns(models[m])]) for m in models}
c1, c2 = st.columns(2)
for col, m in zip((c1, c2), ("polar", "l1")):
    pruned = int((gammas[m] <= threshold).sum())
    col.metric(f"{charts.NAMES[m]}: channels with γ ≤ threshold", f"{pruned} of {len(gammas[m])}",
               f"{len(gammas[m]) - pruned} kept", delta_color="off")

if st.button("✂ Prune", type="primary"):
    with st.spinner("Pruning both networks and measuring them…"):
        base = polar.cost(models["polar"])
        small = {"polar": polar.prune(models["polar"], threshold)}
        reduction = polar.flops_reduction(base, polar.cost(small["polar"]))
        l1_threshold = polar.threshold_for_reduction(models["l1"], reduction) if reduction > 0 else -1.0
        small["l1"] = polar.prune(models["l1"], l1_threshold)
        rows = []
        for m in ("polar", "l1"):
            c = polar.cost(small[m])
            rows.append({"method": charts.NAMES[m], "threshold": threshold if m == "polar" else l1_threshold,
                         "MACs (M)": c.macs / 1e6, "FLOPs reduction (%)": 100 * polar.flops_reduction(base, c),
                         "params (M)": c.params / 1e6,
                         "acc before pruning (%)": 100 * polar.evaluate(models[m], data)[1],
                         "acc after pruning (%)": 100 * polar.evaluate(small[m], data)[1],
                         "acc after fine-tune (%)": float("nan")})
        st.session_state["prune_result"] = {"rows": rows, "small": small}

result = st.session_state["prune_result"]
if result is not None:
    st.caption("L1 is pruned to the same FLOPs reduction as polarization (matched FLOPs, network slimming's global "
               "threshold). Accuracy on the test subset; pruning folds each removed channel's constant output into "
               "the next layer.")
    table = pd.DataFrame(result["rows"]).set_index("method")
    st.table(table.style.format("{:.3f}", na_rep="–"))
    if st.button("Fine-tune both pruned networks for 1 epoch"):
        with st.spinner("Fine-tuning…"):
            for i, m in enumerate(("polar", "l1")):
                cfg = polar.TrainConfig(**{**duel.cfgs[m].to_dict(), "reg": "none", "lam": 0.0, "epochs": 1,
                                           "lr": 0.01})
                for _ in polar.train(cfg, model=result["small"][m], data=data):
                    pass
                result["rows"][i]["acc after fine-tune (%)"] = 100 * polar.evaluate(result["small"][m], data)[1]
        st.rerun()
    buf = io.BytesIO()
    torch.save(polar.saving.model_record(result["small"]["polar"]), buf)
    d1, d2 = st.columns(2)
    d1.download_button("Download the pruned polarization model (.pt)", buf.getvalue(), "polar_pruned.pt")
    d2.download_button("Download the run's config (.json)", json.dumps(
        {m: c.to_dict() for m, c in duel.cfgs.items()} | {"threshold": threshold, "run_dir": str(duel.run_root)},
        indent=2), "polar_run_config.json", mime="application/json")

if st.button("Trade-off curve (accuracy vs. FLOPs reduction)"):
    with st.spinner("Sweeping FLOPs reductions for both networks…"):
        st.session_state["tradeoff"] = {m: polar.sweep(models[m], data, reductions=[0.2, 0.4, 0.6])
                                        for m in ("polar", "l1")}
if st.session_state["tradeoff"] is not None:
    st.plotly_chart(charts.tradeoff(st.session_state["tradeoff"]), width="stretch", key="tradeoff")
