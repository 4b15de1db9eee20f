"""Sections of the "Knowledge signals" page (app/views/signals.py) for the two attack-style signals: the
relearning attack and membership inference. Each is a function of the study and the chosen model, like the
page's other sections; nothing heavy runs until the user asks for it (or it is already in the study store)."""

from __future__ import annotations

import streamlit as st

from analysis.membership import MembershipOptions, membership_cached, membership_report
from analysis.membership.figures import score_histograms
from analysis.membership.options import (
    HELDOUT_HELP,
    HELDOUT_LABELS,
    HELDOUTS,
    K_HELP,
    SPAN_HELP,
    SPAN_LABELS,
    SPANS,
)
from analysis.relearn import RelearnOptions, relearn_cached, relearn_report
from analysis.relearn.figures import recovery_curves
from analysis.relearn.options import LR_HELP, MAX_STEPS, STEPS_HELP, VARIANT_LABELS
from analysis.study import Study
from app.state import compute_button, plain, run_per_model


def _interval(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"95% CI [{ci[0]:.3f}, {ci[1]:.3f}]"


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def relearn_section(study: Study, model: str) -> None:
    """The relearning attack on ``model`` against the same attack on the retrain control."""
    st.subheader("Relearning attack")
    st.caption("A few fine-tuning steps on a copy of the model: on one half of the forget set, measured on the "
               "other half (so nothing measured is re-taught), and on retain data only. The same attack on the "
               "retrain control (which never knew the facts) is the baseline; the recovered share is the part of "
               "the original's forget accuracy the attack brings back beyond that baseline (1 = all of it: the "
               "knowledge was only hidden; 0 = no more than a model that never knew).")
    ref = study.manifest.retrain
    if ref is None:
        st.info("This study has no retrain control: the relearning attack needs it as its baseline.")
        return
    d = RelearnOptions()
    c1, c2, c3 = st.columns(3)
    steps = c1.number_input("Attack steps", min_value=0, max_value=MAX_STEPS, value=d.steps, step=5,
                            key="relearn_steps", help=STEPS_HELP)
    lr = c2.number_input("Learning rate", min_value=1e-6, max_value=1e-1, value=d.lr, step=1e-5, format="%.0e",
                         key="relearn_lr", help=LR_HELP)
    seed = c3.number_input("Seed", min_value=0, value=d.seed, step=1, key="relearn_seed",
                           help="seed of the forget split and the retain subset")
    opts = RelearnOptions(steps=int(steps), lr=float(lr), seed=int(seed))
    cached = relearn_cached(study, model, opts)
    names = list(dict.fromkeys([model, ref]))
    if not cached and not compute_button(f"Run the attack ({int(steps)} steps x 3 attacks x {len(names)} "
                                         f"model{'s' if len(names) > 1 else ''})", "relearn_go"):
        st.caption("Fine-tunes copies of the model and of the retrain control (the study's model files are never "
                   "changed); stored in the study, so a second view is instant.")
        return
    out = run_per_model([model], lambda s, name, progress: relearn_report(s, name, opts, progress=progress),
                        key=f"relearning attack::{opts!r}", text="relearning attack")
    if out is None:
        return
    r = out[model]
    cols = st.columns(len(r.variants))
    for col, (name, v) in zip(cols, r.variants.items(), strict=True):
        col.metric(f"recovered share: {VARIANT_LABELS[name]}", _value(v.value),
                   help=f"{_interval(v.ci)}; over {v.n_defined} samples the original answers and the retrain "
                        f"control does not; pooled over accuracies {_value(v.pooled)}")
        if v.note:
            col.caption(plain(v.note))
    st.plotly_chart(recovery_curves(r, title=f"{r.model} vs {r.reference} (baseline)"), width="stretch",
                    key="relearn_curves")


def membership_section(study: Study, model: str) -> None:
    """Membership inference of the forget samples on ``model`` against held-out samples."""
    st.subheader("Membership inference")
    st.caption("An output-level baseline (what open-unlearning reports): do the forget samples still score like "
               "training data? Loss and Min-K%++ (Zhang et al. 2024: each token's log-prob normalised by the "
               "model's own next-token distribution, the lowest k% averaged) of the forget samples against held-out "
               "samples; AUROC 0.5 = indistinguishable. The signal is each forget sample's Min-K%++ percentile "
               "among the held-out scores (mean = AUROC).")
    d = MembershipOptions()
    c1, c2, c3 = st.columns([3, 2, 1])
    heldout = c1.radio("Held-out samples", HELDOUTS, index=HELDOUTS.index(d.heldout), horizontal=True,
                       key="membership_heldout", format_func=HELDOUT_LABELS.__getitem__, help=HELDOUT_HELP)
    span = c2.radio("Scored tokens", SPANS, index=SPANS.index(d.span), horizontal=True, key="membership_span",
                    format_func=SPAN_LABELS.__getitem__, help=SPAN_HELP)
    k = c3.number_input("k", min_value=0.01, max_value=1.0, value=d.k, step=0.05, key="membership_k", help=K_HELP)
    opts = MembershipOptions(k=float(k), heldout=heldout, span=span)
    cached = membership_cached(study, model, opts)
    if not cached and not compute_button(f"Compute membership scores ({len(study.forget)} forget samples)",
                                         "membership_go"):
        st.caption("One batched forward over the forget and held-out samples (stored in the study: a second view "
                   "is instant).")
        return
    out = run_per_model([model], lambda s, name, progress: membership_report(s, name, opts, progress=progress),
                        key=f"scoring membership::{opts!r}", text="scoring membership")
    if out is None:
        return
    r = out[model]
    sig = r.reading()
    m = st.columns(3)
    m[0].metric("Min-K%++ AUROC", _value(r.scores["mink"].auroc), help=_interval(r.scores["mink"].auroc_ci))
    m[1].metric("loss AUROC", _value(r.scores["loss"].auroc), help=_interval(r.scores["loss"].auroc_ci))
    m[2].metric("signal (mean percentile)", _value(sig.value), help=_interval(sig.ci))
    st.plotly_chart(score_histograms(r, title=f"{r.model}: forget vs held-out ({HELDOUT_LABELS[r.heldout]})"),
                    width="stretch", key="membership_hist")
