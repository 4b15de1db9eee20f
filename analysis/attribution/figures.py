"""Plotly figures of prompt-token attribution (unPact) and keyword-emphasis recovery, shared by the app and the
notebooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures import model_colors, range_text, value_range
from analysis.palette import BLACK, DIVERGING_SCALE, ROLE_COLORS

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
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=names, text=text, texttemplate="%{text}", colorscale=DIVERGING_SCALE,
                               zmin=-m, zmax=m,
                               colorbar={"title": {"text": f"contribution<br>({range_text(-m, m)};<br>orange +, blue −)"}},
                               hovertemplate="%{y}<br>token %{x}<br>contribution %{z:.4f}<extra></extra>"))
    ref = attributions.get(keywords_from) if keywords_from else None
    if ref is not None:
        for k in ref.keywords:
            if k in cols:
                x = cols.index(k)
                fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=-0.5, y1=len(names) - 0.5,
                              line={"color": BLACK, "width": 2, "dash": "dot"})
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title or None, height=120 + 48 * len(names), margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      xaxis_title="prompt token (★ = that model's keyword; boxed = "
                                  f"{keywords_from or 'reference'} keywords)")
    return fig


def contribution_change_bars(comparisons: Mapping[str, AttributionComparison],
                             groups: Sequence[str] = ("keyword", "non_keyword", "function", "other")) -> go.Figure:
    """Mean contribution change (after - before) per token group, one bar per model, forget and retain panels
    (one value axis for both, fitted to the data, 0 marked)."""
    splits = [s for s in ("forget", "retain") if any(s in c.summary for c in comparisons.values())]
    fig = make_subplots(rows=1, cols=max(1, len(splits)), subplot_titles=[f"{s} samples" for s in splits],
                        horizontal_spacing=0.08)
    colors = model_colors(comparisons)
    values: list[float | None] = []
    for name, comp in comparisons.items():
        for c, split in enumerate(splits, 1):
            row = comp.summary.get(split, {})
            ys = [row.get(g) for g in groups]
            values += ys
            fig.add_trace(go.Bar(x=[ATTRIBUTION_GROUP_LABELS.get(g, g) for g in groups], y=ys, name=name,
                                 legendgroup=name, showlegend=c == 1, marker_color=colors[name],
                                 hovertemplate=f"{name}<br>%{{x}}: %{{y:+.3f}}<extra>{split}</extra>"), row=1, col=c)
    fig.update_yaxes(range=value_range(values), zeroline=True, zerolinecolor="#888888")
    fig.update_yaxes(title_text="mean contribution change (after − before)", row=1, col=1)
    fig.update_layout(barmode="group", height=380, margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def recovery_bars(reports: Mapping[str, RecoveryReport], metric: str = "recovery_rate") -> go.Figure:
    """Keyword-emphasis recovery per strategy: one bar per unlearned model and, hatched blue, the retrain
    control (a model that never learned the facts: its "recovery" is what emphasis invents). The axis fits the
    values (a rate of 0.02 is not drawn on a 0-1 axis)."""
    fig = go.Figure()
    names = list(reports)
    if not names:
        return fig
    strategies = list(dict.fromkeys(s for r in reports.values() for s in r.strategies))
    label = {"recovery_rate": "recovery rate", "prob_gain": "answer-probability gain"}.get(metric, metric)

    def value(res: Mapping[str, object] | None, s: str) -> float | None:
        r = None if res is None else res.get(s)
        return None if r is None else getattr(r, metric)

    colors = model_colors(names, reference=reports[names[0]].retrain)
    values: list[float | None] = []
    for name in names:
        ys = [value(reports[name].results, s) for s in strategies]
        values += ys
        fig.add_trace(go.Bar(x=strategies, y=ys, name=name, marker_color=colors[name],
                             hovertemplate=f"{name}<br>%{{x}}: %{{y:.3f}}<extra>{label}</extra>"))
    first = reports[names[0]]
    if first.retrain_results is not None:
        ys = [value(first.retrain_results, s) for s in strategies]
        values += ys
        fig.add_trace(go.Bar(x=strategies, y=ys, name=f"{first.retrain} (control)",
                             marker={"color": ROLE_COLORS["control"], "pattern": {"shape": "/"}},
                             hovertemplate=f"{first.retrain}<br>%{{x}}: %{{y:.3f}}<extra>{label}</extra>"))
    fig.update_layout(barmode="group", height=380, yaxis_title=label, xaxis_title="emphasis strategy",
                      margin={"l": 10, "r": 10, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.25})
    fig.update_yaxes(range=value_range(values))
    return fig


