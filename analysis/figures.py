"""Plotly figure builders shared by the app and the notebooks (so both show the same plot)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

ROLE_COLORS = {"original": "#1f77b4", "unlearned": "#d62728", "control": "#2ca02c"}


def topk_bars(results: Mapping[str, Sequence[tuple[str, float]]], title: str | None = None) -> go.Figure:
    """One horizontal bar chart per model of its top-k next tokens, side by side."""
    names = list(results)
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=names, horizontal_spacing=0.08)
    for i, name in enumerate(names, 1):
        toks = list(results[name])[::-1]
        fig.add_trace(go.Bar(x=[p for _, p in toks], y=[repr(t)[1:-1] or "␣" for t, _ in toks], orientation="h",
                             name=name, text=[f"{p:.2f}" for _, p in toks], textposition="auto",
                             hovertemplate="%{y}: %{x:.4f}<extra>" + name + "</extra>"), row=1, col=i)
        fig.update_xaxes(range=[0, 1], title_text="probability", row=1, col=i)
    fig.update_layout(showlegend=False, height=120 + 28 * max((len(v) for v in results.values()), default=5),
                      margin={"l": 10, "r": 10, "t": 50, "b": 40}, title=title)
    return fig


def scoreboard_scatter(board: pd.DataFrame) -> go.Figure:
    """Forget accuracy vs retain accuracy per model. ``board`` has columns model, role, forget_acc, retain_acc."""
    fig = px.scatter(board, x="forget_acc", y="retain_acc", text="model", color="role",
                     color_discrete_map=ROLE_COLORS, hover_data=[c for c in board.columns if c not in ("text",)])
    fig.update_traces(textposition="top center", marker={"size": 12})
    fig.update_xaxes(range=[-0.05, 1.05], title="forget accuracy (lower = more forgotten)")
    fig.update_yaxes(range=[-0.05, 1.05], title="retain accuracy (higher = better kept)")
    fig.add_shape(type="rect", x0=-0.05, y0=0.9, x1=0.1, y1=1.05, line={"dash": "dot", "color": "green"},
                  fillcolor="rgba(0,160,0,0.05)")
    fig.update_layout(height=460, margin={"l": 10, "r": 10, "t": 30, "b": 40}, legend_title_text="role")
    return fig


def trajectory_lines(traj: Mapping[str, Sequence[float]], title: str = "") -> go.Figure:
    """Mean forget-answer probability per unlearning step, one line per method."""
    fig = go.Figure()
    for name, ys in traj.items():
        fig.add_trace(go.Scatter(y=list(ys), mode="lines", name=name))
    fig.update_layout(title=title, xaxis_title="unlearning step", yaxis_title="mean forget answer probability",
                      yaxis_range=[0, 1.02], height=360, margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig
