"""Plotly figure builders shared by the app and the notebooks (so both show the same plot)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

ROLE_COLORS = {"original": "#1f77b4", "unlearned": "#d62728", "control": "#2ca02c"}


def topk_bars(results: Mapping[str, Sequence[tuple[str, float]]], title: str | None = None,
              roles: Mapping[str, str] | None = None) -> go.Figure:
    """One horizontal bar chart per model of its top-k next tokens, side by side, coloured by model role."""
    names = list(results)
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=names, horizontal_spacing=0.08)
    for i, name in enumerate(names, 1):
        toks = list(results[name])[::-1]
        fig.add_trace(go.Bar(x=[p for _, p in toks], y=[repr(t)[1:-1] or "␣" for t, _ in toks], orientation="h",
                             name=name, marker_color=ROLE_COLORS.get((roles or {}).get(name, ""), "#7f7f7f"), text=[f"{p:.2f}" for _, p in toks], textposition="auto",
                             hovertemplate="%{y}: %{x:.4f}<extra>" + name + "</extra>"), row=1, col=i)
        fig.update_xaxes(range=[0, 1], title_text="probability", row=1, col=i)
    fig.update_layout(showlegend=False, height=120 + 28 * max((len(v) for v in results.values()), default=5),
                      margin={"l": 10, "r": 10, "t": 50, "b": 40}, title=title)
    return fig


SCOREBOARD_METRICS = {"forget_acc": "forget (lower = forgotten)", "paraphrase_acc": "paraphrased forget",
                      "retain_acc": "retain (higher = kept)", "utility": "utility"}


def scoreboard_bars(board: pd.DataFrame) -> go.Figure:
    """Forget vs retain accuracy (and paraphrase, utility) per model, as grouped bars.

    Bars rather than a forget-vs-retain scatter: unlearned models pile up near (0, 1), where scatter labels
    overlap and become unreadable. ``board`` has a ``model`` column and the metric columns."""
    long = board.melt(id_vars=["model"], value_vars=[c for c in SCOREBOARD_METRICS if c in board.columns],
                      var_name="metric", value_name="accuracy")
    long["metric"] = long["metric"].map(SCOREBOARD_METRICS)
    colors = {"forget (lower = forgotten)": "#d62728", "paraphrased forget": "#ff9896",
              "retain (higher = kept)": "#2ca02c", "utility": "#1f77b4"}
    fig = px.bar(long, x="model", y="accuracy", color="metric", barmode="group", color_discrete_map=colors,
                 text_auto=".2f", category_orders={"model": list(board["model"])})
    fig.update_traces(textposition="outside", textfont_size=10, cliponaxis=False)
    fig.update_yaxes(range=[0, 1.12], title="top-1 accuracy")
    fig.update_xaxes(title=None)
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 30, "b": 40}, legend_title_text=None,
                      legend={"orientation": "h", "y": 1.08, "x": 0})
    return fig


def trajectory_lines(traj: Mapping[str, Sequence[float]], title: str = "") -> go.Figure:
    """Mean forget-answer probability per unlearning step, one line per method."""
    fig = go.Figure()
    for name, ys in traj.items():
        fig.add_trace(go.Scatter(y=list(ys), mode="lines", name=name))
    fig.update_layout(title=title, xaxis_title="unlearning step", yaxis_title="mean forget answer probability",
                      yaxis_range=[0, 1.02], height=360, margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


# ---- causal tracing ---------------------------------------------------------------------------------
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from analysis.tracing.result import AIEResult, TraceResult

TRACE_KIND_TITLES = {"resid": "residual stream<br><sub>hook_resid_post</sub>",
                     "mlp": "MLP output<br><sub>hook_mlp_out</sub>",
                     "attn": "attention output<br><sub>hook_attn_out</sub>"}
ROLE_STYLES = {"first subject token": "#9467bd", "middle subject tokens": "#8c564b", "last subject token": "#d62728",
               "further tokens": "#7f7f7f", "last token": "#1f77b4"}


def trace_value_range(results: Sequence[TraceResult]) -> tuple[float, float]:
    """One colour range over several traces (so original and unlearned heatmaps read on the same scale)."""
    lo, hi = float("inf"), float("-inf")
    for r in results:
        for kind in r.scores:
            a = r.array(kind)
            lo, hi = min(lo, float(a.min()), r.corrupted, r.clean), max(hi, float(a.max()), r.corrupted, r.clean)
    return (lo, hi) if lo < hi else (lo - 1e-6, hi + 1e-6)


def trace_heatmaps(result: TraceResult, title: str = "", kinds: Sequence[str] | None = None,
                   zrange: tuple[float, float] | None = None, diverging: bool = False) -> go.Figure:
    """Causal-tracing heatmaps of one trace, one panel per kind side by side: tokens (rows, subject tokens
    starred and boxed) x layers (columns), as in ROME's figures. ``diverging`` for a difference of traces."""
    kinds = [k for k in (kinds or list(result.scores)) if k in result.scores]
    n_tok = len(result.tokens)
    s0, s1 = result.subject_range
    labels = [f"{t}*" if s0 <= i < s1 else t for i, t in enumerate(result.tokens)]
    fig = make_subplots(rows=1, cols=max(1, len(kinds)), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[TRACE_KIND_TITLES.get(k, k) for k in kinds])
    if zrange is None:
        zrange = trace_value_range([result])
    if diverging:
        m = max(abs(zrange[0]), abs(zrange[1]), 1e-9)
        zrange = (-m, m)
    metric = result.options.get("metric", "metric")
    for c, kind in enumerate(kinds, 1):
        z = result.array(kind).T  # [token, layer]
        fig.add_trace(go.Heatmap(z=z, x=result.layers, y=list(range(n_tok)), coloraxis="coloraxis",
                                 customdata=[[labels[i]] * len(result.layers) for i in range(n_tok)],
                                 hovertemplate="token %{customdata}<br>layer %{x}<br>" + metric
                                 + " %{z:.4f}<extra>" + kind + "</extra>"), row=1, col=c)
        fig.add_shape(type="rect", x0=-0.5, x1=len(result.layers) - 0.5, y0=s0 - 0.5, y1=s1 - 0.5,
                      line={"color": "black", "width": 1.5, "dash": "dot"}, row=1, col=c)
        fig.update_xaxes(title_text="layer", dtick=max(1, len(result.layers) // 12), row=1, col=c)
    fig.update_yaxes(tickmode="array", tickvals=list(range(n_tok)), ticktext=labels, autorange="reversed")
    label = "difference" if diverging else metric
    fig.update_layout(coloraxis={"colorscale": "RdBu_r" if diverging else "Purples", "cmin": zrange[0],
                                 "cmax": zrange[1], "colorbar": {"title": {"text": label}}},
                      title=title or None, height=170 + 26 * n_tok, margin={"l": 10, "r": 10, "t": 90, "b": 40})
    return fig


def trace_title(name: str, result: TraceResult) -> str:
    return f"{name}: clean {result.clean:.3f}, corrupted {result.corrupted:.3f}"


def aie_lines(results: Mapping[str, AIEResult], kinds: Sequence[str] | None = None) -> go.Figure:
    """Average indirect effect per layer for each token role (colour) and model (line style), one panel per
    kind: ROME's summary over a sample set, before vs after unlearning."""
    names = list(results)
    first = results[names[0]] if names else None
    kinds = [k for k in (kinds or (list(first.aie) if first else [])) if all(k in r.aie for r in results.values())]
    fig = make_subplots(rows=1, cols=max(1, len(kinds)), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[TRACE_KIND_TITLES.get(k, k) for k in kinds])
    dashes = ["solid", "dash", "dot", "dashdot", "longdash"]
    for c, kind in enumerate(kinds, 1):
        for m, name in enumerate(names):
            res = results[name]
            for role, row in zip(res.roles, res.aie[kind], strict=True):
                if all(v is None for v in row):
                    continue
                fig.add_trace(go.Scatter(x=res.layers, y=row, mode="lines+markers", name=f"{name} · {role}",
                                         legendgroup=f"{name} · {role}", showlegend=c == 1,
                                         line={"color": ROLE_STYLES.get(role), "dash": dashes[m % len(dashes)]},
                                         hovertemplate=f"{name}<br>{role}<br>layer %{{x}}: AIE %{{y:.4f}}"
                                                       "<extra></extra>"), row=1, col=c)
        fig.update_xaxes(title_text="layer", row=1, col=c)
    metric = first.options.get("metric", "metric") if first else "metric"
    fig.update_yaxes(title_text=f"average indirect effect ({metric})", row=1, col=1)
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2})
    return fig


