"""Study-level Plotly figures (top-k next tokens, the scoreboard, unlearning trajectories), shared by the app
and the notebooks. Each analysis keeps its own figures in its folder's ``figures.py``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.palette import BLACK, GREY, ORANGE, PURPLE, ROLE_COLORS, SKY, TEAL, VERMILLION

# ---- the shared rules of every figure (honest axes, one colour language) -----------------------------------------
# ROLE_COLORS (re-exported from analysis.palette): the original teal, controls blue, unlearned models vermillion.
SERIES_COLORS = [VERMILLION, PURPLE, BLACK, SKY, GREY]  # further models, after the original and the control
NOMINAL_LINE = {"color": GREY, "dash": "dot", "width": 1.5}


def model_colors(names: Iterable[str], reference: str | None = None, original: str | None = "original",
                 roles: Mapping[str, str] | None = None) -> dict[str, str]:
    """A colour per model name: by its role when ``roles`` names it (ROLE_COLORS), else the original teal, the
    ``reference`` (the retrain control) blue and the others in turn vermillion, purple, black, sky, grey (the
    legend writes each name beside its colour)."""
    out: dict[str, str] = {}
    others = 0
    for n in names:
        role = (roles or {}).get(n)
        if role in ROLE_COLORS:
            out[n] = ROLE_COLORS[role]
        elif n == original:
            out[n] = ROLE_COLORS["original"]
        elif n == reference:
            out[n] = ROLE_COLORS["control"]
        else:
            out[n] = SERIES_COLORS[others % len(SERIES_COLORS)]
            others += 1
    return out


def value_range(values: Iterable[float | None], include: Sequence[float] = (0.0,), pad: float = 0.12) -> list[float]:
    """An axis range from the data: every finite value and every value of ``include`` (0 by default: bars start
    there), widened by ``pad`` of the span at each end. Never a fixed 0-1 that leaves values at 0.02 in a sliver,
    never a bound that clips a value above its nominal range. A zero end (bars start there) is not widened."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    pts = vals + [float(x) for x in include]
    if not pts:
        return [0.0, 1.0]
    lo, hi = min(pts), max(pts)
    if hi == lo:
        return [0.0, 1.0] if hi == 0 else [lo - 0.5 * abs(lo), hi + 0.5 * abs(hi)]
    span = hi - lo
    lo_out = lo if lo == 0 and all(v >= 0 for v in vals) else lo - pad * span
    hi_out = hi if hi == 0 and all(v <= 0 for v in vals) else hi + pad * span
    return [lo_out, hi_out]


def number_text(y: float | None) -> str | None:
    """A bar's value label: two decimals, or two significant digits below 0.1 (0.015, not a misleading 0.01)."""
    if y is None:
        return None
    return f"{y:.2f}" if abs(y) >= 0.1 or y == 0 else f"{y:.2g}"


def range_text(lo: float, hi: float) -> str:
    """A colour or axis range in words, as the colorbar titles write it ("0.05 to 0.55")."""
    return f"{lo:.3g} to {hi:.3g}"


def layer_ticks(layers: Sequence[int] | int, max_ticks: int = 32) -> dict[str, Any]:
    """Axis settings that tick whole layers: every layer up to ``max_ticks``, beyond that a whole-number step (never
    0.5). Narrow panels (three heatmaps side by side) pass a small ``max_ticks``: 30 labels in 200 px overlap."""
    n = layers if isinstance(layers, int) else len(layers)
    step = 1 if n <= max_ticks else next((s for s in (2, 5, 10, 20, 25, 50, 100) if n / s <= max_ticks),
                                         math.ceil(n / max_ticks))
    return {"tickmode": "linear", "tick0": 0, "dtick": step}


def nominal_line(fig: go.Figure, value: float, text: str, axis: str = "y", row: int | None = None,
                 col: int | None = None) -> None:
    """A dotted reference line at a quantity's nominal bound (1 = full model, 0 = no change ...) with its meaning
    written beside it, so that a value beyond the bound reads as what it is instead of being clipped. The text
    of a horizontal line sits right of the plot (the right margin grows to hold it; call this after setting the
    figure's margins), clear of bars and their labels; ``<br>`` breaks a long one."""
    kw: dict[str, Any] = {"line": NOMINAL_LINE, "annotation_text": text,
                          "annotation_font": {"size": 11, "color": "#555555"}}
    if row is not None:
        kw |= {"row": row, "col": col}
    if axis == "y":
        fig.add_hline(y=value, annotation_position="right", **kw)
        width = max(len(line) for line in text.split("<br>")) * 6 + 16
        fig.update_layout(margin={"r": max(fig.layout.margin.r or 0, width)})
    else:
        fig.add_vline(x=value, annotation_position="top right", **kw)


