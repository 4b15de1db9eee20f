"""The figures of a diagnosis, in the order the page and the HTML report show them (``diagnosis_charts``), built
from the stored results with each analysis's own figure builders (so the page, the report and a notebook show
the same plots), and the per-sample readings map of every signal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from analysis.attribution.figures import recovery_bars
from analysis.attribution.result import RecoveryReport
from analysis.circuits.figures import cud_histogram, cud_scatter, cud_table
from analysis.circuits.result import CUDReport
from analysis.diagnosis.result import Diagnosis
from analysis.diagnosis.rules import SAE_READING, TRACE_MIN_SHARE, trace_reading
from analysis.figures import scoreboard_bars
from analysis.palette import BLACK, BLUE, GREY, ORANGE
from analysis.sae.figures import probe_layers, restoration_curves
from analysis.tracing.figures import aie_lines
from analysis.tracing.result import AIEResult

# a reading's colour (the palette's meanings) and its mark, written in each cell and in the legend
READING_COLORS = {"gone": BLUE, "present": ORANGE, "inconclusive": GREY, "n/a": "#E5E5E5"}
READING_MARKS = {"gone": "●", "present": "▲", "inconclusive": "◆", "n/a": ""}
READING_LEGEND = {"gone": "● gone (the signal finds no knowledge)", "present": "▲ present (the signal finds it)",
                  "inconclusive": "◆ inconclusive", "n/a": "n/a (does not apply)"}
MARKS_UP_TO = 60  # samples: beyond this many columns the marks do not fit in the cells


def reading_map(readings: Mapping[str, Sequence[str]], ids: Sequence[str], title: str = "") -> go.Figure:
    """One row per signal, one column per sample, coloured by the signal's reading of that sample (gone blue ●,
    present orange ▲, inconclusive grey ◆, n/a light grey): where the signals agree on a sample and where they
    do not. The mark in each cell and the legend say the reading in words and shapes, not only in colour."""
    names = list(readings)
    codes = {r: i for i, r in enumerate(READING_COLORS)}
    n = len(READING_COLORS)
    scale = [[pos, c] for i, c in enumerate(READING_COLORS.values()) for pos in (i / n, (i + 1) / n)]
    z = [[codes.get(r, codes["n/a"]) for r in readings[name]] for name in names]
    text = [[r if r in codes else "n/a" for r in readings[name]] for name in names]
    marks = [[READING_MARKS[r] for r in row] for row in text] if len(ids) <= MARKS_UP_TO else None
    fig = go.Figure(go.Heatmap(z=z, x=list(ids), y=names, customdata=text, text=marks,
                               texttemplate="%{text}" if marks else None, textfont={"color": BLACK, "size": 13},
                               zmin=-0.5, zmax=n - 0.5, colorscale=scale, xgap=1, ygap=2, showscale=False,
                               hovertemplate="%{x}<br>%{y}: %{customdata}<extra></extra>"))
    for reading, color in READING_COLORS.items():  # a legend for the categorical colours, in words
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=READING_LEGEND[reading],
                                 marker={"size": 12, "color": color, "symbol": "square"}))
    fig.update_xaxes(showticklabels=len(ids) <= 40, tickangle=-60, title_text="forget sample")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title or None, height=170 + 40 * len(names), margin={"l": 10, "r": 10, "t": 80, "b": 40},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0}, plot_bgcolor="white")
    return fig


@dataclass
class Chart:
    key: str  # stable id (the page's widget key, the report's anchor)
    title: str
    caption: str
    figure: go.Figure


def sample_readings(d: Diagnosis) -> dict[str, list[str]]:
    """Per signal, each forget sample's reading (gone / present / inconclusive / n/a), in table order."""
    t = d.samples_frame()

    def recovered(x: Any) -> str:
        return "n/a" if x is None or pd.isna(x) else "present" if bool(x) else "gone"

    def traced(before: Any, after: Any) -> str:
        if before is None or after is None or pd.isna(before) or pd.isna(after) or before < TRACE_MIN_SHARE:
            return "n/a"
        return trace_reading(float(after) / float(before))

    return {
        "answers after": ["present" if c else "gone" for c in t["correct_after"].fillna(False)],
        "SAE verdict": [SAE_READING.get(v, "n/a") if isinstance(v, str) else "n/a" for v in t["sae_verdict"]],
        "emphasis recovery": [recovered(x) for x in t["recovered"]],
        "causal trace": [traced(b, a) for b, a in zip(t["trace_before"], t["trace_after"], strict=True)],
    }


