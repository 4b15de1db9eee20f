"""Diagnosis: every signal of one unlearned model joined — a summary verdict with its evidence, where the
signals agree and disagree, the figures, and a per-sample table that links each sample to the other pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analysis.diagnosis import Diagnosis, DiagnosisOptions, diagnose, stored_diagnosis
from analysis.diagnosis.figures import diagnosis_charts
from analysis.diagnosis.report import fitted_verdict, report_html
from analysis.diagnosis.result import SAMPLE_COLUMNS
from analysis.diagnosis.rules import capital
from analysis.errors import AnalysisInputError
from analysis.palette import READING_ICONS
from analysis.tracing import TraceOptions
from app.context import link, study_param, trace_params, url_select
from app.state import compute_button, get_study, guarded, load_model, plain, run_job

VIEWS = Path(__file__).resolve().parent
VERDICT_ICON = READING_ICON = READING_ICONS  # one colour language (analysis.palette): blue gone, orange present
# (column, url path and file of the page, label): pages that take ``?sample=ID&model=NAME`` (app.context)
SAMPLE_PAGES: tuple[tuple[str, str, str], ...] = (("tracing", "tracing.py", "Causal tracing"),
                                                  ("attribution", "attribution.py", "Attribution"),
                                                  ("circuits", "circuits.py", "Circuits"))
FILTER_ALL = "all"


def _fitted(study: Any, model: str) -> None:
    """The fitted verdict (analysis.verdict: one signal and a boundary fitted on development zoos, applied with a
    95% interval over samples) and the ruler: where the model sits among the zoo's P and N members."""
    from analysis.validation.runner import stored_reading
    from analysis.verdict.figures import ruler_figure, signal_ruler_figure
    from analysis.verdict.judge import judge, ruler, signal_rulers
    from analysis.verdict.rule import load_rule

    st.subheader("Fitted verdict")
    try:
        rule = load_rule()
    except AnalysisInputError as e:
        st.info(f"No fitted verdict: {plain(str(e))}")
        return
    fits = ", ".join(str(x.get("seed")) for x in rule.fitted_on)
    st.caption(f"Rule v{rule.version} (analysis/verdict/rule.json): {plain(rule.signal)}, mean over forget samples, "
               f"against the boundary {rule.threshold:.2f}, fitted on the zoos of demo seeds {plain(fits)} and tested "
               "on held-out seeds (benchmarks/VERDICT.md). Suppressed when the 95% interval lies above the boundary, "
               "erased when below, inconclusive when it straddles it.")
    if stored_reading(study, rule.signal, model) is None and not compute_button(
            f"Compute {plain(rule.signal)} on {plain(model)}", "diag_fit_go"):
        return
    v = run_job(f"judge::{model}::{rule.signal}::{rule.version}", f"reading {rule.signal} on {model}",
                lambda s, progress: judge(s, model, rule))
    with st.container(border=True):
        st.markdown(f"### {VERDICT_ICON.get(v.verdict, '')} {plain(v.verdict.upper())}")
        st.markdown(plain(v.reason) + ".")
        n_sup = sum(c == "suppressed" for c in v.per_sample.values())
        st.caption(f"Driven by {plain(', '.join(v.drivers))}. Per sample: {n_sup} of {len(v.per_sample)} forget "
                   "samples read suppressed on their own evidence.")
    zoo = ruler(study, rule.signal)
    if zoo:
        st.plotly_chart(ruler_figure(zoo, v), width="stretch", key="diag_ruler")
    else:
        st.caption("The zoo's readings of this signal are not in the study yet: run `erasure validate STUDY` to see "
                   "where this model sits among models whose knowledge is known.")
    rulers = [r for r in signal_rulers(study, model) if r[0] != rule.signal]
    if rulers:
        with st.expander(f"Every other signal: {plain(model)} among the zoo ({len(rulers)} signals read by "
                         "`erasure validate`)", expanded=False):
            cols = st.columns(2)
            for i, (sig, zoo_s, score, ci) in enumerate(rulers):
                cols[i % 2].plotly_chart(signal_ruler_figure(zoo_s, model, score, ci, sig), width="stretch",
                                         key=f"diag_ruler_{sig}")


