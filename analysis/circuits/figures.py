"""Plotly figures and tables of circuits (EAP-IG) and CUD, shared by the app and the notebooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures import nominal_line, number_text, value_range
from analysis.palette import BLUE, GREY, ORANGE, PURPLE, TEAL

if TYPE_CHECKING:
    from analysis.circuits.result import CircuitResult, CUDReport

CUD_LABELS = {1: "hard", -1: "easy", 0: "-"}
# hard to unlearn / still answered = the knowledge stays (orange); easy / forgotten = it goes (blue)
CUD_LABEL_COLORS = {"hard": ORANGE, "easy": BLUE, "-": GREY, "still answered": ORANGE, "forgotten": BLUE}
EDGE_SIGN_COLORS = {"positive": ORANGE, "negative": BLUE}  # as the diverging scale: orange +, blue -
LABEL_MAX_HEADS = 8  # node labels beyond this many heads a row would overlap: hover and the axes name them
LABEL_MAX_LAYERS = 24
AXIS_MAX_HEADS = 16  # head ticks beyond this many would overlap: every k-th head is ticked


def _circuit_node_xy(node: str, n_heads: int, n_layers: int) -> tuple[float, float]:
    """Layers as rows on whole numbers (input at -1, logits at n_layers); heads 0..n_heads-1 then the MLP across a
    row, the MLP set off by half a column."""
    if node == "input":
        return ((n_heads - 1) / 2, -1.0)
    if node == "logits":
        return ((n_heads - 1) / 2, float(n_layers))
    layer = int(node[1:].split(".")[0])
    if node.startswith("m"):
        return (n_heads + 0.5, float(layer))
    return (float(node.split(".h")[1]), float(layer))


def _node_label(node: str) -> str:
    """A short label: the row already names the layer ("h3", "MLP"); input and logits are named by the axis."""
    if node in ("input", "logits"):
        return ""
    return "MLP" if node.startswith("m") else "h" + node.split(".h")[1]


def circuit_graph(edges: Sequence[Mapping[str, object]], circuit: Sequence[int], n_layers: int, n_heads: int,
                  title: str = "") -> go.Figure:
    """Edges of ``circuit`` (indices into ``edges`` of {"src", "dst", "score"}): layers as rows (whole-number
    ticks, input at the bottom, logits at the top), heads h0, h1, ... then the MLP across a row (named on the x
    axis); only the circuit's nodes are drawn, labelled short ("h3", "MLP") up to 8 heads, full names on hover. Edge width by |score|, orange for a positive score
    and blue for a negative one (named in the legend); an edge within one layer is bent so that it does not run
    through the nodes between its ends."""
    fig = go.Figure()
    chosen = [edges[i] for i in circuit]
    top = max((abs(float(e["score"])) for e in chosen), default=1.0) or 1.0  # type: ignore[arg-type]
    nodes: set[str] = set()
    signs: set[str] = set()
    for e in chosen:
        src, dst = str(e["src"]), str(e["dst"])
        dnode = dst.rsplit(".", 1)[0] if dst.count(".") == 2 else dst
        nodes |= {src, dnode}
        (x0, y0), (x1, y1) = _circuit_node_xy(src, n_heads, n_layers), _circuit_node_xy(dnode, n_heads, n_layers)
        s = float(e["score"])  # type: ignore[arg-type]
        sign = "positive" if s >= 0 else "negative"
        signs.add(sign)
        bend = 0.35 if y0 == y1 else 0.0
        fig.add_trace(go.Scatter(x=[x0, (x0 + x1) / 2, x1], y=[y0, (y0 + y1) / 2 + bend, y1], mode="lines",
                                 line={"width": 0.5 + 6 * abs(s) / top, "color": EDGE_SIGN_COLORS[sign],
                                       "shape": "spline" if bend else "linear"},
                                 opacity=0.7, showlegend=False, legendgroup=sign, hoverinfo="text",
                                 text=[f"{src} → {dst}<br>score {s:+.4g}"] * 3))
    for sign in ("positive", "negative"):  # the legend: what the two colours mean, in words
        if sign in signs:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"{sign} edge score", legendgroup=sign,
                                     line={"color": EDGE_SIGN_COLORS[sign], "width": 4}))
    order = sorted(nodes)
    xy = [_circuit_node_xy(n, n_heads, n_layers) for n in order]
    labelled = n_heads <= LABEL_MAX_HEADS and n_layers <= LABEL_MAX_LAYERS
    fig.add_trace(go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text" if labelled else "markers",
                             text=[_node_label(n) for n in order] if labelled else None, textposition="middle right",
                             textfont={"size": 11}, hovertext=order, hoverinfo="text",
                             marker={"size": 12 if labelled else 8, "color": "#444444"}, showlegend=False))
    step = 1 if n_layers <= 32 else -(-n_layers // 32)
    rows = list(range(0, n_layers, step))
    heads = list(range(0, n_heads, 1 if n_heads <= AXIS_MAX_HEADS else -(-n_heads // AXIS_MAX_HEADS)))
    fig.update_layout(title=title, height=min(950, max(360, 150 + 56 * (n_layers + 2))),
                      margin={"l": 10, "r": 10, "t": 40, "b": 50}, plot_bgcolor="white",
                      legend={"orientation": "h", "y": -0.04, "yanchor": "top", "x": 0,
                              "title": {"text": "edge width = |score|"}},
                      xaxis={"title": None, "tickvals": [*heads, n_heads + 0.5],
                             "ticktext": [*(f"h{h}" for h in heads), "MLP"], "range": [-0.8, n_heads + 1.6],
                             "showgrid": False, "zeroline": False},
                      yaxis={"title": "layer", "tickmode": "array", "tickvals": [-1, *rows, n_layers],
                             "ticktext": ["input", *map(str, rows), "logits"], "range": [-1.6, n_layers + 0.7],
                             "showgrid": True, "gridcolor": "#eeeeee", "zeroline": False})
    return fig


def faithfulness_bars(faithfulness: Mapping[str, float | None], title: str = "") -> go.Figure:
    """Circuit faithfulness per model ((circuit - empty) / (full - empty)): 1 = the circuit alone recovers the full
    model's metric, 0 = no better than the empty circuit. Values above 1 (the circuit beats the full model, the
    other edges pull the metric down) or below 0 stay on the axis, with dotted lines at 1 and 0; an undefined
    faithfulness (the full-empty gap too small) is listed in the axis label."""
    names = list(faithfulness)
    ys = [faithfulness[n] for n in names]
    undefined = [n for n, y in zip(names, ys, strict=True) if y is None]
    fig = go.Figure(go.Bar(x=names, y=ys, marker_color=TEAL, text=[number_text(y) for y in ys],
                           textposition="outside", cliponaxis=False,
                           hovertemplate="%{x}: faithfulness %{y:.3f}<extra></extra>"))
    fig.update_yaxes(range=value_range(ys, include=(0.0, 1.0), pad=0.15),
                     title_text="faithfulness (1 = full model, 0 = empty circuit)")
    fig.update_xaxes(title_text=("undefined: " + ", ".join(undefined)) if undefined else None)
    fig.update_layout(title=title or None, height=320, margin={"l": 10, "r": 10, "t": 40 if title else 20, "b": 40},
                      plot_bgcolor="white")
    nominal_line(fig, 1.0, "1 = full model")
    return fig


def cud_scatter(table: pd.DataFrame, rho: float | None) -> go.Figure:
    """CUD (x) vs observed difficulty (y) per forget sample, coloured by its label (hard / still answered orange,
    easy / forgotten blue, unlabelled grey; the legend names them)."""
    fig = px.scatter(table, x="cud", y="observed", color="label", hover_data=["id"], color_discrete_map=CUD_LABEL_COLORS,
                     title=f"CUD vs observed difficulty (Spearman rho {'-' if rho is None else f'{rho:.3f}'})")
    fig.update_layout(height=400, xaxis_title="CUD (higher = predicted harder)",
                      yaxis_title="observed difficulty (mean auc, higher = harder)")
    return fig


def signature_bars(signature: Mapping[str, Mapping[str, float | int | None]]) -> go.Figure:
    """Easy vs hard circuit signature: one subplot per statistic (easy blue, hard orange, each named on its
    axis), each axis fitted to its values."""
    keys = [k for k in next(iter(signature.values()), {}) if k != "n"]
    fig = make_subplots(rows=1, cols=max(1, len(keys)), subplot_titles=keys)
    for j, k in enumerate(keys, start=1):
        groups = [g for g in signature if g != "all"]
        ys = [signature[g][k] for g in groups]
        fig.add_trace(go.Bar(x=groups, y=ys, showlegend=False,
                             marker={"color": [CUD_LABEL_COLORS.get(g, PURPLE) for g in groups]}), 1, j)
        fig.update_yaxes(range=value_range(ys), row=1, col=j)
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def cud_table(report: CUDReport) -> pd.DataFrame:
    """One row per forget sample: id, out-of-fold CUD, observed difficulty and calibration label (the
    input of ``cud_histogram`` and ``cud_scatter``)."""
    return pd.DataFrame({"id": report.ids, "cud": report.cud, "observed": report.observed,
                         "label": [CUD_LABELS[x] for x in report.labels]})


def cud_histogram(table: pd.DataFrame, nbins: int = 20) -> go.Figure:
    """Distribution of CUD over the forget samples (``table`` from ``cud_table``)."""
    fig = px.histogram(table, x="cud", nbins=nbins, title="CUD distribution", color_discrete_sequence=[PURPLE])
    fig.update_layout(xaxis_title="CUD (higher = predicted harder)", yaxis_title="forget samples")
    return fig


def circuit_diff_table(before: CircuitResult, after: CircuitResult, k: int = 15) -> pd.DataFrame:
    """Edges of either circuit, each kept / lost / gained from ``before`` to ``after`` with both scores, the
    ``3 k`` largest absolute score changes first. Both results must come from the same graph (same edges)."""
    if len(before.edges) != len(after.edges):
        raise ValueError(f"circuits of different graphs ({len(before.edges)} vs {len(after.edges)} edges)")
    sa, sb = set(before.circuit), set(after.circuit)
    rows = []
    for i in sorted(sa | sb):
        e = before.edges[i]
        status = "kept" if i in sa and i in sb else ("lost" if i in sa else "gained")
        rows.append({"edge": f"{e['src']} → {e['dst']}", "status": status, "original": e["score"],
                     "unlearned": after.edges[i]["score"], "change": after.edges[i]["score"] - e["score"]})
    df = pd.DataFrame(rows, columns=["edge", "status", "original", "unlearned", "change"])
    return df.reindex(df["change"].abs().sort_values(ascending=False).index).head(k * 3)
