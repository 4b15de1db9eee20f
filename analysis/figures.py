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
    # Models often pile up (e.g. several methods at forget 0 / retain 1): spread their labels around the
    # points, and don't clip labels of points on the plot edge.
    positions = ["top center", "bottom center", "middle right", "middle left", "top right", "bottom left"]
    for i, trace in enumerate(fig.data):
        trace.textposition = [positions[(i + j) % len(positions)] for j in range(len(trace.x))]
    fig.update_traces(marker={"size": 12}, cliponaxis=False)
    fig.update_xaxes(range=[-0.05, 1.05], title="forget accuracy (lower = more forgotten)")
    fig.update_yaxes(range=[-0.05, 1.05], title="retain accuracy (higher = better kept)")
    fig.add_shape(type="rect", x0=-0.05, y0=0.9, x1=0.1, y1=1.05, line={"dash": "dot", "color": "green"},
                  fillcolor="rgba(0,160,0,0.05)")
    fig.update_layout(height=460, margin={"l": 10, "r": 10, "t": 50, "b": 40}, legend_title_text="role")
    return fig


def trajectory_lines(traj: Mapping[str, Sequence[float]], title: str = "") -> go.Figure:
    """Mean forget-answer probability per unlearning step, one line per method."""
    fig = go.Figure()
    for name, ys in traj.items():
        fig.add_trace(go.Scatter(y=list(ys), mode="lines", name=name))
    fig.update_layout(title=title, xaxis_title="unlearning step", yaxis_title="mean forget answer probability",
                      yaxis_range=[0, 1.02], height=360, margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


# ---- causal tracing ---------------------------------------------------------------------------------
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from analysis.tracing.result import AIEResult, TraceResult

TRACE_KIND_TITLES = {"resid": "residual stream (hook_resid_post)", "mlp": "MLP output (hook_mlp_out)",
                     "attn": "attention output (hook_attn_out)"}
ROLE_STYLES = {"first subject token": "#9467bd", "middle subject tokens": "#8c564b", "last subject token": "#d62728",
               "further tokens": "#7f7f7f", "last token": "#1f77b4"}


def trace_value_range(results: Sequence[TraceResult]) -> tuple[float, float]:
    """One colour range over several traces (so original and unlearned heatmaps read on the same scale)."""
    lo, hi = float("inf"), float("-inf")
    for r in results:
        for kind in r.scores:
            a = r.array(kind)
            lo, hi = min(lo, float(a.min()), r.corrupted, r.clean), max(hi, float(a.max()), r.corrupted, r.clean)
    return (lo, hi) if lo < hi else (lo - 1e-6, hi + 1e-6)


def trace_heatmaps(result: TraceResult, title: str = "", kinds: Sequence[str] | None = None,
                   zrange: tuple[float, float] | None = None, diverging: bool = False) -> go.Figure:
    """Causal-tracing heatmaps of one trace, one panel per kind side by side: tokens (rows, subject tokens
    starred and boxed) x layers (columns), as in ROME's figures. ``diverging`` for a difference of traces."""
    kinds = [k for k in (kinds or list(result.scores)) if k in result.scores]
    n_tok = len(result.tokens)
    s0, s1 = result.subject_range
    labels = [f"{t}*" if s0 <= i < s1 else t for i, t in enumerate(result.tokens)]
    fig = make_subplots(rows=1, cols=max(1, len(kinds)), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[TRACE_KIND_TITLES.get(k, k) for k in kinds])
    if zrange is None:
        zrange = trace_value_range([result])
    if diverging:
        m = max(abs(zrange[0]), abs(zrange[1]), 1e-9)
        zrange = (-m, m)
    metric = result.options.get("metric", "metric")
    for c, kind in enumerate(kinds, 1):
        z = result.array(kind).T  # [token, layer]
        fig.add_trace(go.Heatmap(z=z, x=result.layers, y=list(range(n_tok)), coloraxis="coloraxis",
                                 customdata=[[labels[i]] * len(result.layers) for i in range(n_tok)],
                                 hovertemplate="token %{customdata}<br>layer %{x}<br>" + metric
                                 + " %{z:.4f}<extra>" + kind + "</extra>"), row=1, col=c)
        fig.add_shape(type="rect", x0=-0.5, x1=len(result.layers) - 0.5, y0=s0 - 0.5, y1=s1 - 0.5,
                      line={"color": "black", "width": 1.5, "dash": "dot"}, row=1, col=c)
        fig.update_xaxes(title_text="layer", dtick=max(1, len(result.layers) // 12), row=1, col=c)
    fig.update_yaxes(tickmode="array", tickvals=list(range(n_tok)), ticktext=labels, autorange="reversed")
    label = "difference" if diverging else metric
    fig.update_layout(coloraxis={"colorscale": "RdBu_r" if diverging else "Purples", "cmin": zrange[0],
                                 "cmax": zrange[1], "colorbar": {"title": {"text": label}}},
                      title=title or None, height=140 + 26 * n_tok, margin={"l": 10, "r": 10, "t": 60, "b": 40})
    return fig


def trace_title(name: str, result: TraceResult) -> str:
    return f"{name}: clean {result.clean:.3f}, corrupted {result.corrupted:.3f}"


def aie_lines(results: Mapping[str, AIEResult], kinds: Sequence[str] | None = None) -> go.Figure:
    """Average indirect effect per layer for each token role (colour) and model (line style), one panel per
    kind: ROME's summary over a sample set, before vs after unlearning."""
    names = list(results)
    first = results[names[0]] if names else None
    kinds = [k for k in (kinds or (list(first.aie) if first else [])) if all(k in r.aie for r in results.values())]
    fig = make_subplots(rows=1, cols=max(1, len(kinds)), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[TRACE_KIND_TITLES.get(k, k) for k in kinds])
    dashes = ["solid", "dash", "dot", "dashdot", "longdash"]
    for c, kind in enumerate(kinds, 1):
        for m, name in enumerate(names):
            res = results[name]
            for role, row in zip(res.roles, res.aie[kind], strict=True):
                if all(v is None for v in row):
                    continue
                fig.add_trace(go.Scatter(x=res.layers, y=row, mode="lines+markers", name=f"{name} · {role}",
                                         legendgroup=f"{name} · {role}", showlegend=c == 1,
                                         line={"color": ROLE_STYLES.get(role), "dash": dashes[m % len(dashes)]},
                                         hovertemplate=f"{name}<br>{role}<br>layer %{{x}}: AIE %{{y:.4f}}"
                                                       "<extra></extra>"), row=1, col=c)
        fig.update_xaxes(title_text="layer", row=1, col=c)
    metric = first.options.get("metric", "metric") if first else "metric"
    fig.update_yaxes(title_text=f"average indirect effect ({metric})", row=1, col=1)
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2})
    return fig
