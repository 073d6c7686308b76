"""The explorer page: the duel (polarization vs. L1 from the same start), live γ histograms, then pruning."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Callable

import charts
import plotly.graph_objects as go
import streamlit as st
import torch
from settings import Settings
from shared import device_data, measured_curves, runs_folder, trainer_pool
from streamlit.runtime.scriptrunner import get_script_run_ctx
from trainers import DuelHandle, Snapshot, TaskSnapshot

import polar
from polar.after_training import REPLANS
from polar.saving import weights_blob

TRADEOFF_REDUCTIONS = [0.2, 0.35, 0.5, 0.65, 0.8]
TASK_LABELS = {"prune": "Prune", "finetune": "Fine-tune", "tradeoff": "Trade-off curve", "export": "ONNX export",
               "latency": "Latency", "speedup": "Prune to a speed-up"}
RUNTIMES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime"}
RESULTS = Path(__file__).resolve().parents[2] / "results"  # committed studies (bench/study.py)


def duel_configs(settings: Settings) -> dict[str, polar.TrainConfig]:
    """The settings' two configs, on the synthetic dataset (from scratch) when the chosen one is not available."""
    cfgs = settings.configs()
    if device_data(settings.dataset, settings.subset, settings.device)[2]:
        cfgs = {m: dataclasses.replace(c, dataset="synthetic", init="") for m, c in cfgs.items()}
    return cfgs


def new_duel(settings: Settings) -> DuelHandle | None:
    """A duel for the current settings, not started yet (it shows the initial γ); None with a message when the
    settings cannot make one."""
    try:
        cfgs = duel_configs(settings)
        data, data_args, _ = device_data(settings.dataset, settings.subset, settings.device)
        run_root = runs_folder() / f"{time.strftime('%Y%m%d-%H%M%S')}-{settings.model}-{uuid.uuid4().hex[:6]}"
        return trainer_pool().new_duel(cfgs, data_args, data, run_root, owner=SESSION)
    except (polar.ConfigError, ValueError) as err:
        st.error(f"Cannot start: {err}")
        return None


def set_duel(duel: DuelHandle | None) -> DuelHandle | None:
    """Make ``duel`` this session's; the one it had is stopped (at most one trainer per session)."""
    previous = st.session_state.get("duel")
    if previous is not None and previous is not duel:
        previous.stop()
    st.session_state["duel"] = duel
    return duel


SESSION = get_script_run_ctx().session_id
settings: Settings = st.session_state["settings"]
st.title("Polarization vs. L1: watch γ split")
st.markdown("Both networks start from **the same weights** and see **the same batches**; the only difference is "
            "the regularizer on the BatchNorm scaling factors γ. Polarization should split γ into a spike at 0 and a "
            "mode away from it; L1 shrinks them all.")

url_errors = st.session_state.get("_url_errors", [])
if url_errors:  # shown until dismissed or a setting changes; what the user typed is text, never Markdown
    st.warning("Ignored URL settings (unreadable, not a finite number, or out of range); using the defaults:")
    st.text("\n".join(url_errors))
    st.button("Dismiss", key="dismiss_url_errors", on_click=lambda: st.session_state.pop("_url_errors", None))
try:
    settings.configs()
    settings_ok = True
except (polar.ConfigError, ValueError) as err:
    st.error(f"Fix the settings: {err}")
    settings_ok = False

data, _, fallback = device_data(settings.dataset, settings.subset, settings.device)
if fallback:
    st.warning(fallback)
if settings.start == "baseline":
    why_not = settings.from_baseline() or (fallback and "the trained baseline learned CIFAR-10, not synthetic data")
    if why_not:
        st.info(f"Starting from scratch: {why_not}.")
    else:
        shipped = polar.list_pretrained()[settings.model]
        st.caption(f"Start: Polar's trained {settings.model} ({100 * shipped['test_acc']:.2f} % on the "
                   f"{shipped['dataset_source']} test split), then a brief sparse training of each copy.")
