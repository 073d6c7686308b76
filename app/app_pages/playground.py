"""The regularizer playground: no network, just scaling factors under a task-like pull (polar.toy_gammas), so a
student can see within a fraction of a second what t, λ, the number of steps and the clamp do."""
from __future__ import annotations

import time

import charts
import streamlit as st
import torch

import polar

st.title("Regularizer playground")
st.markdown("2,000 scaling factors γ, each pulled toward its own preferred value by a task-like term whose weight "
            "says how much the task needs that channel (a few need it a lot, most little). Gradient descent adds "
            "λ·R(γ): **L1** pushes every γ down by the same amount; **polarization** pushes the γ below the mean "
            "down by λ(t+1) and those above it by only λ(t−1).")
lam_lo, lam_hi = polar.LIMITS["lam"]
c1, c2, c3, c4 = st.columns(4)
t = c1.slider("t", *polar.LIMITS["t"], value=1.2, step=0.05, key="pg_t")
lam = c2.slider("λ", 0.0, min(lam_hi, 2.0), value=0.3, step=0.01, key="pg_lam")
steps = c3.slider("steps", 0, 1000, value=400, step=10, key="pg_steps")
clamp = c4.toggle("clamp γ to [0, 1]", value=True, key="pg_clamp",
                  help="the paper clamps γ under polarization; without it the γ below the mean fall past 0")
t0 = time.perf_counter()
final = {m: polar.toy_gammas(m, lam=lam, t=t, steps=steps, clamp=clamp, snapshots=(steps,))[steps]
         for m in ("polar", "l1")}
hist = {m: polar.gamma_summary({"γ": g}, upper=1.0) for m, g in final.items()}
st.plotly_chart(charts.histograms(hist, 1.0, None, log_y=False), width="stretch", key="pg_hist")
rows = [{"regularizer": charts.NAMES[m], "share of γ at 0": float((g <= 0).float().mean()),
         "share in (0.1, 0.4)": polar.middle_share(g), "below 0 (unclamped)": float((g < 0).float().mean()),
         "R(γ) = t‖γ‖₁ − ‖γ − γ̄‖₁": float(polar.polarization(g, t)) if m == "polar" else float("nan")}
        for m, g in final.items()]
shares = ("share of γ at 0", "share in (0.1, 0.4)", "below 0 (unclamped)")
st.dataframe(rows, hide_index=True, column_config={c: st.column_config.NumberColumn(format="percent") for c in shares})
st.caption(f"Theorem 3.2: for the regularizer alone the optimum puts {polar.optimal_zero_share(t):.0%} of γ at 0 "
           f"(1/2 + t/4 for −2 ≤ t ≤ 2) and the rest at 1; the task term holds up the channels it needs, so fewer "
           f"reach 0. R(γ) is negative whenever the spread ‖γ − γ̄‖₁ outweighs t‖γ‖₁ — it is a penalty to minimise, "
           f"not a distance. Computed in {1000 * (time.perf_counter() - t0):.0f} ms on "
           f"{torch.get_num_threads()} CPU thread(s).")
