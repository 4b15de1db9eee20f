"""Study-level Plotly figures (top-k next tokens, the scoreboard, unlearning trajectories), shared by the app
and the notebooks. Each analysis keeps its own figures in its folder's ``figures.py``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

ROLE_COLORS = {"original": "#1f77b4", "unlearned": "#d62728", "control": "#2ca02c"}


def topk_bars(results: Mapping[str, Sequence[tuple[str, float]]], title: str | None = None,
              roles: Mapping[str, str] | None = None) -> go.Figure:
    """One horizontal bar chart per model of its top-k next tokens, side by side, coloured by model role."""
    names = list(results)
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=names, horizontal_spacing=0.08)
    for i, name in enumerate(names, 1):
        toks = list(results[name])[::-1]
        fig.add_trace(go.Bar(x=[p for _, p in toks], y=[repr(t)[1:-1] or "␣" for t, _ in toks], orientation="h",
                             name=name, marker_color=ROLE_COLORS.get((roles or {}).get(name, ""), "#7f7f7f"), text=[f"{p:.2f}" for _, p in toks], textposition="auto",
                             hovertemplate="%{y}: %{x:.4f}<extra>" + name + "</extra>"), row=1, col=i)
        fig.update_xaxes(range=[0, 1], title_text="probability", row=1, col=i)
    fig.update_layout(showlegend=False, height=120 + 28 * max((len(v) for v in results.values()), default=5),
                      margin={"l": 10, "r": 10, "t": 50, "b": 40}, title=title)
    return fig


SCOREBOARD_METRICS = {"forget_acc": "forget (lower = forgotten)", "paraphrase_acc": "paraphrased forget",
                      "retain_acc": "retain (higher = kept)", "utility": "utility"}


def scoreboard_bars(board: pd.DataFrame) -> go.Figure:
    """Forget vs retain accuracy (and paraphrase, utility) per model, as grouped bars.

    Bars rather than a forget-vs-retain scatter: unlearned models pile up near (0, 1), where scatter labels
    overlap and become unreadable. ``board`` has a ``model`` column and the metric columns."""
    long = board.melt(id_vars=["model"], value_vars=[c for c in SCOREBOARD_METRICS if c in board.columns],
                      var_name="metric", value_name="accuracy")
    long["metric"] = long["metric"].map(SCOREBOARD_METRICS)
    colors = {"forget (lower = forgotten)": "#d62728", "paraphrased forget": "#ff9896",
              "retain (higher = kept)": "#2ca02c", "utility": "#1f77b4"}
    fig = px.bar(long, x="model", y="accuracy", color="metric", barmode="group", color_discrete_map=colors,
                 text_auto=".2f", category_orders={"model": list(board["model"])})
    fig.update_traces(textposition="outside", textfont_size=10, cliponaxis=False)
    fig.update_yaxes(range=[0, 1.12], title="top-1 accuracy")
    fig.update_xaxes(title=None)
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 30, "b": 40}, legend_title_text=None,
                      legend={"orientation": "h", "y": 1.08, "x": 0})
    return fig


def trajectory_lines(traj: Mapping[str, Sequence[float]], title: str = "") -> go.Figure:
    """Mean forget-answer probability per unlearning step, one line per method."""
    fig = go.Figure()
    for name, ys in traj.items():
        fig.add_trace(go.Scatter(y=list(ys), mode="lines", name=name))
    fig.update_layout(title=title, xaxis_title="unlearning step", yaxis_title="mean forget answer probability",
                      yaxis_range=[0, 1.02], height=360, margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


