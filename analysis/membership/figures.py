"""Plotly figures of membership inference, shared by the app and the notebooks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.membership.options import SCORE_LABELS, SCORES
from analysis.palette import BLUE, GREY, ORANGE, PURPLE, TEAL

if TYPE_CHECKING:
    from analysis.membership.result import MembershipResult

FORGET_COLOUR = ORANGE  # the forget samples: member-like = the knowledge is there
HELDOUT_COLOUR = BLUE  # held-out samples the model never saw: what absent knowledge looks like
SCORE_COLOURS: dict[str, str] = {"mink": PURPLE, "loss": TEAL}  # neutral series, named in the legend


def _auroc_text(result: MembershipResult, score: str) -> str:
    s = result.scores[score]
    if s.auroc is None:
        return f"{SCORE_LABELS[score]}: AUROC -"
    ci = f" [{s.auroc_ci[0]:.2f}, {s.auroc_ci[1]:.2f}]" if s.auroc_ci else ""
    return f"{SCORE_LABELS[score]}: AUROC {s.auroc:.3f}{ci}"


def score_histograms(result: MembershipResult, title: str = "") -> go.Figure:
    """Per score: the distribution of the forget samples' scores (orange) over the held-out scores (blue: never
    trained on), with the AUROC in the panel title. Forget scores to the right of the held-out mass = member-like
    (knowledge present)."""
    fig = make_subplots(rows=1, cols=len(SCORES), horizontal_spacing=0.08,
                        subplot_titles=[_auroc_text(result, k) for k in SCORES])
    for c, k in enumerate(SCORES, start=1):
        s = result.scores[k]
        held = [x for x in s.heldout if x is not None]
        forget = [x for x in s.forget.values() if x is not None]
        fig.add_trace(go.Histogram(x=held, name=f"held-out ({result.heldout}, never trained)", marker_color=HELDOUT_COLOUR,
                                   opacity=0.6, histnorm="probability", nbinsx=30, legendgroup="held",
                                   showlegend=c == 1), row=1, col=c)
        fig.add_trace(go.Histogram(x=forget, name="forget samples", marker_color=FORGET_COLOUR, opacity=0.6,
                                   histnorm="probability", nbinsx=30, legendgroup="forget", showlegend=c == 1),
                      row=1, col=c)
        fig.update_xaxes(title_text="score (higher = more member-like)", row=1, col=c)
    fig.update_yaxes(title_text="share of samples", row=1, col=1)
    fig.update_layout(title=title or None, barmode="overlay", height=360, font={"size": 11},
                      margin={"l": 10, "r": 10, "t": 60, "b": 40}, legend={"orientation": "h", "y": -0.25})
    fig.update_annotations(font_size=12)
    return fig


def auroc_bars(results: Mapping[str, MembershipResult]) -> go.Figure:
    """Per model and score: the AUROC of forget against held-out with its 95% bootstrap interval (0.5 = the
    forget samples look like the held-out ones). The axis keeps AUROC's whole 0-1 range and says so: where a
    value sits between 0, 0.5 and 1 is its meaning."""
    fig = go.Figure()
    for k in SCORES:
        names = [n for n, r in results.items() if r.scores[k].auroc is not None]
        ys = [float(results[n].scores[k].auroc) for n in names]  # type: ignore[arg-type]
        cis = [results[n].scores[k].auroc_ci for n in names]
        err = {"type": "data", "symmetric": False,
               "array": [(c[1] - y) if c else 0 for c, y in zip(cis, ys, strict=True)],
               "arrayminus": [(y - c[0]) if c else 0 for c, y in zip(cis, ys, strict=True)]}
        fig.add_trace(go.Bar(x=names, y=ys, name=SCORE_LABELS[k], marker_color=SCORE_COLOURS.get(k), error_y=err,
                             hovertemplate="%{x}: AUROC %{y:.3f}<extra></extra>"))
    fig.add_hline(y=0.5, line={"color": GREY, "dash": "dash", "width": 1}, annotation_text="0.5 = like held-out",
                  annotation_position="top left", annotation_font={"size": 11, "color": "#555555"})
    fig.update_layout(barmode="group", yaxis={"title": "AUROC forget vs held-out (fixed 0-1 range)", "range": [0, 1.05]},
                      height=360,
                      margin={"l": 10, "r": 10, "t": 30, "b": 40}, legend={"orientation": "h", "y": -0.2})
    return fig
