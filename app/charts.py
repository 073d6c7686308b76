"""Plotly figures for the explorer, built from binned counts and metric rows (never from raw γ)."""
from __future__ import annotations

import math
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORS = {"polar": "#d62728", "l1": "#1f77b4", "none": "#7f7f7f"}
NAMES = {"polar": "Polarization", "l1": "L1 (network slimming)", "none": "No regularizer (the baseline)"}


def histograms(hist: dict[str, dict], upper: float, threshold: float | None, log_y: bool,
               title: str = "") -> go.Figure:
    """The two γ histograms side by side: same bins, same axes, an optional threshold line."""
    methods = [m for m in ("polar", "l1") if m in hist]
    fig = make_subplots(rows=1, cols=len(methods), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[f"{NAMES[m]} · {hist[m]['modes']} mode{'s' * (hist[m]['modes'] != 1)}"
                                        + (" · split" if hist[m].get("split") else "") for m in methods])
    bins = len(hist[methods[0]]["counts"])
    width = upper / bins
    centers = [(i + 0.5) * width for i in range(bins)]
    top = max(max(h["counts"]) for h in hist.values()) or 1
    for col, m in enumerate(methods, start=1):
        fig.add_trace(go.Bar(x=centers, y=hist[m]["counts"], width=width, marker_color=COLORS[m], name=NAMES[m],
                             showlegend=False, hovertemplate="γ≈%{x:.2f}: %{y} channels<extra></extra>"),
                      row=1, col=col)
        if threshold is not None:
            fig.add_vline(x=threshold, line_dash="dash", line_color="black", row=1, col=col)
        fig.update_xaxes(range=[0, upper], title_text="γ", row=1, col=col)
    fig.update_yaxes(type="log" if log_y else "linear", title_text="channels", row=1, col=1)
    if not log_y:
        fig.update_yaxes(range=[0, top * 1.05])
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=40, b=10), title=title, bargap=0)
    return fig