device = polar.resolve_device(settings.device)
st.caption(f"Data: {data.source} · {data.num_train:,} training images, {len(data.test_y):,} test images · "
           f"device: **{device}**" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

duel: DuelHandle | None = st.session_state["duel"]
if duel is None and st.session_state.get("url_duel"):  # a reload: take this tab's duel back
    duel = set_duel(trainer_pool().adopt(st.session_state.pop("url_duel"), SESSION))
if duel is None or duel.snapshot().state == "idle":  # an idle duel follows the settings and shows its initial γ
    if duel is not None and (not settings_ok or duel.cfgs != duel_configs(settings)):
        duel = set_duel(None)
    if duel is None and settings_ok:
        duel = set_duel(new_duel(settings))
    if duel is not None:
        duel.prepare()  # a trainer process gets ready while the user reads the page (if the server has room)
# the state the buttons are drawn for: read once, and again only after a button acted (the buttons after it must
# follow at once: the live fragment below redraws itself, not them)
state = duel.snapshot().state if duel is not None else None
cols = st.columns(4)
if cols[0].button("▶ Start", type="primary", width="stretch", disabled=state in ("running", "queued", "done")):
    if duel is None or state in ("stopped", "error"):
        duel = set_duel(new_duel(settings))
    if duel is not None:
        duel.start()
        state = duel.snapshot().state
if cols[1].button("⏸ Pause", width="stretch", disabled=state not in ("running", "queued")):
    duel.pause()
    state = duel.snapshot().state
if cols[2].button("⏭ Step one epoch", width="stretch", disabled=state in ("running", "queued", "done")):
    if duel is None:
        duel = set_duel(new_duel(settings))
    if duel is not None:
        duel.step_epoch()
if cols[3].button("⟲ Reset", width="stretch", disabled=duel is None):
    duel = set_duel(new_duel(settings) if settings_ok else None)
    if duel is not None:
        duel.prepare()

if duel is not None:  # the sidebar rewrote the URL from the settings: name this tab's duel in it again
    st.query_params["duel"] = duel.id
c1, c2, c3 = st.columns(3)
log_y = c1.toggle("log-scale counts", value=False)
c2.toggle("per-layer γ", value=False, key="show_layers", help="one row per sparse BN: where its γ lie")
c3.toggle("γ over time", value=False, key="show_timeline",
          help="the histogram at every published step as a heat map: the spike forming, the valley opening")
shown = duel.snapshot() if duel is not None else None  # what this run draws from (after the buttons acted)
running = shown is not None and shown.state in ("running", "queued")
queued = shown is not None and shown.state == "queued"
getting_ready = shown is not None and shown.state == "idle" and not shown.ready and duel.has_trainer()


CURVES_EVERY = 10  # published steps between redraws of the loss curves while training (the browser's CPU is scarce)


def figure(name: str, key: tuple, build: Callable[[], go.Figure]) -> go.Figure:
    """A figure rebuilt only when ``key`` (what it shows) changed: the fragment polls ~3 times a second and
    building Plotly figures is most of a rerun's cost."""
    cached = st.session_state.setdefault("_figures", {}).get(name)
    if cached is None or cached[0] != key:
        cached = st.session_state["_figures"][name] = (key, build())
    return cached[1]


@st.fragment(run_every=1.0 if queued else 0.3 if running or getting_ready else None)
def live() -> None:
    """Redraws from the latest snapshot; polls ~3 times a second while training runs (or the trainer gets ready),
    once a second while queued (a class waiting in the queue must not keep the server busy redrawing)."""
    duel: DuelHandle | None = st.session_state["duel"]
    if duel is None:
        st.info("Nothing to train until the settings are fixed (see the message above).")
        return
    snap = duel.snapshot()
    if snap.state == "idle":
        trainer = ("Trainer ready." if snap.ready else "Trainer getting ready…" if duel.has_trainer()
                   else "The server is busy: a trainer starts when you press Start.")
        st.info(f"Press **Start** to train both networks (or **Step one epoch**). Below: γ before training. {trainer}")
    if snap.state == "queued":
        st.warning(f"The server is busy training other duels: {snap.queue_position} ahead of you. Training starts "
                   "by itself when a trainer is free.")
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
               f"updated {time.strftime('%H:%M:%S', time.localtime(snap.published_at))}"
               f".{int(snap.published_at * 10) % 10}")
    t = duel.cfgs["polar"].t
    st.caption(f"γ exactly at 0: polarization {hist['polar'].get('zero_share', 0):.0%}, L1 "
               f"{hist['l1'].get('zero_share', 0):.0%} · Theorem 3.2, for the regularizer alone at t = {t:g}: "
               f"{polar.optimal_zero_share(t):.0%} at 0, the rest at 1 — the task loss holds up the channels the "
               "network needs, so training keeps fewer at 0 (the paper has no theory for the full objective).")
    if snap.steps or snap.epochs:
        steps_shown = len(snap.steps) // CURVES_EVERY if snap.state == "running" else len(snap.steps)
        st.plotly_chart(figure("curves", (id(duel), steps_shown, len(snap.epochs), snap.start_acc),
                               lambda: charts.curves(snap.steps, snap.epochs, snap.start_acc)), width="stretch",
                        key="curves")
    # what the γ-over-time charts show: redrawn every CURVES_EVERY points while running, at once when paused
    timeline_key = (id(duel), len(snap.timeline) // CURVES_EVERY if snap.state == "running" else len(snap.timeline),
                    snap.timeline[-1]["step"] if snap.timeline and snap.state != "running" else 0)
    if st.session_state.get("show_timeline") and snap.timeline:
        st.plotly_chart(figure("timeline", timeline_key, lambda: charts.timeline(snap.timeline, duel.upper)),
                        width="stretch", key="timeline")
    if st.session_state.get("show_layers"):
        st.plotly_chart(figure("layers", shown, lambda: charts.layer_heatmaps(hist, duel.upper)), width="stretch",
                        key="layers")
        if st.session_state.get("show_timeline") and snap.timeline:
            st.caption("Per layer over time: each layer's share of γ near 0 (its spike) at every published step.")
            names = {m: list(h["layers"]) for m, h in snap.hist.items()}
            st.plotly_chart(figure("layer_timeline", timeline_key, lambda: charts.layer_timeline(snap.timeline, names)),
                            width="stretch", key="layer_timeline")
    if (running and snap.state not in ("running", "queued")) or (getting_ready and snap.ready):
        st.rerun()  # training ended or paused, or the trainer is ready: switch the page out of polling mode


