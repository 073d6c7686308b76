"""t and λ sweep (the paper's Figure 3): a small grid of brief sparse trainings from one start, each pruned at its
own valley — how t and λ move the FLOPs removed and the accuracy it costs.

The grid runs in the server's trainer pool, one point per task (``grid_point``): each point waits for a slot like any
duel or task ("N ahead of you"), so a grid never holds the shared server for longer than one point; its owner can
stop it, and it stops once its tab has been gone for a while (a reload within that time takes it over). Each point
is written as JSON into a folder named after the settings the moment it finishes; this page draws whatever points
exist, live, so a reload or a second visit with the same settings finds them and a stopped grid resumes where it
stopped. A committed grid from ``results/`` is shown when one exists.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import charts
import pandas as pd
import streamlit as st
from shared import device_data, runs_folder, trainer_pool
from streamlit.runtime.scriptrunner import get_script_run_ctx

import polar

COMMITTED = Path(__file__).resolve().parents[2] / "results" / "tl_grid_resnet20"
SKIP = {"reg", "lam", "t", "seed"}  # the grid sets these per point
# Each point trains for about a minute on a 2-core CPU in the slots every visitor of this server shares: 36 points
# hold one slot for ~40 minutes, which is as much as one visitor should ask of a classroom's server.
MAX_POINTS = 36
SESSION = get_script_run_ctx().session_id


st.title("t and λ sweep (the paper's Figure 3)")
st.markdown("Each point trains the sidebar's start under **polarization** at one (λ, t) for the sidebar's epochs, "
            "prunes it at its own valley and measures the test accuracy — no fine-tuning. Larger λ and larger t push "
            "more γ to 0: more FLOPs go, and past some point accuracy goes with them.")
settings = st.session_state["settings"]
c1, c2, c3 = st.columns(3)
lam_text = c1.text_input("λ values", value=", ".join(f"{settings.lam * f:g}" for f in (0.5, 1, 2)), key="grid_lams")
t_text = c2.text_input("t values", value="1.0, 1.2, 1.4", key="grid_ts")
repeats = c3.number_input("repeats (seeds)", 1, 5, value=1, key="grid_repeats",
                          help="the chart shows the mean and the spread over seeds")
try:
    lams = polar.parse_numbers(lam_text, "λ values", limit="lam")
    ts = polar.parse_numbers(t_text, "t values", limit="t")
    base = settings.configs()["polar"]
except (ValueError, polar.ConfigError) as err:
    st.error(f"Fix the grid: {err}")
    st.stop()
wanted = len(lams) * len(ts) * repeats
if wanted > MAX_POINTS:
    st.error(f"Fix the grid: {len(lams)} λ × {len(ts)} t × {repeats} repeat(s) is {wanted} points; this server runs "
             f"at most {MAX_POINTS} per grid (each trains for about a minute on a CPU, in slots every visitor "
             "shares). Give fewer values, or run `polar grid` from the command line.")
    st.stop()

_, data_args, fallback = device_data(settings.dataset, settings.subset, settings.device)
if fallback:
    st.warning(fallback)
    base = dataclasses.replace(base, dataset="synthetic", init="")
key = json.dumps({"cfg": {k: v for k, v in base.to_dict().items() if k not in SKIP}, "data": data_args,
                  "lams": lams, "ts": ts}, sort_keys=True)
folder = runs_folder() / "grids" / hashlib.sha1(key.encode()).hexdigest()[:12]
pool = trainer_pool()
grid = pool.grid(folder, SESSION)
running = grid is not None and grid.active()
done = polar.read_grid(folder)  # empty until the first point finishes
done = done[done["seed"] < repeats]
st.caption(f"{len(done)} of {wanted} points done · {base.epochs} epoch(s) each from "
           f"{'the trained baseline' if base.init == 'pretrained' else 'fresh weights'} on {base.dataset}"
           + (f" ({base.subset} images per class)" if base.subset else "") + f" · cached in {folder}")
if not running and len(done) < wanted:
    if st.button(f"▶ Run the {wanted - len(done)} missing point(s)", type="primary"):
        have = {(r.lam, r.t, r.seed) for r in done.itertuples()}
        missing = [{"lam": lam, "t": t, "seed": seed} for t in ts for lam in lams for seed in range(repeats)
                   if (lam, t, seed) not in have]
        pool.start_grid(folder, missing, {"cfg": base.to_dict(), "data": data_args, "device": base.device}, SESSION)
        st.rerun()


@st.fragment(run_every=1.0 if running else None)
def live() -> None:
    points = polar.read_grid(folder)
    points = points[points["seed"] < repeats]
    now = grid.snapshot() if grid is not None else None
    if now is not None and now.state in ("queued", "running"):
        where = (f"waiting for a free worker: {now.queue_position} ahead of you" if now.state == "queued"
                 else now.text)
        st.progress(min(1.0, len(points) / wanted), text=f"{len(points)} of {wanted} points done · {where}")
        if grid.owner == SESSION:
            st.button("⏹ Stop the grid", key="stop_grid", on_click=grid.cancel,
                      help="The points done so far are kept; Run resumes with the rest.")
        else:
            st.caption("Another visitor is running this grid; its points appear here as they finish.")
    elif now is not None and now.state == "error":
        st.error(f"The grid stopped: {now.message}. Press Run to try the missing points again.")
    elif now is not None and now.state == "cancelled" and len(points) < wanted:
        st.info(f"The grid was stopped with {len(points)} of {wanted} points done; Run resumes with the rest.")
    if len(points):
        st.plotly_chart(charts.tl_grid(polar.grid_summary(points)), width="stretch", key="grid_chart")
        st.dataframe(points.sort_values(["t", "lam", "seed"]), hide_index=True)
    if running and (now is None or now.state not in ("queued", "running")):
        st.rerun()  # the grid ended: leave polling mode


live()
if COMMITTED.is_dir() and (COMMITTED / "grid.csv").is_file():
    st.subheader("Committed grid")
    committed = pd.read_csv(COMMITTED / "grid.csv")
    st.caption((COMMITTED / "README.md").read_text().split("\n\n")[0] if (COMMITTED / "README.md").is_file() else
               str(COMMITTED))
    st.plotly_chart(charts.tl_grid(polar.grid_summary(committed)), width="stretch", key="committed_chart")
