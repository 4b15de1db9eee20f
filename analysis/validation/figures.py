"""Plotly figures of the meta-evaluation, shared by the Validation page and notebooks: a strip plot per signal
(every member a labelled dot, P members, N members and the unlearning methods in their own bands), the AUROC of
every signal with its interval, and the robustness bars (R, Q, H)."""

from __future__ import annotations

import plotly.graph_objects as go

from analysis.figures import nominal_line, number_text, value_range
from analysis.palette import BLACK, BLUE, GREY, ORANGE, PURPLE, TEAL, VERMILLION
from analysis.validation.result import STATUS_LABELS, ValidationResult

# P members orange (knowledge present), N members blue (absent), the unlearning methods grey (no known status);
# the shape tells them apart too and STATUS_LABELS names them in every legend
STATUS_COLORS = {"present": ORANGE, "absent": BLUE, "unknown": GREY}
STATUS_SYMBOLS = {"present": "triangle-up", "absent": "circle", "unknown": "diamond"}
SEPARATION_COLORS = {"separates": BLACK, "reversed": VERMILLION}  # the rest grey
SEPARATION_LABELS = {"separates": "separates P from N (interval above 0.5)",
                     "reversed": "reversed (interval below 0.5)",
                     "does not separate": "does not separate (interval holds 0.5)",
                     "too few members": "too few members for an interval"}
ROW_PX = 26  # height of one member's row in a strip plot


def _short(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.2f}"


def strip_plot(result: ValidationResult, signal: str) -> go.Figure:
    """One signal's score of every member: one row per member (its name on the axis), grouped P, N, then the
    unlearning methods; members whose score is undefined are listed in the caption row as "n/a"."""
    rec = result.signal(signal)
    fig = go.Figure()
    rows: list[str] = []
    groups: list[list[str]] = []
    for status in ("present", "absent", "unknown"):
        members = result.by_status(status)  # type: ignore[arg-type]
        if not members:
            continue
        names = [m.name for m in members]
        scores = [m.scores.get(signal) for m in members]
        rows += names
        groups.append(names)
        fig.add_trace(go.Scatter(
            x=[s if s is not None else None for s in scores], y=names, mode="markers", name=STATUS_LABELS[status],
            marker={"size": 12, "color": STATUS_COLORS[status], "symbol": STATUS_SYMBOLS[status],
                    "line": {"width": 1, "color": "white"}},
            customdata=[[_short(s), m.notes.get(signal, "")] for s, m in zip(scores, members, strict=True)],
            hovertemplate="%{y}: %{customdata[0]}<br>%{customdata[1]}<extra>" + STATUS_LABELS[status] + "</extra>"))
    for cut in range(1, len(rows)):  # a line between the groups (P | N | methods)
        if any(rows[cut - 1] == g[-1] for g in groups[:-1]):
            fig.add_hline(y=cut - 0.5, line_width=1, line_dash="dot", line_color="#999999")
    p, n = result.scores(signal, "present"), result.scores(signal, "absent")
    if p and n and max(n) < min(p):  # the gap a threshold could sit in
        fig.add_vrect(x0=max(n), x1=min(p), fillcolor="#cccccc", opacity=0.25, line_width=0, layer="below")
    fig.update_yaxes(categoryorder="array", categoryarray=rows, autorange="reversed", title_text=None,
                     tickfont={"size": 12})
    fig.update_xaxes(title_text="score (higher = knowledge present)", zeroline=True, zerolinecolor="#bbbbbb")
    fig.add_annotation(text="▲ P: knowledge present · ● N: knowledge absent · ◆ unlearning method", showarrow=False,
                       xref="paper", yref="paper", x=0, y=1.0, yanchor="bottom", xanchor="left",
                       font={"size": 11, "color": "#555555"})
    fig.update_layout(title={"text": f"{signal}: AUROC {rec.interval()}", "font": {"size": 15}},
                      height=110 + ROW_PX * max(1, len(rows)), margin={"l": 10, "r": 10, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.25 if len(rows) < 8 else -0.12, "x": 0},
                      showlegend=False, plot_bgcolor="white")
    fig.update_xaxes(showgrid=True, gridcolor="#eeeeee")
    return fig