live()

# ---------------------------------------------------------------- after training: prune, deploy, trade-off
# Each step below runs as a task in a worker process of the pool (polar.after_training); the page only sends the
# weights, shows where the task is and draws its result.


def task_status(duel: DuelHandle, kind: str, drawn_at: float,
                draw_partial: Callable[[dict], None] | None = None) -> TaskSnapshot | None:
    """Where this duel's latest ``kind`` task is — waiting (with how many are ahead, redrawn every second), running
    (a progress bar and Cancel, redrawn twice a second) or failed (one line) — and its snapshot, whose ``result`` is
    set once done. Each redraw costs the server a few milliseconds (app/serve.py froze the libraries out of the
    garbage collector) and the browser a layout; a waiting task's position changes only when a slot frees. In the
    class benchmark, whose tabs share the server's two cores, the tabs' renderers used more CPU than the trainers
    even at these rates (bench/classroom.py reports both). ``draw_partial`` draws a running task's first part of
    its result (``TaskSnapshot.partial``) under its progress bar."""
    task = duel.tasks.get(kind)
    if task is None:
        return None
    drawn_state = task.snapshot().state

    @st.fragment(run_every={"queued": 1.0, "running": 0.5}.get(drawn_state))
    def status() -> None:
        snap = task.snapshot()
        if drawn_state == "queued" and snap.state == "running":
            st.rerun()  # its turn came: redraw the page, which polls a running task more often
        if snap.state == "queued":
            st.info(f"{TASK_LABELS[kind]}: the server is busy — {snap.queue_position} ahead of you.")
        elif snap.state == "running":
            st.progress(min(1.0, snap.share), text=f"{TASK_LABELS[kind]}: {snap.text}")
            if draw_partial is not None and snap.partial is not None:
                draw_partial(snap.partial)
        elif snap.state == "error":
            st.error(f"{TASK_LABELS[kind]} failed: {snap.message}. Press it again, or Reset.")
        if task.active():
            st.button("Cancel", key=f"cancel_{kind}", on_click=task.cancel)
        elif snap.state != "cancelled" and snap.finished_at > drawn_at:
            st.rerun()  # finished since the page was drawn: draw the result

    status()
    return task.snapshot()


