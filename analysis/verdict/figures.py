"""The ruler: where a judged model's score on the rule's signal sits among the zoo's P and N members, with its
95% interval and the rule's boundary."""

from __future__ import annotations

import plotly.graph_objects as go

from analysis.validation.figures import STATUS_COLORS, STATUS_SYMBOLS
from analysis.validation.result import STATUS_LABELS
from analysis.verdict.judge import ModelVerdict

JUDGED_COLOR = "#222222"


def ruler_figure(zoo: dict[str, tuple[str, float]], v: ModelVerdict) -> go.Figure:
    """One row per zoo member (P, then N) and the judged model on top, its interval as an error bar; the
    rule's threshold as a dashed line."""
    fig = go.Figure()
    rows = [v.model]
    for status in ("present", "absent"):
        names = [n for n, (s, _) in zoo.items() if s == status]
        rows += names
        fig.add_trace(go.Scatter(x=[zoo[n][1] for n in names], y=names, mode="markers", name=STATUS_LABELS[status],
                                 marker={"size": 11, "color": STATUS_COLORS[status], "symbol": STATUS_SYMBOLS[status]},
                                 hovertemplate="%{y}: %{x:.2f}<extra></extra>"))
    if v.score is not None:
        err = {} if v.ci is None else {"error_x": {"type": "data", "symmetric": False,
                                                   "array": [v.ci[1] - v.score], "arrayminus": [v.score - v.ci[0]],
                                                   "color": JUDGED_COLOR, "thickness": 2}}
        fig.add_trace(go.Scatter(x=[v.score], y=[v.model], mode="markers", name=f"{v.model} (judged)",
                                 marker={"size": 14, "color": JUDGED_COLOR, "symbol": "star"}, **err,
                                 hovertemplate="%{y}: %{x:.2f}<extra>judged</extra>"))
    fig.add_vline(x=v.threshold, line_dash="dash", line_color="#555555",
                  annotation_text=f"boundary {v.threshold:.2f}", annotation_position="top")
    fig.update_yaxes(categoryorder="array", categoryarray=rows, autorange="reversed", title_text=None)
    fig.update_xaxes(title_text=f"{v.signal}: mean over samples (higher = knowledge present)", range=[-0.05, 1.05],
                     showgrid=True, gridcolor="#eeeeee")
    fig.update_layout(height=120 + 24 * len(rows), margin={"l": 10, "r": 10, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.2, "x": 0}, plot_bgcolor="white")
    return fig
