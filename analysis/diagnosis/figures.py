"""Plotly figures of the diagnosis: per-sample readings of every signal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

READING_COLORS = {"gone": "#2ca02c", "present": "#d62728", "inconclusive": "#ffbf00", "n/a": "#e5e5e5"}


def reading_map(readings: Mapping[str, Sequence[str]], ids: Sequence[str], title: str = "") -> go.Figure:
    """One row per signal, one column per sample, coloured by the signal's reading of that sample (gone /
    present / inconclusive / n/a): where the signals agree on a sample and where they do not."""
    names = list(readings)
    codes = {r: i for i, r in enumerate(READING_COLORS)}
    n = len(READING_COLORS)
    scale = [[pos, c] for i, c in enumerate(READING_COLORS.values()) for pos in (i / n, (i + 1) / n)]
    z = [[codes.get(r, codes["n/a"]) for r in readings[name]] for name in names]
    text = [[r if r in codes else "n/a" for r in readings[name]] for name in names]
    fig = go.Figure(go.Heatmap(z=z, x=list(ids), y=names, text=text, zmin=-0.5, zmax=n - 0.5, colorscale=scale,
                               xgap=1, ygap=2, showscale=False,
                               hovertemplate="%{x}<br>%{y}: %{text}<extra></extra>"))
    for reading, color in READING_COLORS.items():  # a legend for the categorical colours
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=reading,
                                 marker={"size": 12, "color": color, "symbol": "square"}))
    fig.update_xaxes(showticklabels=len(ids) <= 40, tickangle=-60, title_text="forget sample")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title or None, height=140 + 40 * len(names), margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": 1.12, "x": 0}, plot_bgcolor="white")
    return fig