def _verdict(d: Diagnosis) -> None:
    st.subheader("Signal by signal (hand-set thresholds)")
    with st.container(border=True):
        st.markdown(f"### {VERDICT_ICON.get(d.verdict, '')} {plain(d.verdict.upper())}")
        st.markdown(f"**{plain(d.headline)}**")
        for c in d.caveats:
            st.warning(f"Caveat: {plain(c)}", icon="⚠️")
        for e in d.evidence:
            st.markdown(f"- {plain(capital(e))}")


def _signals(d: Diagnosis) -> None:
    st.subheader("Signals")
    st.caption("gone: the signal finds no sign of the forget knowledge · present: it does · context: CUD predicts "
               "difficulty before unlearning rather than reading this model")
    for s in d.signals.values():
        label = f"{READING_ICON.get(s.reading, '')} **{plain(capital(s.title))}**: {plain(s.reading)}"
        with st.expander(label, expanded=False):
            for e in s.evidence or [s.summary]:
                st.markdown(f"- {plain(e)}")


def _agreement(d: Diagnosis) -> None:
    st.subheader("Agreement")
    a = d.agreement
    # agreement is a fact about the signals, not a verdict: neutral text, never a green "all is well" box
    for line in a.get("agree", []):
        st.markdown(f"- agree: {plain(line)}")
    for line in a.get("disagree", []):
        st.warning(plain(line))
    if not a.get("agree") and not a.get("disagree"):
        st.info("No two signals give a definite reading to compare.")
    for line in a.get("silent", []) + a.get("context", []):
        st.caption(plain(line))


def _figures(d: Diagnosis) -> None:
    st.subheader("Figures")
    for c in diagnosis_charts(d):
        st.markdown(f"**{plain(c.title)}**")
        st.caption(plain(c.caption))
        st.plotly_chart(c.figure, width="stretch", key=f"diag_{c.key}")


def _filtered(frame: pd.DataFrame) -> pd.DataFrame:
    c1, c2, c3 = st.columns([2, 1, 1])
    verdicts = sorted({v for v in frame["sae_verdict"] if isinstance(v, str)})
    chosen = c1.multiselect("SAE verdict", verdicts, default=verdicts, key="diag_f_sae")
    after = c2.selectbox("Answers after unlearning", [FILTER_ALL, "yes", "no"], key="diag_f_after")
    recovered = c3.selectbox("Recovered by emphasis", [FILTER_ALL, "yes", "no", "not applicable"], key="diag_f_rec")
    keep = frame["sae_verdict"].isin(chosen) | (frame["sae_verdict"].isna() & (len(chosen) == len(verdicts)))
    if after != FILTER_ALL:
        keep &= frame["correct_after"] == (after == "yes")
    if recovered != FILTER_ALL:
        rec = frame["recovered"]
        keep &= rec.isna() if recovered == "not applicable" else (rec.notna() & (rec == (recovered == "yes")))
    return frame[keep]


def _links(study: str, model: str, sample_id: str, trace: TraceOptions) -> dict[str, dict[str, str]]:
    """The URL parameters that open ``sample_id`` on each linked page with the diagnosed model, and on Causal
    tracing with the diagnosis's own trace options (so the page shows, and reuses, the trace it read)."""
    common = {"study": study, "sample": sample_id}
    return {"tracing": {**common, **trace_params(model, "original", trace)},
            "attribution": {**common, "model": model}, "circuits": {**common, "model": model}}


