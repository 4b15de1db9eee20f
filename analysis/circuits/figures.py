"""Plotly figures and tables of circuits (EAP-IG) and CUD, shared by the app and the notebooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from analysis.circuits.result import CircuitResult, CUDReport

CUD_LABELS = {1: "hard", -1: "easy", 0: "-"}


def _circuit_node_xy(node: str, n_heads: int, n_layers: int) -> tuple[float, float]:
    """Layers as rows (input at the bottom, logits at the top); heads then the MLP across a row."""
    if node == "input":
        return (n_heads / 2, -1.0)
    if node == "logits":
        return (n_heads / 2, float(n_layers))
    layer = int(node[1:].split(".")[0])
    if node.startswith("m"):
        return (float(n_heads), layer + 0.5)
    return (float(node.split(".h")[1]), float(layer))


def circuit_graph(edges: Sequence[Mapping[str, object]], circuit: Sequence[int], n_layers: int, n_heads: int,
                  title: str = "") -> go.Figure:
    """Edges of ``circuit`` (indices into ``edges`` of {"src", "dst", "score"}); width by |score|, blue for
    positive, red for negative; hover shows the score."""
    fig = go.Figure()
    chosen = [edges[i] for i in circuit]
    top = max((abs(float(e["score"])) for e in chosen), default=1.0) or 1.0  # type: ignore[arg-type]
    nodes: set[str] = set()
    for e in chosen:
        src, dst = str(e["src"]), str(e["dst"])
        dnode = dst.rsplit(".", 1)[0] if dst.count(".") == 2 else dst
        nodes |= {src, dnode}
        (x0, y0), (x1, y1) = _circuit_node_xy(src, n_heads, n_layers), _circuit_node_xy(dnode, n_heads, n_layers)
        s = float(e["score"])  # type: ignore[arg-type]
        fig.add_trace(go.Scatter(x=[x0, (x0 + x1) / 2, x1], y=[y0, (y0 + y1) / 2, y1], mode="lines",
                                 line={"width": 0.5 + 6 * abs(s) / top, "color": "#1f77b4" if s >= 0 else "#d62728"},
                                 opacity=0.7, showlegend=False, hoverinfo="text",
                                 text=[f"{src} → {dst}<br>score {s:+.4g}"] * 3))
    xy = [_circuit_node_xy(n, n_heads, n_layers) for n in sorted(nodes)]
    fig.add_trace(go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", text=sorted(nodes),
                             textposition="top center", marker={"size": 14, "color": "#444"}, showlegend=False,
                             hoverinfo="text"))
    fig.update_layout(title=title, height=520, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis={"visible": False}, yaxis={"title": "layer", "tickvals": list(range(-1, n_layers + 1)),
                                                       "ticktext": ["input", *map(str, range(n_layers)), "logits"]})
    return fig


def cud_scatter(table: pd.DataFrame, rho: float | None) -> go.Figure:
    """CUD (x) vs observed difficulty (y) per forget sample, coloured by calibration label."""
    fig = px.scatter(table, x="cud", y="observed", color="label", hover_data=["id"],
                     title=f"CUD vs observed difficulty (Spearman rho {'-' if rho is None else f'{rho:.3f}'})")
    fig.update_layout(height=400, xaxis_title="CUD (higher = predicted harder)",
                      yaxis_title="observed difficulty (mean auc, higher = harder)")
    return fig


def signature_bars(signature: Mapping[str, Mapping[str, float | int | None]]) -> go.Figure:
    """Easy vs hard circuit signature: one subplot per statistic."""
    keys = [k for k in next(iter(signature.values()), {}) if k != "n"]
    fig = make_subplots(rows=1, cols=max(1, len(keys)), subplot_titles=keys)
    for j, k in enumerate(keys, start=1):
        groups = [g for g in signature if g != "all"]
        fig.add_trace(go.Bar(x=groups, y=[signature[g][k] for g in groups], showlegend=False,
                             marker={"color": ["#2ca02c" if g == "easy" else "#d62728" for g in groups]}), 1, j)
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def cud_table(report: CUDReport) -> pd.DataFrame:
    """One row per forget sample: id, out-of-fold CUD, observed difficulty and calibration label (the
    input of ``cud_histogram`` and ``cud_scatter``)."""
    return pd.DataFrame({"id": report.ids, "cud": report.cud, "observed": report.observed,
                         "label": [CUD_LABELS[x] for x in report.labels]})


def cud_histogram(table: pd.DataFrame, nbins: int = 20) -> go.Figure:
    """Distribution of CUD over the forget samples (``table`` from ``cud_table``)."""
    return px.histogram(table, x="cud", nbins=nbins, title="CUD distribution")


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
