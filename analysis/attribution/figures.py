"""Plotly figures of prompt-token attribution (unPact) and keyword-emphasis recovery, shared by the app and the
notebooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

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