# ---- prompt-token attribution (unPact) --------------------------------------------------------------------
if TYPE_CHECKING:
    from analysis.attribution.result import AttributionComparison, RecoveryReport, TokenAttribution

ATTRIBUTION_GROUP_LABELS = {"keyword": "keywords", "non_keyword": "non-keywords", "function": "function words",
                            "other": "other content words", "all": "all tokens"}


def attribution_heatmap(attributions: Mapping[str, TokenAttribution], title: str = "",
                        keywords_from: str | None = None) -> go.Figure:
    """Token contributions of one prompt on several models: one row per model, one column per prompt token
    (BOS left out), on one diverging colour scale. Each model's KeyTokens are starred; the columns of the
    keywords of ``keywords_from`` (e.g. the original model) are boxed."""
    names = list(attributions)
    if not names:
        return go.Figure()
    first = attributions[names[0]]
    cols = first.positions
    labels = [f"{i}:{first.tokens[i]}" for i in cols]
    z = [[attributions[n].contributions[i] for i in cols] for n in names]
    text = [[("★ " if i in attributions[n].keywords else "") + ("" if c is None else f"{c:+.2f}")
             for i, c in zip(cols, row, strict=True)] for n, row in zip(names, z, strict=True)]
    m = max([abs(c) for row in z for c in row if c is not None] or [1e-9])
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=names, text=text, texttemplate="%{text}", colorscale="RdBu_r",
                               zmin=-m, zmax=m, colorbar={"title": {"text": "contribution"}},
                               hovertemplate="%{y}<br>token %{x}<br>contribution %{z:.4f}<extra></extra>"))
    ref = attributions.get(keywords_from) if keywords_from else None
    if ref is not None:
        for k in ref.keywords:
            if k in cols:
                x = cols.index(k)
                fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=-0.5, y1=len(names) - 0.5,
                              line={"color": "black", "width": 2, "dash": "dot"})
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title or None, height=120 + 48 * len(names), margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      xaxis_title="prompt token (★ = that model's keyword; boxed = "
                                  f"{keywords_from or 'reference'} keywords)")
    return fig