def done_on(duel: DuelHandle, kind: str, prune: TaskSnapshot) -> TaskSnapshot | None:
    """The latest ``kind`` task if it is done and worked on this prune result's networks (not an earlier one's)."""
    task = duel.tasks.get(kind)
    if task is None or task.spec.get("pruned") is not prune.result["pruned"]:
        return None
    snap = task.snapshot()
    return snap if snap.state == "done" else None


def threshold_readouts(models: dict[str, torch.nn.Module], upper: float) -> float:
    """The threshold slider (at the valley) and what it would remove from each network — channels and the exact
    FLOPs (``polar.pruned_cost``: no pruning, cheap enough for every move); the rule table on a toggle."""
    try:
        valley = polar.find_threshold(models["polar"], "valley", upper=upper)
        valley_note = f"the valley rule gives {valley:.3f}"
    except polar.NoValleyError:
        valley, valley_note = 0.05, "no valley yet (γ not polarized): 0.05 as a start"
    threshold = st.slider(f"Threshold on γ ({valley_note})", 0.0, upper, value=round(valley, 3), step=0.005,
                          key="threshold")
    for col, m in zip(st.columns(2), ("polar", "l1")):
        gammas = polar.sparse_gammas(models[m]).detach()
        pruned = int((gammas <= threshold).sum())
        removed = polar.flops_reduction(polar.unpruned_cost(models[m]), polar.pruned_cost(models[m], threshold))
        col.metric(f"{charts.NAMES[m]}: channels with γ ≤ {threshold:.3f}", f"{pruned} of {len(gammas)}",
                   f"{len(gammas) - pruned} kept · {removed:.1%} of FLOPs removed", delta_color="off")
    if st.toggle("Threshold rules side by side (polarization's γ)", key="show_rules"):  # computed only when shown
        st.caption("What each rule would prune — Polar's robust valley (the default), the official code's literal "
                   "rule globally and per layer, and network slimming's percentile — computed by "
                   "polar.threshold_rules.")
        st.dataframe(polar.threshold_rules(models["polar"], upper=upper), hide_index=True,
                     column_config={"FLOPs reduction": st.column_config.NumberColumn(format="percent")})
    return threshold


def matched_table(rows: list[dict], finetuned: dict[str, float]) -> None:
    """polar.matched_flops's rows as the page shows them, with the fine-tuned accuracies known so far ("–" for the
    rest, and for the β-dropped column while Prune still measures it)."""
    import pandas as pd

    table = pd.DataFrame(rows)
    table["acc_finetuned"] = [finetuned.get(m, float("nan")) for m in table["method"]]
    st.caption("L1 is pruned to the same FLOPs reduction as polarization (matched FLOPs, network slimming's global "
               "threshold). Accuracy on the test subset; pruning folds each removed channel's constant output into "
               "the next layer (\"β dropped\": the paper's code, which discards it).")
    st.table(charts.prune_table(table))


def pruning_table(duel: DuelHandle, prune: TaskSnapshot) -> None:
    """Both pruned networks' MACs and accuracies, with the fine-tune's accuracies once it has run."""
    finetune = done_on(duel, "finetune", prune)
    matched_table(prune.result["table"], finetune.result["accuracy"] if finetune is not None else {})
    if st.button("Fine-tune both pruned networks for 1 epoch"):
        duel.run_task("finetune", {"pruned": prune.result["pruned"], "epochs": 1, "lr": 0.01,
                                   "cfgs": {m: c.to_dict() for m, c in duel.cfgs.items()}})


