"""Validation: the meta-evaluation of every signal against the study's zoo (models whose knowledge is known) —
the AUROC table with intervals, which signals separate and which do not, a strip plot per signal with the
unlearning methods placed among the zoo, and the robustness of each signal to quantisation and a benign
fine-tune."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from analysis.signals import SIGNALS
from analysis.validation.figures import auroc_figure, robustness_bars, status_legend, strip_plot
from analysis.validation.options import OPTION_HELP, ValidationOptions
from analysis.validation.result import STATUS_LABELS, ValidationResult
from analysis.validation.runner import canonical_order, load_signals, stored_validation, validate
from app.context import study_param
from app.state import get_study, guarded, plain, run_job

READS_ICON = {"present": "🔴 present", "absent": "🟢 absent", "between": "🟡 between", "overlap": "⚪ overlap",
              "undefined": "–"}


def _options() -> ValidationOptions:
    notes = load_signals()
    names = list(canonical_order(SIGNALS.names()))
    labels = SIGNALS.labels()
    # The URL may carry the options (?signals=a,b&robustness=0), so that a link opens a stored result.
    from_url = [n for n in (st.query_params.get("signals") or "").split(",") if n in names]
    with st.expander("Options", expanded=False):
        st.session_state.setdefault("val_signals", from_url or names)
        st.session_state.setdefault("val_robust", st.query_params.get("robustness", "1") != "0")
        chosen = st.multiselect("Signals", names, key="val_signals", help=OPTION_HELP["signals"],
                                format_func=lambda n: f"{n} — {labels.get(n, n)}")
        robust = st.checkbox("Robustness (quantised and fine-tuned variant of every zoo member)", key="val_robust",
                             help=OPTION_HELP["robustness"])
        for n in notes:
            st.caption(plain(n))
    if not chosen:
        st.error("Choose at least one signal.")
        st.stop()
    return ValidationOptions(signals=tuple(chosen), robustness=robust)


def _statement(r: ValidationResult) -> None:
    with st.container(border=True):
        st.markdown("### Which signals separate knowledge present from knowledge absent")
        for line in r.statement():
            st.markdown(f"- {plain(line)}")


def _table(r: ValidationResult) -> None:
    st.subheader("AUROC of every signal")
    st.caption("AUROC = the chance that a knowledge-present (P) member scores above a knowledge-absent (N) member "
               "(ties count ½): 1 separates them perfectly, 0.5 not at all. The interval is a 95% bootstrap over "
               "members (P and N resampled separately). R, Q, H: robustness (see below).")
    rows = sorted(r.table(), key=lambda x: -(x["auroc"] if x["auroc"] is not None else -1.0))
    frame = pd.DataFrame([{
        "signal": x["signal"], "AUROC": x["auroc"],
        "95% interval": "–" if x["ci_low"] is None else f"[{x['ci_low']:.2f}, {x['ci_high']:.2f}]",
        "separation": x["separation"], "P": x["n_present"], "N": x["n_absent"], "R": x["R"], "Q": x["Q"],
        "H": x["H"], "what it reads": x["label"]} for x in rows])
    fmt: dict[str, Any] = {c: st.column_config.NumberColumn(format="%.3f", width="small") for c in ("R", "Q", "H")}
    fmt |= {"AUROC": st.column_config.NumberColumn(format="%.3f", width="small"),
            "P": st.column_config.NumberColumn(width="small", help="knowledge-present members with a score"),
            "N": st.column_config.NumberColumn(width="small", help="knowledge-absent members with a score")}
    st.dataframe(frame, hide_index=True, width="stretch", column_config=fmt, key="val_table")
    st.plotly_chart(auroc_figure(r), width="stretch", key="val_auroc")


def _strips(r: ValidationResult) -> None:
    st.subheader("Every member on every signal")
    st.caption("One row per member: zoo members whose knowledge is present but hidden (P), zoo members that never "
               "had it (N), and the study's unlearning methods, placed among them. A grey band marks a gap between "
               "the N and P scores (where a threshold separates them).")
    st.plotly_chart(status_legend(), width="stretch", key="val_legend", config={"displayModeBar": False})
    signals = [s.signal for s in sorted(r.signals, key=lambda s: -(s.auroc if s.auroc is not None else -1.0))]
    for i in range(0, len(signals), 2):
        cols = st.columns(2)
        for c, name in zip(cols, signals[i:i + 2], strict=False):
            c.plotly_chart(strip_plot(r, name), width="stretch", key=f"val_strip_{name}")


def _placement(r: ValidationResult) -> None:
    place = r.placement()
    methods = [m.name for m in r.by_status("unknown")]
    if not methods:
        return
    st.subheader("Where the unlearning methods fall")
    separating = [s for s in r.signals if s.separation == "separates"]
    if not separating:
        st.info("No signal separates P from N here, so none can place the unlearning methods.")
        return
    st.caption("On the signals that separate P from N: present = above every N member (within or above the P range); "
               "absent = below every P member; between = in the gap between the two ranges; overlap = where P and "
               "N members overlap.")
    rows: list[dict[str, Any]] = []
    for s in sorted(separating, key=lambda s: -(s.auroc if s.auroc is not None else -1.0)):
        row: dict[str, Any] = {"signal": s.signal, "AUROC": s.interval()}
        row |= {m: READS_ICON.get(place[s.signal][m]["reads_as"], "–") for m in methods}
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="val_place")


def _robustness(r: ValidationResult) -> None:
    if not any(s.robustness_r is not None or s.robustness_q is not None for s in r.signals):
        return
    st.subheader("Robustness")
    o = r.options
    st.caption(f"Two variants of every zoo member: {o.get('quant_bits', 8)}-bit weights (per-tensor symmetric "
               f"round-trip of every weight matrix), and a benign fine-tune ({o.get('finetune_steps')} seeded Adam "
               f"steps at lr {o.get('finetune_lr')} on the {o.get('finetune_split')} answers). "
               "R = 1 − mean |score(fine-tuned) − score(member)|, Q = the same after quantisation, H = their harmonic "
               "mean (as UDS reports them): 1 = the signal's score did not move.")
    st.plotly_chart(robustness_bars(r), width="stretch", key="val_robust_fig")


def page() -> None:
    study = get_study()
    study_param(study)
    st.title("Validation")
    st.caption("Can a signal tell a model that still holds the forget knowledge (hidden) from one that never had it? "
               "Every signal is scored on a zoo of models whose knowledge is known by construction, with the study's "
               "unlearning methods placed among them (`erasure validate`).")
    opts = _options()
    result = stored_validation(study, opts)  # no zoo, or a bad study: st.error (guarded), never a traceback
    if result is None:
        slot = st.empty()
        with slot.container():
            st.info("The meta-evaluation has not been run with these options yet. It scores every chosen signal on "
                    "every zoo member and unlearning method" + (" and on the two variants of every zoo member"
                                                                 if opts.robustness else "") +
                    "; what is already in the study store is not recomputed, and a second view is instant.")
            go = st.button("Run the meta-evaluation", key="val_go", type="primary")
        if not go:
            return
        slot.empty()
        result = run_job(f"validate::{opts!r}", "meta-evaluation", lambda s, progress: validate(s, opts, progress=progress))
    counts = ", ".join(f"{len(result.by_status(s))} {STATUS_LABELS[s]}" for s in ("present", "absent", "unknown"))
    st.caption(plain(f"Members: {counts}."))
    _statement(result)
    _table(result)
    _strips(result)
    _placement(result)
    _robustness(result)
    for n in result.notes:
        st.caption(plain(n))
    st.download_button("Download the data (JSON)", data=lambda: json.dumps(result.to_dict()),
                       file_name=f"validation-{study.manifest.name}.json", mime="application/json", key="val_dl")


guarded(page)