def contribution_change_bars(comparisons: Mapping[str, AttributionComparison],
                             groups: Sequence[str] = ("keyword", "non_keyword", "function", "other")) -> go.Figure:
    """Mean contribution change (after - before) per token group, one bar per model, forget and retain panels."""
    splits = [s for s in ("forget", "retain") if any(s in c.summary for c in comparisons.values())]
    fig = make_subplots(rows=1, cols=max(1, len(splits)), subplot_titles=[f"{s} samples" for s in splits],
                        horizontal_spacing=0.08)
    for name, comp in comparisons.items():
        for c, split in enumerate(splits, 1):
            row = comp.summary.get(split, {})
            fig.add_trace(go.Bar(x=[ATTRIBUTION_GROUP_LABELS.get(g, g) for g in groups],
                                 y=[row.get(g) for g in groups], name=name, legendgroup=name, showlegend=c == 1,
                                 hovertemplate=f"{name}<br>%{{x}}: %{{y:+.3f}}<extra>{split}</extra>"), row=1, col=c)
    fig.update_yaxes(title_text="mean contribution change (after − before)", row=1, col=1)
    fig.update_layout(barmode="group", height=380, margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def recovery_bars(reports: Mapping[str, RecoveryReport], metric: str = "recovery_rate") -> go.Figure:
    """Keyword-emphasis recovery per strategy: one bar per unlearned model and, hatched grey, the retrain
    control (a model that never learned the facts: its "recovery" is what emphasis invents)."""
    fig = go.Figure()
    names = list(reports)
    if not names:
        return fig
    strategies = list(dict.fromkeys(s for r in reports.values() for s in r.strategies))
    label = {"recovery_rate": "recovery rate", "prob_gain": "answer-probability gain"}.get(metric, metric)

    def value(res: Mapping[str, object] | None, s: str) -> float | None:
        r = None if res is None else res.get(s)
        return None if r is None else getattr(r, metric)

    for name in names:
        fig.add_trace(go.Bar(x=strategies, y=[value(reports[name].results, s) for s in strategies], name=name,
                             hovertemplate=f"{name}<br>%{{x}}: %{{y:.3f}}<extra>{label}</extra>"))
    first = reports[names[0]]
    if first.retrain_results is not None:
        fig.add_trace(go.Bar(x=strategies, y=[value(first.retrain_results, s) for s in strategies],
                             name=f"{first.retrain} (control)", marker={"color": "#bbbbbb", "pattern": {"shape": "/"}},
                             hovertemplate=f"{first.retrain}<br>%{{x}}: %{{y:.3f}}<extra>{label}</extra>"))
    fig.update_layout(barmode="group", height=380, yaxis_title=label, xaxis_title="emphasis strategy",
                      margin={"l": 10, "r": 10, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.25})
    if metric == "recovery_rate":
        fig.update_yaxes(range=[0, 1.02])
    return fig


# ---- circuits (EAP-IG) and CUD ---------------------------------------------------------------------
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


def restoration_curves(per_model: Mapping[str, Mapping[str, float]], acc_original: float | None = None,
                       title: str = "Forget accuracy under SAE feature steering") -> go.Figure:
    """Forget accuracy vs steering strength alpha, one line per model ({model: {alpha: acc}}; alpha 0 is
    the unsteered model). The retrain control's curve is the injection baseline."""
    fig = go.Figure()
    for name, curve in per_model.items():
        xs = sorted(curve, key=float)
        fig.add_trace(go.Scatter(x=[float(a) for a in xs], y=[curve[a] for a in xs], mode="lines+markers",
                                 name=name, line={"dash": "dash"} if name == "retrain" else {}))
    if acc_original is not None:
        fig.add_hline(y=acc_original, line_dash="dot", annotation_text="original")
    fig.update_layout(title=title, height=380, xaxis_title="alpha", yaxis_title="forget accuracy",
                      yaxis={"range": [-0.02, 1.02]}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def probe_layers(per_model: Mapping[str, Mapping[str, float | None]]) -> go.Figure:
    """Probe accuracy on forget samples by layer, one line per model ({model: {layer: acc}})."""
    fig = go.Figure()
    for name, by_layer in per_model.items():
        xs = sorted(by_layer, key=int)
        fig.add_trace(go.Scatter(x=[int(x) for x in xs], y=[by_layer[x] for x in xs], mode="lines+markers",
                                 name=name, line={"dash": "dash"} if name == "retrain" else {}))
    fig.update_layout(title="Probe readout: forget answers decoded from each model's own residual stream",
                      height=380, xaxis_title="layer (blocks.L.hook_resid_post)", yaxis_title="probe accuracy",
                      yaxis={"range": [-0.02, 1.02]}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


# ---- CUD and circuit tables (the data the difficulty and circuits pages show beside their figures) ---------
if TYPE_CHECKING:
    from analysis.circuits.api import CircuitResult
    from analysis.circuits.cud import CUDReport

CUD_LABELS = {1: "hard", -1: "easy", 0: "-"}


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


# ---- diagnosis: per-sample readings of every signal ------------------------------------------------------
READING_COLORS = {"gone": "#2ca02c", "present": "#d62728", "inconclusive": "#ffbf00", "n/a": "#e5e5e5"}


def reading_map(readings: Mapping[str, Sequence[str]], ids: Sequence[str], title: str = "") -> go.Figure:
    """One row per signal, one column per sample, coloured by the signal's reading of that sample (gone /
    present / inconclusive / n/a): where the signals agree on a sample and where they do not."""
    names = list(readings)
    codes = {r: i for i, r in enumerate(READING_COLORS)}
    n = len(READING_COLORS)
    scale = [[pos, c] for i, c in enumerate(READING_COLORS.values()) for pos in (i / n, (i + 1) / n)]
    z = [[codes.get(r, codes["n/a"]) for r in readings[name]] for name in names]
    text = [[r if r in codes else "n/a" for r in readings[name]] for name in names]
    fig = go.Figure(go.Heatmap(z=z, x=list(ids), y=names, text=text, zmin=-0.5, zmax=n - 0.5, colorscale=scale,
                               xgap=1, ygap=2, showscale=False,
                               hovertemplate="%{x}<br>%{y}: %{text}<extra></extra>"))
    for reading, color in READING_COLORS.items():  # a legend for the categorical colours
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=reading,
                                 marker={"size": 12, "color": color, "symbol": "square"}))
    fig.update_xaxes(showticklabels=len(ids) <= 40, tickangle=-60, title_text="forget sample")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title or None, height=140 + 40 * len(names), margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": 1.12, "x": 0}, plot_bgcolor="white")
    return fig