def diagnosis_charts(d: Diagnosis) -> list[Chart]:
    """Every figure the diagnosis has data for."""
    out = [Chart("readings", "Per-sample readings of each signal",
                 "One column per forget sample: orange ▲ = that signal finds the knowledge (the model answers, "
                 "the SAE says suppressed, emphasis brings it back, the subject's mid-layer effect remains), "
                 "blue ● = it does not, grey ◆ = in between, light grey = not applicable.",
                 reading_map(sample_readings(d), [str(s["id"]) for s in d.samples]))]
    ev = d.details.get("eval")
    if ev:
        board = pd.DataFrame([{"model": n, **m} for n, m in ev.items()])
        out.append(Chart("outputs", "Output metrics", "Top-1 accuracy of the original, this model and the retrain "
                         "control on the forget set (and its paraphrases), the retain set and general utility.",
                         scoreboard_bars(board)))
    sae = d.details.get("sae")
    if sae:
        ref = sae["retrain"]
        curves = {d.model: {"0": sae["acc_unlearned"], **sae["per_alpha"]}}
        probes = {d.model: sae["probe_by_layer"]}
        if ref.get("model") and ref["model"] != d.model:
            curves[ref["model"]] = {"0": ref["acc_unlearned"], **ref["per_alpha"]}
            probes[ref["model"]] = ref["probe_by_layer"]
        out.append(Chart("sae_restoration", "SAE feature restoration",
                         "Forget accuracy when the original's expert features are steered into each model; the "
                         "retrain control's curve is what steering injects into a model that never knew.",
                         restoration_curves(curves, sae["acc_original"])))
        out.append(Chart("sae_probe", "Probe readout by layer",
                         "Forget answers decoded by a linear probe from each model's own residual stream.",
                         probe_layers(probes)))
    rec = d.details.get("recovery")
    if rec:
        out.append(Chart("emphasis", "Keyword-emphasis recovery (unPact)",
                         "Share of the forgotten eligible samples whose answer comes back top-1 when the "
                         "original's keywords are emphasised; hatched blue: the retrain control.",
                         recovery_bars({d.model: RecoveryReport.from_dict(rec)})))
    tr = d.details.get("trace")
    if tr:
        role = d.signals["trace"].numbers.get("role", "")
        out.append(Chart("trace", "Causal trace of the forget set",
                         f"Average indirect effect per layer and token role, original (solid) vs this model "
                         f"(dashed), each in its own units; the diagnosis reads the {role} at the middle layers, "
                         f"each sample's effect divided by that model's own clean-minus-corrupted gap.",
                         aie_lines({n: AIEResult.from_dict(a) for n, a in tr.items()})))
    cud = d.details.get("cud")
    if cud:
        rep = CUDReport.from_dict(cud)
        out.append(Chart("cud_distribution", "CUD distribution",
                         "Predicted difficulty of every forget sample, scored on the original before unlearning "
                         "(out-of-fold; higher = harder).", cud_histogram(cud_table(rep))))
        rows = [s for s in d.samples if s.get("cud") is not None]
        own = bool(rows) and all(s.get("observed_difficulty") is not None for s in rows)
        observed = ({s["id"]: s["observed_difficulty"] for s in rows} if own
                    else dict(zip(rep.ids, rep.observed, strict=True)))
        table = pd.DataFrame({"id": [s["id"] for s in rows], "cud": [s["cud"] for s in rows],
                              "observed": [observed[s["id"]] for s in rows],
                              "label": ["still answered" if s.get("correct_after") else "forgotten" for s in rows]})
        rho = d.signals["cud"].numbers.get("spearman_model" if own else "spearman_all")
        out.append(Chart("cud_vs_observed", "CUD vs observed difficulty",
                         ("Observed difficulty of this model's own unlearning run" if own else
                          "This model has no unlearning run of its own: observed difficulty is the mean over the "
                          "study's methods") + "; colour: whether this model still answers the sample.",
                         cud_scatter(table, rho)))
    return out
