"""Plotly figures of cross-model activation patching, shared by the app and the notebooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures import layer_ticks, nominal_line, range_text, value_range
from analysis.palette import ROLE_COLORS, SEQUENTIAL_SCALE

if TYPE_CHECKING:
    from analysis.patching.result import Interval, LayerSummary, PatchingResult

MODEL_COLOUR = ROLE_COLORS["unlearned"]  # the judged model
REFERENCE_COLOUR = ROLE_COLORS["control"]  # the retrain control


def summary_values(summary: LayerSummary) -> list[float]:
    """Every mean and interval end of a per-layer summary (what an axis drawn from it must hold)."""
    out = [m for m in summary.mean if m is not None]
    return out + [x for c in summary.ci if c is not None for x in c]


def layer_line(fig: go.Figure, layers: Sequence[int], summary: LayerSummary, name: str, colour: str, row: int,
          col: int, dash: str = "solid", show_legend: bool = True) -> None:
    """A mean line with its bootstrap interval as error bars (layers without a value are left out)."""
    xs = [x for x, m in zip(layers, summary.mean, strict=True) if m is not None]
    ys = [m for m in summary.mean if m is not None]
    cis: list[Interval] = [c for c, m in zip(summary.ci, summary.mean, strict=True) if m is not None]
    err = None
    if cis and all(c is not None for c in cis):
        err = {"type": "data", "symmetric": False, "array": [c[1] - y for c, y in zip(cis, ys, strict=True)],  # type: ignore[index]
               "arrayminus": [y - c[0] for c, y in zip(cis, ys, strict=True)], "thickness": 1}  # type: ignore[index]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, showlegend=show_legend,
                             line={"color": colour, "dash": dash}, error_y=err,
                             hovertemplate=f"{name}<br>layer %{{x}}: %{{y:.4f}}<extra></extra>"), row=row, col=col)


def patching_curves(result: PatchingResult, title: str = "") -> go.Figure:
    """Left: the mean drop of the original's answer log-prob when the judged model's (vermillion) or the retrain
    control's (blue, dashed) hidden state after block l is patched in, with 95% bootstrap intervals. Right: the
    mean per-layer erasure ratio (judged drop / retrain drop, clipped to [0, 1] by construction: the axis keeps
    that range and says so) over the samples where it is defined, a dotted line at 1 = as deep as the retrain."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["answer log-prob drop when patched in", "erasure ratio (model / retrain)"])
    layer_line(fig, result.layers, result.drop_by_layer, result.model, MODEL_COLOUR, 1, 1)
    if result.reference_drop_by_layer is not None and result.reference:
        layer_line(fig, result.layers, result.reference_drop_by_layer, f"{result.reference} (reference)", REFERENCE_COLOUR,
              1, 1, dash="dash")
    if result.ratio_by_layer is not None:
        layer_line(fig, result.layers, result.ratio_by_layer, f"{result.model}: ratio", MODEL_COLOUR, 1, 2, dash="dot")
    drops = summary_values(result.drop_by_layer) + (summary_values(result.reference_drop_by_layer)
                                                    if result.reference_drop_by_layer is not None else [])
    fig.update_yaxes(title_text="drop (nats)", range=value_range(drops), row=1, col=1)
    fig.update_yaxes(title_text="erasure ratio (fixed 0-1 axis: its whole range)", range=[-0.05, 1.1], row=1, col=2)
    for c in (1, 2):
        fig.update_xaxes(title_text="layer patched (resid_post)", row=1, col=c, **layer_ticks(result.layers, 12))
    fig.update_layout(title=title or None, height=400, margin={"l": 10, "r": 10, "t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.25})
    if result.ratio_by_layer is not None:
        nominal_line(fig, 1.0, "1 = as deep as<br>the retrain", row=1, col=2)
    return fig


def ratio_heatmap(result: PatchingResult) -> go.Figure:
    """Per-sample erasure ratios (rows: samples, columns: layers; blank where undefined) with each sample's depth,
    on a white-to-blue scale over the ratios' own range (written in the colorbar title; blue = erased deeper)."""
    ratio = result.ratio or [[None] * len(result.layers) for _ in result.sample_ids]
    labels = [f"{sid} (depth {'-' if d is None else f'{d:.2f}'})" for sid, d in zip(result.sample_ids, result.depth,
                                                                                      strict=True)]
    vals = [float(v) for row in ratio for v in row if v is not None]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    fig = go.Figure(go.Heatmap(z=ratio, x=result.layers, y=labels, zmin=lo, zmax=hi, colorscale=SEQUENTIAL_SCALE,
                               colorbar={"title": {"text": f"ratio<br>({range_text(lo, hi)})"}},
                               hovertemplate="%{y}<br>layer %{x}: ratio %{z:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="layer patched", **layer_ticks(result.layers))
    fig.update_layout(height=max(260, 22 * len(labels) + 80), margin={"l": 10, "r": 10, "t": 30, "b": 30},
                      yaxis={"autorange": "reversed"}, plot_bgcolor="white")
    return fig


def depth_bars(results: Mapping[str, PatchingResult]) -> go.Figure:
    """The per-model depth score (1 = as deep as the retrain control) with its 95% bootstrap interval, on an axis
    fitted to the values and intervals (the dotted line at 1 shows when the axis reaches it)."""
    names = [n for n, r in results.items() if r.depth_mean is not None]
    ys = [results[n].depth_mean for n in names]
    lo = [y - results[n].depth_ci[0] if results[n].depth_ci else 0 for n, y in zip(names, ys, strict=True)]  # type: ignore[operator,index]
    hi = [results[n].depth_ci[1] - y if results[n].depth_ci else 0 for n, y in zip(names, ys, strict=True)]  # type: ignore[operator,index]
    fig = go.Figure(go.Bar(x=names, y=ys, error_y={"type": "data", "symmetric": False, "array": hi,
                                                    "arrayminus": lo}, marker_color=MODEL_COLOUR,
                           hovertemplate="%{x}: depth %{y:.3f}<extra></extra>"))
    yrange = value_range([*ys, *[y - d for y, d in zip(ys, lo, strict=True)],  # type: ignore[operator]
                          *[y + d for y, d in zip(ys, hi, strict=True)]])  # type: ignore[operator]
    fig.update_layout(yaxis={"title": "depth score (1 = as deep as the retrain control)", "range": yrange},
                      height=360, margin={"l": 10, "r": 10, "t": 30, "b": 40})
    if yrange[1] >= 1.0:
        nominal_line(fig, 1.0, "1 = as deep as<br>the retrain control")
    return fig