def deploy(duel: DuelHandle, prune: TaskSnapshot, threshold: float, drawn_at: float) -> None:
    """Downloads (the pruned model, its ONNX export, the run's config) and latency, original vs pruned."""
    import pandas as pd

    d1, d2, d3 = st.columns(3)
    d1.download_button("Download the pruned polarization model (.pt)", prune.result["download"], "polar_pruned.pt")
    if d2.button("Export it to ONNX"):
        duel.run_task("export", {"pruned": prune.result["pruned"], "reference": "polar"})
    with d2:
        task_status(duel, "export", drawn_at)
    export = done_on(duel, "export", prune)
    if export is not None:
        d2.download_button("Download polar_pruned.onnx", export.result["onnx"], "polar_pruned.onnx")
    d3.download_button("Download the run's config (.json)", json.dumps(
        {m: c.to_dict() for m, c in duel.cfgs.items()} | {"threshold": threshold, "run_dir": str(duel.run_root)},
        indent=2), "polar_run_config.json", mime="application/json")
    if st.button("Measure latency: original vs pruned, PyTorch and ONNX Runtime (CPU)"):
        duel.run_task("latency", {"models": weights_blob(duel.models), "pruned": prune.result["pruned"],
                                  "reference": "polar", "repeats": 3})
    task_status(duel, "latency", drawn_at)
    latency = done_on(duel, "latency", prune)
    if latency is not None:
        st.dataframe(pd.DataFrame(latency.result["latency"]), hide_index=True, column_config={
            "original_ms": st.column_config.NumberColumn("original (ms)", format="%.1f"),
            "pruned_ms": st.column_config.NumberColumn("pruned (ms)", format="%.1f"),
            "speedup": st.column_config.NumberColumn("measured speed-up", format="%.2fx"),
            "macs_ratio": st.column_config.NumberColumn("MACs ratio (ideal)", format="%.2fx")})
        st.caption("Fewer FLOPs need not mean less time: odd channel widths and memory-bound layers run below their "
                   "MACs ratio (polar.prune's round_to=8, or 16 on AVX-512 CPUs, helps).")
    speed_target(duel, prune, drawn_at)


def speed_target(duel: DuelHandle, prune: TaskSnapshot, drawn_at: float) -> None:
    """Polarization's network pruned for a target speed-up on this machine (``polar.pruned_for_speedup``, in a
    worker), beside Prune's FLOPs-threshold network: predicted and measured speed-up, MACs, accuracy."""
    import pandas as pd

    c1, c2, c3 = st.columns(3)
    target = c1.number_input("Target speed-up (×)", min_value=1.1, max_value=4.0, value=1.5, step=0.1,
                             key="speedup_target")
    runtime = c2.selectbox("Runtime", list(RUNTIMES), format_func=RUNTIMES.get, key="speedup_runtime")
    batch_size = c3.selectbox("Batch size", [64, 16, 1], key="speedup_batch")
    if st.button("Prune to this speed-up"):
        duel.run_task("speedup", {"models": weights_blob(duel.models), "pruned": prune.result["pruned"],
                                  "reference": "polar", "speedup": target, "runtime": runtime,
                                  "batch_size": batch_size})
    task_status(duel, "speedup", drawn_at)
    speed = done_on(duel, "speedup", prune)
    if speed is None:
        return
    st.dataframe(pd.DataFrame(speed.result["rows"]), hide_index=True, column_config={
        "macs": st.column_config.NumberColumn("MACs", format="compact"),
        "acc_pruned": st.column_config.NumberColumn("acc after pruning", format="percent"),
        "predicted_speedup": st.column_config.NumberColumn("predicted speed-up", format="%.2fx"),
        "measured_speedup": st.column_config.NumberColumn("measured speed-up", format="%.2fx")})
    spec = duel.tasks["speedup"].spec
    st.caption(f"Widths chosen for time, not FLOPs: a latency table of this machine ({RUNTIMES[spec['runtime']]}, "
               f"batch {spec['batch_size']}; widths in steps of {speed.result['granularity']}, fit error "
               f"{speed.result['fit_error']:.0%}) predicts each channel set's time, and the channels that lose the "
               "least γ per millisecond go first (polar.prune_to_speedup); the network chosen is measured and, "
               f"more than 10 % off, planned again for the shortfall (at most {REPLANS} times; the plan kept asked "
               f"the table for "
               f"{speed.result['asked_of_table']:.2f}x). Both speed-ups shown are measured again now against the "
               "unpruned network, in alternating rounds.")
    st.download_button("Download the speed-pruned polarization model (.pt)", speed.result["download"],
                       "polar_speed_pruned.pt")


