"""Saved runs: every duel the explorer trained is kept under runs/app/; compare them side by side."""
from __future__ import annotations

import charts
import pandas as pd
import streamlit as st
from shared import runs_folder

import polar

RUNS = runs_folder()
st.title("Saved runs")
runs = sorted((p for p in RUNS.glob("*") if (p / "polar" / "config.json").is_file()), reverse=True)
if not runs:
    st.info("No saved runs yet: train on the Explore page; each run is kept under runs/app/.")
    st.stop()
chosen = st.multiselect("Runs to compare", [p.name for p in runs], default=[runs[0].name])
rows = []
for name in chosen:
    for method in ("polar", "l1"):
        run = polar.RunDir(RUNS / name / method)
        try:
            saved = run.read_config()
            missing = sorted({"model", "dataset", "reg", "lam"} - set(saved))
            if missing:
                raise polar.CheckpointError(f"config.json lacks {', '.join(missing)}")
            cfg = polar.TrainConfig.from_dict(saved)
            metrics = run.read_metrics()
        except (ValueError, TypeError, KeyError) as err:  # unreadable or damaged: listed as such, the rest shown
            st.error(f"{name}/{method}: damaged run, skipped ({err})")
            continue
        last = metrics[-1] if metrics else {}
        rows.append({"run": name, "method": charts.NAMES[method], "model": cfg.model, "λ": cfg.lam,
                     "t": cfg.t if method == "polar" else None, "epochs done": last.get("epoch", 0),
                     "test acc": last.get("test_acc"), "γ in (0.1, 0.4)": last.get("gamma_in_0.1_0.4"),
                     "γ < 0.01": last.get("gamma_below_0.01")})
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
log_y = st.toggle("log-scale counts")
for name in chosen:
    hist = {}
    for method in ("polar", "l1"):
        run = polar.RunDir(RUNS / name / method)
        epochs = run.gamma_epochs()
        if epochs:
            try:
                hist[method] = polar.gamma_summary(run.load_gammas(epochs[-1]), 1.0)
            except Exception as err:  # a damaged snapshot: say so, show the rest
                st.error(f"{name}/{method}: cannot read its γ snapshot ({type(err).__name__})")
    if len(hist) == 2:
        st.plotly_chart(charts.histograms(hist, 1.0, None, log_y, title=name), width="stretch",
                        key=f"hist-{name}")
