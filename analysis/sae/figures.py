"""Plotly figures of the SAE suppression-vs-deletion analysis, shared by the app and the notebooks."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go

from analysis.hooks import kind_hook_template


def restoration_curves(per_model: Mapping[str, Mapping[str, float]], acc_original: float | None = None,
                       title: str = "Forget accuracy under SAE feature steering",
                       reference: str | None = "retrain") -> go.Figure:
    """Forget accuracy vs steering strength alpha, one line per model ({model: {alpha: acc}}; alpha 0 is
    the unsteered model). The retrain control's curve (the model named ``reference``, dashed) is the injection
    baseline."""
    fig = go.Figure()
    for name, curve in per_model.items():
        xs = sorted(curve, key=float)
        fig.add_trace(go.Scatter(x=[float(a) for a in xs], y=[curve[a] for a in xs], mode="lines+markers",
                                 name=name, line={"dash": "dash"} if name == reference else {}))
    if acc_original is not None:
        fig.add_hline(y=acc_original, line_dash="dot", annotation_text="original")
    fig.update_layout(title=title, height=380, xaxis_title="alpha", yaxis_title="forget accuracy",
                      yaxis={"range": [-0.02, 1.02]}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def probe_layers(per_model: Mapping[str, Mapping[str, float | None]], reference: str | None = "retrain") -> go.Figure:
    """Probe accuracy on forget samples by layer, one line per model ({model: {layer: acc}}; the model named
    ``reference``, the retrain control, dashed)."""
    fig = go.Figure()
    for name, by_layer in per_model.items():
        xs = sorted(by_layer, key=int)
        fig.add_trace(go.Scatter(x=[int(x) for x in xs], y=[by_layer[x] for x in xs], mode="lines+markers",
                                 name=name, line={"dash": "dash"} if name == reference else {}))
    fig.update_layout(title="Probe readout: forget answers decoded from each model's own residual stream",
                      height=380, xaxis_title=f"layer ({kind_hook_template('resid').format(layer='L')})",
                      yaxis_title="probe accuracy",
                      yaxis={"range": [-0.02, 1.02]}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


