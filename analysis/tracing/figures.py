"""Plotly figures of causal tracing, shared by the app and the notebooks (so both show the same plot)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures import layer_ticks, range_text
from analysis.hooks import kind_hook_template
from analysis.palette import BLACK, DIVERGING_SCALE, GREY, PURPLE, SEQUENTIAL_SCALE, SKY, VERMILLION

if TYPE_CHECKING:
    from analysis.tracing.result import AIEResult, TraceResult

_KIND_PANELS = {"resid": "residual stream", "mlp": "MLP output", "attn": "attention output"}
# Panel titles: what is restored, and its hook point (the name without "blocks.{layer}.").
TRACE_KIND_TITLES = {k: f"{text}<br><sub>{kind_hook_template(k).rsplit('.', 1)[-1]}</sub>"
                     for k, text in _KIND_PANELS.items()}
# token roles: neutral palette hues (orange and blue keep their present / gone meaning), named in the legend
ROLE_STYLES = {"first subject token": SKY, "middle subject tokens": PURPLE, "last subject token": VERMILLION,
               "further tokens": GREY, "last token": BLACK}

PANEL_TICKS = 8  # layer ticks on one of three side-by-side panels (analysis.figures.layer_ticks)


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
    starred and boxed) x layers (columns, whole-layer ticks), as in ROME's figures, on a white-to-blue scale over
    ``zrange`` (default: this trace's own range, clean and corrupted included), the range written in the colorbar.
    ``diverging`` for a difference of traces: blue negative, white 0, orange positive, symmetric around 0."""
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
        x0, x1 = min(result.layers, default=0) - 0.5, max(result.layers, default=0) + 0.5
        fig.add_shape(type="rect", x0=x0, x1=x1, y0=s0 - 0.5, y1=s1 - 0.5,
                      line={"color": BLACK, "width": 1.5, "dash": "dot"}, row=1, col=c)
        fig.update_xaxes(title_text="layer", row=1, col=c, **layer_ticks(result.layers, PANEL_TICKS))
    fig.update_yaxes(tickmode="array", tickvals=list(range(n_tok)), ticktext=labels, autorange="reversed")
    label = "difference" if diverging else metric
    fig.update_layout(coloraxis={"colorscale": DIVERGING_SCALE if diverging else SEQUENTIAL_SCALE, "cmin": zrange[0],
                                 "cmax": zrange[1],
                                 "colorbar": {"title": {"text": f"{label}<br>({range_text(*zrange)})"}}},
                      title=title or None, height=170 + 26 * n_tok, margin={"l": 10, "r": 10, "t": 90, "b": 40})
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
        fig.update_xaxes(title_text="layer", row=1, col=c, **layer_ticks(first.layers if first else [], PANEL_TICKS))
    metric = first.options.get("metric", "metric") if first else "metric"
    fig.update_yaxes(title_text=f"average indirect effect ({metric})", row=1, col=1)
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2})
    return fig


