"""The ruler: where a judged model's score on the rule's signal sits among the zoo's P and N members, with its
95% interval and the rule's boundary."""

from __future__ import annotations

import plotly.graph_objects as go

from analysis.figures import value_range
from analysis.palette import BLACK, GREY
from analysis.validation.figures import STATUS_COLORS, STATUS_SYMBOLS
from analysis.validation.result import STATUS_LABELS
from analysis.verdict.judge import ModelVerdict

JUDGED_COLOR = BLACK


def signal_ruler_figure(zoo: dict[str, tuple[str, float]], model: str, score: float | None,
                        ci: tuple[float, float] | None, signal: str, threshold: float | None = None) -> go.Figure:
    """One row per zoo member (P, then N) and the judged model on top, its interval as an error bar; a
    threshold (the rule's) as a dashed line when given."""
    fig = go.Figure()
    rows = [model]
    for status in ("present", "absent"):
        names = [n for n, (s, _) in zoo.items() if s == status]
        rows += names
        fig.add_trace(go.Scatter(x=[zoo[n][1] for n in names], y=names, mode="markers", name=STATUS_LABELS[status],
                                 marker={"size": 11, "color": STATUS_COLORS[status], "symbol": STATUS_SYMBOLS[status]},
                                 hovertemplate="%{y}: %{x:.3g}<extra></extra>"))
    if score is not None:
        err = {} if ci is None else {"error_x": {"type": "data", "symmetric": False, "array": [ci[1] - score],
                                                 "arrayminus": [score - ci[0]], "color": JUDGED_COLOR,
                                                 "thickness": 2}}
        fig.add_trace(go.Scatter(x=[score], y=[model], mode="markers", name=f"{model} (judged)",
                                 marker={"size": 14, "color": JUDGED_COLOR, "symbol": "star"}, **err,
                                 hovertemplate="%{y}: %{x:.3g}<extra>judged</extra>"))
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color=GREY,
                      annotation_text=f"boundary {threshold:.3g}", annotation_position="top")
    fig.update_yaxes(categoryorder="array", categoryarray=rows, autorange="reversed", title_text=None)
    fig.update_xaxes(title_text="mean over samples (higher = knowledge present)", showgrid=True,
                     gridcolor="#eeeeee", zeroline=True, zerolinecolor="#bbbbbb")
    fig.update_layout(title={"text": signal, "font": {"size": 14}}, height=140 + 24 * len(rows),
                      margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": -0.2, "x": 0}, plot_bgcolor="white")
    return fig


def ruler_figure(zoo: dict[str, tuple[str, float]], v: ModelVerdict) -> go.Figure:
    """The rule's signal: the zoo, the judged model with its interval and the rule's boundary, on an axis fitted
    to all of them (members at 0.001-0.04 are not squeezed into a 0-1 axis)."""
    fig = signal_ruler_figure(zoo, v.model, v.score, v.ci, v.signal, v.threshold)
    xs = [x for _, x in zoo.values()] + [v.score, v.threshold, *(v.ci or ())]
    fig.update_xaxes(range=value_range(xs, include=(), pad=0.08))
    return fig