def _samples(study: Any, d: Diagnosis, trace: TraceOptions) -> None:
    st.subheader("Per-sample table")
    frame = d.samples_frame()
    shown = _filtered(frame)
    st.caption(f"{len(shown)} of {len(frame)} forget samples. Click a column header to sort; the link columns open "
               "the sample on that page.")
    links = {str(i): _links(study.manifest.name, d.model, str(i), trace) for i in shown["id"]}
    for col, _, _ in SAMPLE_PAGES:
        shown = shown.assign(**{col: [link(col, **links[str(i)][col]) for i in shown["id"]]})
    config: dict[str, Any] = {c: st.column_config.Column(help=h) for c, h in SAMPLE_COLUMNS.items()}
    config |= {c: st.column_config.NumberColumn(format="%.3f", help=SAMPLE_COLUMNS[c]) for c in
               ("p_before", "p_after", "trace_before", "trace_after", "trace_shift", "cud", "observed_difficulty")}
    config |= {col: st.column_config.LinkColumn(label, display_text="open", help=f"open the sample on {label}")
               for col, _, label in SAMPLE_PAGES}
    config["id"] = st.column_config.TextColumn(pinned=True, help=SAMPLE_COLUMNS["id"])
    st.dataframe(shown, hide_index=True, width="stretch", height=380, column_config=config, key="diag_table")
    if shown.empty:
        return
    prompts = dict(zip(shown["id"].astype(str), shown["prompt"], strict=True))
    sid = st.selectbox("Open a sample on another page", list(prompts), key="diag_open",
                       format_func=lambda i: f"{i} · {prompts[i]}")
    cols = st.columns(len(SAMPLE_PAGES))
    params = _links(study.manifest.name, d.model, sid, trace)
    for c, (col, path, label) in zip(cols, SAMPLE_PAGES, strict=True):
        c.page_link(str(VIEWS / path), label=f"{label} ({d.model})", query_params=params[col])


def _downloads(study: Any, d: Diagnosis) -> None:
    c1, c2 = st.columns(2)
    c1.download_button("Download the HTML report", data=lambda: report_html(d, fitted_verdict(study, d.model)),
                       file_name=f"diagnosis-{d.model}.html",
                       mime="text/html", key="diag_dl_html")
    c2.download_button("Download the data (JSON)", data=lambda: json.dumps(d.to_dict()),
                       file_name=f"diagnosis-{d.model}.json", mime="application/json", key="diag_dl_json")


def page() -> None:
    study = get_study()
    study_param(study)
    st.title("Diagnosis")
    st.caption("Did unlearning erase the forget set, or only hide it? Every signal of one model, each judged against "
               "the retrain control where it has one: output metrics, the SAE verdict (feature retention, restoration, "
               "probes), keyword-emphasis recovery (unPact), the subject's causal-trace effect, and CUD, the difficulty "
               "predicted before unlearning. The rules that combine them are in `analysis/diagnosis/rules.py`.")
    if "original" not in study.model_names:
        st.error("This study has no 'original' model to compare with.")
        return
    # the reference retrain control is what every signal judges against: never diagnosed against itself
    names = [n for n in study.model_names if n not in ("original", study.manifest.retrain)]
    if not names:
        st.error("This study has no unlearned model to diagnose.")
        return
    unlearned = [n for n in names if study.entry(n).role == "unlearned"] or names
    model = url_select("Model", names, key="diag_model", param="model", shared="model", default=unlearned[0],
                       format_func=lambda n: f"{n} ({study.entry(n).role})")
    n_layers = load_model(model).n_layers  # a model that fails to load: st.error, page stops
    _fitted(study, model)
    opts = DiagnosisOptions()
    d = stored_diagnosis(study, model, opts)
    if d is None:
        slot = st.empty()  # the invitation, cleared once the diagnosis runs
        with slot.container():
            st.info(f"{plain(model)} has not been diagnosed yet. The diagnosis runs every analysis it needs that is not in "
                    "the study store yet (most of the time goes to training the SAE once; a progress bar follows each "
                    "step, and other pages stay usable meanwhile); a second view is instant.")
            go = st.button(f"Diagnose {plain(model)}", key="diag_go", type="primary")
        if not go:
            return
        slot.empty()
        d = run_job(f"diagnose::{model}::{opts!r}", f"diagnosing {model}",
                    lambda s, progress: diagnose(s, model, opts, progress=progress))
    _verdict(d)
    _downloads(study, d)
    _signals(d)
    _agreement(d)
    _samples(study, d, opts.trace.validated(n_layers))
    _figures(d)


guarded(page)