def tradeoff_curve(duel: DuelHandle, drawn_at: float) -> None:
    """Accuracy against FLOPs reduction for both networks (and the trained start, when there was one), beside the
    committed uniform-width study."""
    import pandas as pd

    with_zero_beta = st.checkbox("Also the β-dropped curves (the paper's pruning, which drops a removed channel's "
                                 "constant output instead of folding it; twice the evaluations)",
                                 key="tradeoff_zero_beta")
    if st.button("Trade-off curve (accuracy vs. FLOPs reduction)"):
        curves, now = dict(duel.models), duel.snapshot()
        accuracies = now.known_accuracies()
        spec = {"reductions": TRADEOFF_REDUCTIONS, "zero_beta": with_zero_beta}
        if duel.cfgs["polar"].init:  # the start had learned: its own curve shows what pruning costs untrained-for
            start_blob = weights_blob({"none": duel.start_model})
            key = json.dumps({"weights": hashlib.sha256(start_blob).hexdigest(), "data": duel.data_args, **spec},
                             sort_keys=True, default=str)
            reused = measured_curves().get(key)
            if reused is not None:  # an identical start, already swept on this server (another student's)
                spec["reused_curves"] = {"none": reused}
            else:
                curves["none"], spec["curve_key"] = duel.start_model, key
                if now.start_acc is not None:
                    accuracies["none"] = now.start_acc
        duel.run_task("tradeoff", {"models": weights_blob(curves), "accuracies": accuracies, **spec})  # as of the click
    tradeoff = task_status(duel, "tradeoff", drawn_at)
    if tradeoff is None or tradeoff.state != "done":
        return
    spec = duel.tasks["tradeoff"].spec
    measured = tradeoff.result["curves"]
    if "curve_key" in spec:
        measured_curves().setdefault(spec["curve_key"], measured["none"])
    study = RESULTS / f"study_{settings.model}_{settings.dataset}" / "points.csv"
    uniform = charts.uniform_width_points(study) if duel.cfgs["polar"].dataset == settings.dataset else []
    curves = {m: pd.DataFrame(rows) for m, rows in {**measured, **spec.get("reused_curves", {})}.items()}
    st.plotly_chart(charts.tradeoff(curves, uniform), width="stretch", key="tradeoff")
    st.caption("Each point prunes to a FLOPs target by a global threshold on γ; γ exactly tied (polarization's "
               "spike at 0) are told apart by |β|, smaller first (polar.sweep). \"No regularizer\": the trained "
               "baseline itself, pruned the same way."
               + (f" Uniform width (the paper's plain baseline): the same {settings.model} with every prunable layer "
                  f"thinner by one factor, trained from scratch at that width — from the committed study "
                  f"({uniform[0]['seeds']} seeds; its budget is in results/{study.parent.name}/), not from this run."
                  if uniform else ""))


@st.fragment(run_every=1.0)
def rerun_when_idle(duel: DuelHandle) -> None:
    """Paused, but the trainer has not sent its weights back: it reads Pause only after the step or the epoch's
    evaluation it is in, which on a loaded machine outlasts the page's waits (30 s in Pause, 5 s in the Prune
    section's ``duel.idle()``). Look again every second and redraw the page once they are back; waiting once and
    then showing the message until the user clicked something left two students of the N = 30 class
    (bench/classroom.py) 300 s without a Prune button."""
    if duel.idle(wait=0):
        st.rerun()


def after_training(duel: DuelHandle | None, now: Snapshot | None) -> None:
    """Prune (threshold, readouts, the table), then fine-tune, deploy and the trade-off curve."""
    st.header("Prune")
    if duel is None or now is None or (now.epoch == 0 and now.state != "paused"):
        st.info("Train at least one epoch (or pause) to prune.")
        return
    if not duel.idle():
        st.info("Pause training to prune: the weights are moving.")
        # paused with the weights on their way back; while training runs, the live part polls instead
        if duel.snapshot().state not in ("running", "queued"):
            rerun_when_idle(duel)
        return
    threshold = threshold_readouts(duel.models, duel.upper)
    drawn_at = time.time()
    if st.button("✂ Prune", type="primary"):
        duel.run_task("prune", {"models": weights_blob(duel.models), "threshold": threshold, "reference": "polar",
                                "accuracies": duel.snapshot().known_accuracies()})  # as of the click
    prune = task_status(duel, "prune", drawn_at, draw_partial=lambda partial: matched_table(partial["table"], {}))
    if prune is not None and prune.state == "done":
        pruning_table(duel, prune)
        task_status(duel, "finetune", drawn_at)
        deploy(duel, prune, threshold, drawn_at)
    tradeoff_curve(duel, drawn_at)


after_training(duel, shown)
