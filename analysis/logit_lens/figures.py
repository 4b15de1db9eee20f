"""Plotly figures of the logit lens, shared by the app and the notebooks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures import SERIES_COLORS, layer_ticks, model_colors, value_range
from analysis.logit_lens.options import QUANTITY_LABELS
from analysis.patching.figures import layer_line, summary_values

if TYPE_CHECKING:
    from analysis.logit_lens.result import LensResult

COLOURS = SERIES_COLORS  # kept for importers; lens_lines colours models by role (analysis.figures.model_colors)


def lens_lines(results: Mapping[str, LensResult], prob: str = "mean_prob", rank: str = "first_rank",
               title: str = "", reference: str | None = None) -> go.Figure:
    """The answer's probability (left) and rank (right, log scale, 1 = top) by layer for each model, read through
    each result's readout (the original's by default), mean over samples with 95% bootstrap intervals. The
    probability axis fits the values (intervals included); layers tick at whole numbers. Colours by role: the
    original teal, the ``reference`` (the retrain control) blue, the others in turn."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=[QUANTITY_LABELS.get(prob, prob), QUANTITY_LABELS.get(rank, rank)])
    colours = model_colors(results, reference=reference)
    for k, (name, res) in enumerate(results.items()):
        colour = colours[name]
        dash = "solid" if k == 0 else "dash"
        layer_line(fig, res.layers, res.by_layer[prob], name, colour, 1, 1, dash=dash)
        layer_line(fig, res.layers, res.by_layer[rank], name, colour, 1, 2, dash=dash, show_legend=False)
    probs = [v for res in results.values() for v in summary_values(res.by_layer[prob])]
    fig.update_yaxes(title_text="probability", range=value_range(probs), row=1, col=1)
    fig.update_yaxes(title_text="rank (1 = top)", type="log", row=1, col=2)
    layers = next(iter(results.values())).layers if results else []
    for c in (1, 2):
        fig.update_xaxes(title_text="layer (resid_post)", row=1, col=c, **layer_ticks(layers, 12))
    fig.update_layout(title=title or None, height=400, margin={"l": 10, "r": 10, "t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.25})
    return fig
