"""Plotly figures of the SAE suppression-vs-deletion analysis, shared by the app and the notebooks."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go

from analysis.figures import layer_ticks, model_colors, nominal_line, number_text, value_range
from analysis.hooks import kind_hook_template
from analysis.palette import TEAL


def restoration_curves(per_model: Mapping[str, Mapping[str, float]], acc_original: float | None = None,
                       title: str = "Forget accuracy under SAE feature steering",
                       reference: str | None = "retrain") -> go.Figure:
    """Forget accuracy vs steering strength alpha, one line per model ({model: {alpha: acc}}; alpha 0 is
    the unsteered model). The retrain control's curve (the model named ``reference``, blue, dashed) is the
    injection baseline; the original's accuracy a dotted teal line. The axis fits the curves and that line."""
    fig = go.Figure()
    colors = model_colors(per_model, reference=reference)
    values: list[float | None] = []
    for name, curve in per_model.items():
        xs = sorted(curve, key=float)
        values += [curve[a] for a in xs]
        fig.add_trace(go.Scatter(x=[float(a) for a in xs], y=[curve[a] for a in xs], mode="lines+markers",
                                 name=name, line={"color": colors[name], **({"dash": "dash"} if name == reference else {})}))
    if acc_original is not None:
        values.append(acc_original)
        fig.add_hline(y=acc_original, line={"color": TEAL, "dash": "dot", "width": 1.5}, annotation_text="original",
                      annotation_font={"size": 11, "color": "#555555"})
    fig.update_layout(title=title, height=380, xaxis_title="alpha (steering strength)", yaxis_title="forget accuracy",
                      yaxis={"range": value_range(values)}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def probe_layers(per_model: Mapping[str, Mapping[str, float | None]], reference: str | None = "retrain") -> go.Figure:
    """Probe accuracy on forget samples by layer, one line per model ({model: {layer: acc}}; the model named
    ``reference``, the retrain control, blue and dashed); whole-layer ticks, the axis fitted to the values."""
    fig = go.Figure()
    colors = model_colors(per_model, reference=reference)
    values: list[float | None] = []
    layers: set[int] = set()
    for name, by_layer in per_model.items():
        xs = sorted(by_layer, key=int)
        values += [by_layer[x] for x in xs]
        layers |= {int(x) for x in xs}
        fig.add_trace(go.Scatter(x=[int(x) for x in xs], y=[by_layer[x] for x in xs], mode="lines+markers",
                                 name=name, line={"color": colors[name], **({"dash": "dash"} if name == reference else {})}))
    fig.update_layout(title="Probe readout: forget answers decoded from each model's own residual stream",
                      height=380, xaxis_title=f"layer ({kind_hook_template('resid').format(layer='L')})",
                      yaxis_title="probe accuracy",
                      yaxis={"range": value_range(values)}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    fig.update_xaxes(**layer_ticks(max(layers, default=0) + 1))
    return fig


def retention_bars(per_model: Mapping[str, float | None], reference: str | None = "retrain",
                   title: str = "") -> go.Figure:
    """Expert-feature retention per model ({model: retention}: the forget expert features' summed activation on
    the model over that on the original, at the last prompt token). 1 = as active as in the original; above 1
    the model fires them more than the original did. Values above 1 stay on the axis, with a dotted line at 1;
    the retrain control (``reference``) blue."""
    names = list(per_model)
    colors = model_colors(names, reference=reference)
    ys = [per_model[n] for n in names]
    fig = go.Figure(go.Bar(x=names, y=ys, marker_color=[colors[n] for n in names],
                           text=[number_text(y) for y in ys], textposition="outside",
                           cliponaxis=False, hovertemplate="%{x}: retention %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title or None, height=320, plot_bgcolor="white",
                      yaxis={"title": "expert-feature retention (1 = original)",
                             "range": value_range(ys, include=(0.0, 1.0), pad=0.15)},
                      margin={"l": 10, "r": 10, "t": 40 if title else 20, "b": 40})
    nominal_line(fig, 1.0, "1 = as active<br>as in the original")
    return fig