def topk_bars(results: Mapping[str, Sequence[tuple[str, float]]], title: str | None = None,
              roles: Mapping[str, str] | None = None, expected: str | None = None) -> go.Figure:
    """One horizontal bar chart per model of its top-k next tokens, side by side, coloured by model role (the
    role written in the panel title); one probability axis for all panels, fitted to the largest probability.
    ``expected``: the expected answer's first token as decoded; its bar is outlined in black and labelled
    "✓ expected" wherever it is among the top k."""
    names = list(results)
    roles = roles or {}
    colors = model_colors(names, roles=roles)
    fig = make_subplots(rows=1, cols=max(1, len(names)), horizontal_spacing=0.08,
                        subplot_titles=[f"{n} ({roles[n]})" if roles.get(n) else n for n in names])
    xrange = value_range([p for toks in results.values() for _, p in toks], pad=0.15)
    for i, name in enumerate(names, 1):
        toks = list(results[name])[::-1]
        hit = [expected is not None and t == expected for t, _ in toks]
        fig.add_trace(go.Bar(x=[p for _, p in toks], y=[repr(t)[1:-1] or "␣" for t, _ in toks], orientation="h",
                             name=name, marker_color=colors[name],
                             marker_line={"color": [BLACK if h else colors[name] for h in hit],
                                          "width": [3 if h else 0 for h in hit]},
                             text=[number_text(p) + (" ✓ expected" if h else "") for (_, p), h in zip(toks, hit,
                                                                                                  strict=True)],
                             textposition="auto", hovertemplate="%{y}: %{x:.4f}<extra>" + name + "</extra>"),
                      row=1, col=i)
        fig.update_xaxes(range=xrange, title_text="probability", row=1, col=i)
    fig.update_layout(showlegend=False, height=120 + 28 * max((len(v) for v in results.values()), default=5),
                      margin={"l": 10, "r": 10, "t": 50, "b": 40}, title=title)
    return fig


SCOREBOARD_METRICS = {"forget_acc": "forget (lower = forgotten)", "paraphrase_acc": "paraphrased forget",
                      "retain_acc": "retain (higher = kept)", "utility": "utility"}
# forget accuracy is the knowledge still there (orange); retain and utility are neutral series
SCOREBOARD_STYLES: dict[str, dict[str, Any]] = {
    "forget_acc": {"color": ORANGE}, "paraphrase_acc": {"color": ORANGE, "pattern": {"shape": "/"}},
    "retain_acc": {"color": TEAL}, "utility": {"color": PURPLE}}


def scoreboard_bars(board: pd.DataFrame) -> go.Figure:
    """Forget vs retain accuracy (and paraphrase, utility) per model, as grouped bars.

    Bars rather than a forget-vs-retain scatter: unlearned models pile up near (0, 1), where scatter labels
    overlap and become unreadable. ``board`` has a ``model`` column and the metric columns."""
    fig = go.Figure()
    models = [str(m) for m in board["model"]]
    metrics = [c for c in SCOREBOARD_METRICS if c in board.columns]
    for m in metrics:
        ys = [None if pd.isna(v) else float(v) for v in board[m]]
        label = SCOREBOARD_METRICS[m]
        fig.add_trace(go.Bar(x=models, y=ys, name=label, marker=SCOREBOARD_STYLES[m],
                             text=[number_text(y) for y in ys], textposition="outside",
                             textfont_size=10, cliponaxis=False,
                             hovertemplate="%{x}: %{y:.3f}<extra>" + label + "</extra>"))
    values = [v for m in metrics for v in board[m] if not pd.isna(v)]
    fig.update_yaxes(range=value_range(values, pad=0.15), title="top-1 accuracy")
    fig.update_xaxes(title=None, categoryorder="array", categoryarray=models)
    fig.update_layout(barmode="group", height=420, margin={"l": 10, "r": 10, "t": 30, "b": 40},
                      legend_title_text=None, legend={"orientation": "h", "y": 1.08, "x": 0})
    return fig


def trajectory_lines(traj: Mapping[str, Sequence[float]], title: str = "") -> go.Figure:
    """Mean forget-answer probability per unlearning step, one line per method (the axis fits the data)."""
    fig = go.Figure()
    colors = model_colors(traj)
    for name, ys in traj.items():
        fig.add_trace(go.Scatter(y=list(ys), mode="lines", name=name, line={"color": colors[name]}))
    fig.update_layout(title=title, xaxis_title="unlearning step", yaxis_title="mean forget answer probability",
                      yaxis_range=value_range([y for ys in traj.values() for y in ys]), height=360,
                      margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig
