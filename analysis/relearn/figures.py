"""Plotly figures of the relearning attack, shared by the app and the notebooks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures import layer_ticks, nominal_line, value_range
from analysis.palette import PURPLE, ROLE_COLORS, TEAL
from analysis.relearn.options import VARIANT_LABELS, VARIANTS

if TYPE_CHECKING:
    from analysis.relearn.result import RelearnResult

MODEL_COLOUR = ROLE_COLORS["unlearned"]  # the judged model
REFERENCE_COLOUR = ROLE_COLORS["control"]  # the retrain control
ORIGINAL_COLOUR = ROLE_COLORS["original"]
VARIANT_COLOURS = {"forget": TEAL, "retain": PURPLE}  # two neutral series, named in the legend


def recovery_curves(result: RelearnResult, title: str = "") -> go.Figure:
    """Per variant: forget accuracy of the held-out samples after each attack step, the judged model (vermillion)
    against the same attack on the retrain control (blue, dashed); the original's accuracy before any attack is
    the dotted teal line (labelled) the model would climb back to. One accuracy axis for every panel, fitted to
    the curves and that line."""
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
        fig.add_hline(y=r.accuracy["original"], line={"color": ORIGINAL_COLOUR, "dash": "dot", "width": 1.5},
                      annotation_text="original, before any attack", annotation_position="top left",
                      annotation_font={"size": 11, "color": "#555555"}, row=1, col=c)
        fig.update_xaxes(title_text="attack step", row=1, col=c, **layer_ticks(steps))  # whole steps
    yrange = value_range([y for v in variants for y in (*result.variants[v].curve, *result.variants[v].reference_curve,
                                                         result.variants[v].accuracy.get("original"))])
    fig.update_yaxes(range=yrange)
    fig.update_yaxes(title_text="held-out forget accuracy", row=1, col=1)
    fig.update_layout(title=title or None, height=380, margin={"l": 10, "r": 10, "t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.25}, font={"size": 11})
    fig.update_annotations(font_size=12)
    return fig


def recovered_share_bars(results: Mapping[str, RelearnResult]) -> go.Figure:
    """Per model and variant: the mean recovered share (net of the retrain baseline) with its 95% bootstrap
    interval; models whose share is undefined are left out of that variant. The axis fits the values and
    intervals: a share below 0 (the model relearns less than the retrain control) stays visible, with a dotted
    line at 0."""
    fig = go.Figure()
    values: list[float] = []
    for v in VARIANTS:
        names = [n for n, r in results.items() if v in r.variants and r.variants[v].value is not None]
        ys = [float(results[n].variants[v].value) for n in names]  # type: ignore[arg-type]
        cis = [results[n].variants[v].ci for n in names]
        err = {"type": "data", "symmetric": False, "array": [(c[1] - y) if c else 0 for c, y in zip(cis, ys, strict=True)],
               "arrayminus": [(y - c[0]) if c else 0 for c, y in zip(cis, ys, strict=True)]}
        values += ys + [x for c in cis if c for x in c]
        fig.add_trace(go.Bar(x=names, y=ys, name=VARIANT_LABELS[v], marker_color=VARIANT_COLOURS.get(v, PURPLE),
                             error_y=err, hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    yrange = value_range(values)
    fig.update_layout(barmode="group", yaxis={"title": "recovered share (net of retrain)", "range": yrange},
                      height=380, margin={"l": 10, "r": 10, "t": 30, "b": 40}, legend={"orientation": "h", "y": -0.2})
    if yrange[0] < 0:
        nominal_line(fig, 0.0, "0 = no more than<br>the retrain control")
    return fig