def status_legend() -> go.Figure:
    """A small legend figure for the strip plots (they leave their own legends off to keep the rows aligned)."""
    fig = go.Figure()
    for status, label in STATUS_LABELS.items():
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label,
                                 marker={"size": 12, "color": STATUS_COLORS[status], "symbol": STATUS_SYMBOLS[status]}))
    fig.update_layout(height=60, margin={"l": 0, "r": 0, "t": 0, "b": 0}, legend={"orientation": "h", "y": 0.5},
                      xaxis={"visible": False}, yaxis={"visible": False}, plot_bgcolor="white")
    return fig


def auroc_figure(result: ValidationResult) -> go.Figure:
    """Every signal's AUROC with its 95% interval (best first); 0.5 marked (no separation). One trace per kind of
    separation, its colour named in the legend (black separates, vermillion reversed, grey neither); the axis
    keeps AUROC's whole 0-1 range and says so."""
    recs = sorted(result.signals, key=lambda r: -(r.auroc if r.auroc is not None else -1.0))
    shown = [r for r in recs if r.auroc is not None]
    fig = go.Figure()
    for sep, label in SEPARATION_LABELS.items():
        group = [r for r in shown if r.separation == sep]
        if not group:
            continue
        fig.add_trace(go.Scatter(
            x=[r.auroc for r in group], y=[r.signal for r in group], mode="markers", name=label,
            marker={"size": 11, "color": SEPARATION_COLORS.get(sep, GREY)},
            error_x={"type": "data", "symmetric": False,
                     "array": [(r.ci_high - r.auroc) if r.ci_high is not None and r.auroc is not None else 0
                               for r in group],
                     "arrayminus": [(r.auroc - r.ci_low) if r.ci_low is not None and r.auroc is not None else 0
                                    for r in group]},
            customdata=[[r.interval(), r.separation] for r in group],
            hovertemplate="%{y}: %{customdata[0]} (%{customdata[1]})<extra></extra>"))
    fig.add_vline(x=0.5, line_dash="dot", line_color=GREY, annotation_text="chance", annotation_position="top")
    fig.update_xaxes(range=[-0.02, 1.02],
                     title_text="AUROC, P against N (95% bootstrap interval over members; fixed 0-1 range)")
    fig.update_yaxes(categoryorder="array", categoryarray=[r.signal for r in shown], autorange="reversed",
                     tickfont={"size": 12})
    fig.update_layout(height=150 + 32 * max(1, len(shown)), margin={"l": 10, "r": 10, "t": 30, "b": 40},
                      plot_bgcolor="white", showlegend=True, legend={"orientation": "h", "y": -0.25, "x": 0})
    fig.update_xaxes(showgrid=True, gridcolor="#eeeeee")
    return fig


def robustness_bars(result: ValidationResult) -> go.Figure:
    """R (benign fine-tune), Q (8-bit quantisation) and H (harmonic mean) per signal: 1 = the score did not
    move at all on any zoo member (dotted line); the axis fits the values, a negative one included."""
    recs = [r for r in result.signals if r.robustness_h is not None or r.robustness_r is not None]
    fig = go.Figure()
    for attr, label, color in (("robustness_r", "R: after a benign fine-tune", PURPLE),
                               ("robustness_q", "Q: after 8-bit quantisation", TEAL),
                               ("robustness_h", "H: harmonic mean", BLACK)):
        ys = [getattr(r, attr) for r in recs]
        text = [number_text(y) for y in ys] if attr == "robustness_h" else None
        fig.add_trace(go.Bar(x=[r.signal for r in recs], y=ys, name=label, marker_color=color, text=text,
                             textposition="outside", cliponaxis=False,
                             hovertemplate="%{x}: %{y:.3f}<extra>" + label + "</extra>"))
    values = [v for r in recs for v in (r.robustness_r, r.robustness_q, r.robustness_h) if v is not None]
    fig.update_layout(barmode="group", height=380,
                      yaxis={"range": value_range(values, include=(0.0, 1.0)), "title": "robustness (1 = unmoved)"},
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend={"orientation": "h", "y": 1.12, "x": 0},
                      plot_bgcolor="white")
    fig.update_xaxes(tickangle=-30)
    nominal_line(fig, 1.0, "1 = unmoved")
    return fig
