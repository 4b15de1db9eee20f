"""Plotly figures of the relearning attack, shared by the app and the notebooks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.relearn.options import VARIANT_LABELS, VARIANTS

if TYPE_CHECKING:
    from analysis.relearn.result import RelearnResult

MODEL_COLOUR = "#d62728"
REFERENCE_COLOUR = "#1f77b4"
ORIGINAL_COLOUR = "#2ca02c"


def recovery_curves(result: RelearnResult, title: str = "") -> go.Figure:
    """Per variant: forget accuracy of the held-out samples after each attack step, the judged model (red)
    against the same attack on the retrain control (blue, dashed); the original's accuracy before any attack is
    the green line the model would climb back to."""
    variants = [v for v in VARIANTS if v in result.variants]
    fig = make_subplots(rows=1, cols=len(variants), horizontal_spacing=0.08,
                        subplot_titles=[VARIANT_LABELS[v] for v in variants])
    for c, v in enumerate(variants, start=1):
        r = result.variants[v]
        steps = list(range(len(r.curve)))
        first = c == 1
        fig.add_trace(go.Scatter(x=steps, y=r.curve, mode="lines", name=result.model, legendgroup="model",
                                 showlegend=first, line={"color": MODEL_COLOUR},
                                 hovertemplate=f"{result.model}<br>step %{{x}}: %{{y:.3f}}<extra></extra>"),
                      row=1, col=c)
        fig.add_trace(go.Scatter(x=steps, y=r.reference_curve, mode="lines", name=f"{result.reference} (baseline)",
                                 legendgroup="reference", showlegend=first,
                                 line={"color": REFERENCE_COLOUR, "dash": "dash"},
                                 hovertemplate=f"{result.reference}<br>step %{{x}}: %{{y:.3f}}<extra></extra>"),
                      row=1, col=c)
        fig.add_hline(y=r.accuracy["original"], line={"color": ORIGINAL_COLOUR, "dash": "dot", "width": 1},
                      row=1, col=c)
        fig.update_xaxes(title_text="attack step", row=1, col=c)
        fig.update_yaxes(range=[-0.03, 1.03], row=1, col=c)
    fig.update_yaxes(title_text="held-out forget accuracy", row=1, col=1)
    fig.update_layout(title=title or None, height=380, margin={"l": 10, "r": 10, "t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.25}, font={"size": 11})
    fig.update_annotations(font_size=12)
    return fig


def recovered_share_bars(results: Mapping[str, RelearnResult]) -> go.Figure:
    """Per model and variant: the mean recovered share (net of the retrain baseline) with its 95% bootstrap
    interval; models whose share is undefined are left out of that variant."""
    fig = go.Figure()
    colours = {"forget": MODEL_COLOUR, "retain": "#ff7f0e"}
    for v in VARIANTS:
        names = [n for n, r in results.items() if v in r.variants and r.variants[v].value is not None]
        ys = [float(results[n].variants[v].value) for n in names]  # type: ignore[arg-type]
        cis = [results[n].variants[v].ci for n in names]
        err = {"type": "data", "symmetric": False, "array": [(c[1] - y) if c else 0 for c, y in zip(cis, ys, strict=True)],
               "arrayminus": [(y - c[0]) if c else 0 for c, y in zip(cis, ys, strict=True)]}
        fig.add_trace(go.Bar(x=names, y=ys, name=VARIANT_LABELS[v], marker_color=colours.get(v), error_y=err,
                             hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(barmode="group", yaxis={"title": "recovered share (net of retrain)", "range": [0, 1.05]},
                      height=380, margin={"l": 10, "r": 10, "t": 30, "b": 40}, legend={"orientation": "h", "y": -0.2})
    return fig
