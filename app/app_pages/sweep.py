"""t and λ sweep (the paper's Figure 3): a small grid of brief sparse trainings from one start, each pruned at its
own valley — how t and λ move the FLOPs removed and the accuracy it costs.

The grid runs as ``polar grid`` in a child process (the CLI a researcher would use), writing one JSON per finished
point into a folder named after the settings; this page draws whatever points exist, live, so a reload or a second
visit with the same settings finds them, and an interrupted grid resumes where it stopped. A committed grid from
``results/`` is shown when one exists.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import charts
import pandas as pd
import streamlit as st

import polar

RUNS = Path(os.environ.get("POLAR_RUNS", "runs")) / "app" / "grids"
COMMITTED = Path(__file__).resolve().parents[2] / "results" / "tl_grid_resnet20"
SKIP = {"reg", "lam", "t", "seed"}  # the grid sets these per point


@st.cache_resource
def grid_processes() -> dict[str, subprocess.Popen]:
    """The server's grid processes by cache folder: one grid trains at a time, whoever started it."""
    return {}


def cli_flags(cfg: polar.TrainConfig) -> list[str]:
    """``cfg`` as ``polar grid`` flags (every setting but those the grid varies)."""
    flags = []
    for field in dataclasses.fields(cfg):
        if field.name in SKIP:
            continue
        value, flag = getattr(cfg, field.name), "--" + field.name.replace("_", "-")
        flags += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return flags


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

key = json.dumps({"cfg": {k: v for k, v in base.to_dict().items() if k not in SKIP}, "lams": lams, "ts": ts},
                 sort_keys=True)
folder = RUNS / hashlib.sha1(key.encode()).hexdigest()[:12]
processes = grid_processes()
busy = {f: p for f, p in processes.items() if p.poll() is None}
mine = busy.get(str(folder))
wanted = len(lams) * len(ts) * repeats
done = polar.read_grid(folder)  # empty until the first point finishes
done = done[done["seed"] < repeats]
st.caption(f"{len(done)} of {wanted} points done · {base.epochs} epoch(s) each from "
           f"{'the trained baseline' if base.init == 'pretrained' else 'fresh weights'} on {base.dataset}"
           + (f" ({base.subset} images per class)" if base.subset else "") + f" · cached in {folder}")
if mine is None and len(done) < wanted:
    if busy:
        st.info("The server is training another grid; start this one when it finishes.")
    elif st.button(f"▶ Run the {wanted - len(done)} missing point(s)", type="primary"):
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "polar", "grid", "--lams", ",".join(map(str, lams)),
                   "--ts", ",".join(map(str, ts)), "--seeds", ",".join(map(str, range(repeats))), "--out",
                   str(folder), *cli_flags(base)]
        with open(folder / "log.txt", "ab") as log:
            processes[str(folder)] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        st.rerun()


@st.fragment(run_every=1.0 if mine is not None else None)
def live() -> None:
    points = polar.read_grid(folder)
    points = points[points["seed"] < repeats]
    process = grid_processes().get(str(folder))
    if process is not None and process.poll() is None:
        st.progress(len(points) / wanted, text=f"training: {len(points)} of {wanted} points done")
    elif process is not None and process.returncode and len(points) < wanted:
        tail = (folder / "log.txt").read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        st.error(f"The grid stopped (exit {process.returncode}): {tail[0]}")
    if len(points):
        st.plotly_chart(charts.tl_grid(polar.grid_summary(points)), width="stretch", key="grid_chart")
        st.dataframe(points.sort_values(["t", "lam", "seed"]), hide_index=True)
    if process is not None and process.poll() is not None and mine is not None:
        st.rerun()  # the grid ended: leave polling mode


live()
if COMMITTED.is_dir() and (COMMITTED / "grid.csv").is_file():
    st.subheader("Committed grid")
    committed = pd.read_csv(COMMITTED / "grid.csv")
    st.caption((COMMITTED / "README.md").read_text().split("\n\n")[0] if (COMMITTED / "README.md").is_file() else
               str(COMMITTED))
    st.plotly_chart(charts.tl_grid(polar.grid_summary(committed)), width="stretch", key="committed_chart")