def curves(steps: list[dict], epochs: list[dict], start_acc: float | None = None) -> go.Figure:
    """Training loss per step and test accuracy per epoch, both methods; ``start_acc`` (the start's accuracy) is
    both accuracy lines' point at epoch 0."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["training loss (cross-entropy)", "test accuracy"])
    for m in ("polar", "l1"):
        xs = [s["step"] for s in steps if f"loss_{m}" in s]
        fig.add_trace(go.Scatter(x=xs, y=[s[f"loss_{m}"] for s in steps if f"loss_{m}" in s], name=NAMES[m],
                                 line_color=COLORS[m]), row=1, col=1)
        rows = ([{"epoch": 0, "test_acc": start_acc}] if start_acc is not None else []) + [
            e for e in epochs if e["method"] == m]
        fig.add_trace(go.Scatter(x=[e["epoch"] for e in rows], y=[e["test_acc"] for e in rows], mode="lines+markers",
                                 name=NAMES[m], line_color=COLORS[m], showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h"))
    return fig


def layer_heatmaps(hist: dict[str, dict], upper: float) -> go.Figure:
    """Per-layer γ histograms (layers × bins) for both methods."""
    methods = [m for m in ("polar", "l1") if m in hist]
    fig = make_subplots(rows=1, cols=len(methods), shared_yaxes=True, subplot_titles=[NAMES[m] for m in methods])
    for col, m in enumerate(methods, start=1):
        layers = list(hist[m]["layers"])
        z = [[c / max(1, sum(row)) for c in row] for row in hist[m]["layers"].values()]
        bins = len(z[0])
        fig.add_trace(go.Heatmap(z=z, x=[(i + 0.5) * upper / bins for i in range(bins)], y=layers,
                                 colorscale="Viridis", showscale=col == len(methods), zmin=0, zmax=1,
                                 hovertemplate="%{y}, γ≈%{x:.2f}: %{z:.0%}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="γ", row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=max(300, 14 * len(layers)), margin=dict(l=10, r=10, t=30, b=10))
    return fig


def uniform_width_points(points_csv: Path) -> list[dict]:
    """The uniform-width baseline of a committed study (bench/study.py's points.csv): per FLOPs target, the mean
    and standard deviation over seeds of its FLOPs reduction and test accuracy. [] when there is no such file."""
    if not points_csv.is_file():
        return []
    import pandas as pd

    ucs = pd.read_csv(points_csv).query("method == 'ucs'")
    return [{"target": target, "seeds": len(group), "flops_reduction": group["flops_reduction"].mean(),
             "acc": group["acc_finetuned"].mean(), "acc_std": group["acc_finetuned"].std(ddof=1) if len(group) > 1
             else 0.0} for target, group in ucs.groupby("target")]


def tradeoff(tables: dict[str, "object"], uniform: list[dict] | None = None) -> go.Figure:
    """Accuracy before fine-tuning against FLOPs reduction, both methods, from polar.sweep tables; ``uniform``: the
    uniform-width baseline's points (trained at that width, so no pruning to recover from)."""
    fig = go.Figure()
    for m, table in tables.items():
        t = table.sort_values("flops_reduction")
        fig.add_trace(go.Scatter(x=100 * t["flops_reduction"], y=100 * t["acc_folded"], mode="lines+markers",
                                 name=NAMES[m], line_color=COLORS[m]))
        if t["acc_zero_beta"].notna().any():  # measured only when asked for (polar.sweep's measure_zero_beta)
            fig.add_trace(go.Scatter(x=100 * t["flops_reduction"], y=100 * t["acc_zero_beta"], mode="lines+markers",
                                     name=f"{NAMES[m]}, β dropped", line=dict(color=COLORS[m], dash="dot")))
    if uniform:
        fig.add_trace(go.Scatter(x=[100 * p["flops_reduction"] for p in uniform], y=[100 * p["acc"] for p in uniform],
                                 error_y=dict(type="data", array=[100 * p["acc_std"] for p in uniform]),
                                 mode="markers", marker=dict(symbol="diamond", size=11, color="#2ca02c"),
                                 name="uniform width (trained at that width)"))
    fig.update_layout(xaxis_title="FLOPs reduction (%)", yaxis_title="test accuracy before fine-tuning (%)",
                      height=330, margin=dict(l=10, r=10, t=10, b=10))
    return fig


def prune_table(table: "object") -> "object":
    """polar.matched_flops's table (plus ``acc_finetuned``) as the page shows it: percentages, readable names."""
    shown = table.assign(method=table["method"].map(NAMES), macs=table["macs"] / 1e6, params=table["params"] / 1e6)
    for column in ("flops_reduction", "acc_unpruned", "acc_pruned", "acc_zero_beta", "acc_finetuned"):
        shown[column] = 100 * shown[column]
    shown = shown.rename(columns={"threshold": "threshold", "macs": "MACs (M)", "params": "params (M)",
                                  "flops_reduction": "FLOPs reduction (%)", "acc_unpruned": "acc before pruning (%)",
                                  "acc_pruned": "acc after pruning (%)", "acc_zero_beta": "acc, β dropped (%)",
                                  "acc_finetuned": "acc after fine-tune (%)"}).set_index("method")
    return shown.style.format("{:.3f}", na_rep="–")


def layer_timeline(points: list[dict], layers: dict[str, list[str]]) -> go.Figure:
    """Per-layer γ over time: for each method, each sparse layer's share of γ near 0 (its spike) against the
    training step — which layers polarize first, and where L1 empties whole layers."""
    methods = [m for m in ("polar", "l1") if points and m in points[0].get("near_zero", {})]
    fig = make_subplots(rows=1, cols=len(methods), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[NAMES[m] for m in methods])
    for col, m in enumerate(methods, start=1):
        z = [[p["near_zero"][m][i] for p in points] for i in range(len(layers[m]))]
        fig.add_trace(go.Heatmap(z=z, x=[p["step"] for p in points], y=layers[m], colorscale="Viridis", zmin=0,
                                 zmax=1, showscale=col == len(methods),
                                 hovertemplate="step %{x}, %{y}: %{z:.0%} of γ near 0<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=max(300, 14 * max((len(v) for v in layers.values()), default=0)),
                      margin=dict(l=10, r=10, t=30, b=10))
    return fig


def timeline(points: list[dict], upper: float) -> go.Figure:
    """γ over time (the paper's Figure 4, live): for each method a heat map of bin counts (log scale) against the
    training step, so the spike forming at 0 and the valley opening show as bands."""
    methods = [m for m in ("polar", "l1") if points and m in points[0]]
    fig = make_subplots(rows=1, cols=len(methods), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[NAMES[m] for m in methods])
    for col, m in enumerate(methods, start=1):
        bins = len(points[0][m])
        z = [[math.log10(1 + p[m][b]) for p in points] for b in range(bins)]
        fig.add_trace(go.Heatmap(z=z, x=[p["step"] for p in points], y=[(b + 0.5) * upper / bins for b in range(bins)],
                                 colorscale="Viridis", showscale=False,
                                 hovertemplate="step %{x}, γ≈%{y:.2f}: log10(1+count) %{z:.2f}<extra></extra>"),
                      row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_yaxes(title_text="γ", row=1, col=1)
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def tl_grid(summary: "object") -> go.Figure:
    """Figure 3 of the paper from polar.grid_summary: FLOPs reduction at the valley and accuracy drop against λ,
    one line per t (error bars: the spread over seeds)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["FLOPs reduction at the valley", "accuracy drop (pruned)"])
    for i, (t, group) in enumerate(summary.sort_values("lam").groupby("t")):
        color = f"hsl({(210 + 70 * i) % 360}, 65%, 45%)"
        for col, column in ((1, "flops_reduction"), (2, "acc_drop")):
            fig.add_trace(go.Scatter(x=group["lam"], y=100 * group[column], mode="lines+markers", name=f"t = {t:g}",
                                     line_color=color, showlegend=col == 1,
                                     error_y=dict(type="data", array=100 * group[column + "_std"], visible=True)),
                          row=1, col=col)
    fig.update_xaxes(type="log", title_text="λ")
    fig.update_yaxes(title_text="%", row=1, col=1)
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=30, b=10))
    return fig
