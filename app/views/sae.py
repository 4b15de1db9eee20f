"""Suppression vs deletion: SAE feature restoration, expert-feature retention and probe readout, judged
against the retrain control (true deletion)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from analysis.errors import WorkbenchError
from analysis.hooks import resid_post
from analysis.palette import READING_ICONS as VERDICT_ICON
from analysis.sae import (
    MAX_SAE_FVE_DROP,
    MIN_SAE_FVE,
    SAE_OPTION_HELP,
    STEERING_MODES,
    VERDICT_RULES,
    RestorationReport,
    SAEOptions,
    TrainedSAE,
    find_expert_features,
    judged_models,
    load_sae,
    restore_all,
    train_sae,
)
from analysis.sae.figures import probe_layers, restoration_curves, retention_bars
from analysis.study import Study
from app.context import study_param
from app.state import compute_button, get_study, guarded, load_model, plain, run_job


def _sae(study: Study, layer: int, k: int, steps: int) -> TrainedSAE:
    """The SAE trained with exactly these settings; else the latest one at this layer and k (with a button to
    train these settings); else a button to train one."""
    want = SAEOptions(layer=layer, k=k, steps=steps)
    try:
        return load_sae(study, options=want)
    except WorkbenchError:
        pass
    try:
        have = load_sae(study, layer=layer, k=k)
    except WorkbenchError:
        have = None
    if not compute_button(f"Train a TopK SAE at {resid_post(layer)} (k={k}, {steps} steps)", "train_sae"):
        if have is not None:
            st.caption(f"Showing the SAE trained with {plain(have.options.get('steps', '?'))} steps "
                       f"(seed {plain(have.options.get('seed', '?'))}); the button trains one with {steps}.")
            return have
        st.info("No SAE at this layer yet. The button trains one on the original model with SAELens (a progress "
                "bar counts its steps; other pages stay usable meanwhile).")
        st.stop()
    return run_job(f"train_sae::{want!r}", "training the SAE on the original model (SAELens)",
                   lambda s, progress: train_sae(s, want, progress=progress))


def _health(trained: TrainedSAE) -> None:
    h = trained.health
    st.subheader("SAE health")
    c = st.columns(5)
    c[0].metric("FVU", f"{h.fvu:.3f}", help="fraction of variance unexplained (lower is better)")
    c[1].metric("L0", f"{h.l0:.1f}")
    c[2].metric("dead features", f"{h.n_dead}/{h.d_sae}")
    c[3].metric("retain acc", f"{h.retain_acc:.2f}")
    c[4].metric("retain acc, SAE spliced", f"{h.retain_acc_spliced:.2f}")
    o = trained.options
    st.caption(f"{plain(trained.hook)} · {plain(h.n_tokens)} distinct training tokens · SAELens runner, "
               f"{plain(o.get('steps', '?'))} steps of {plain(o.get('batch_tokens', '?'))} tokens, "
               f"lr {plain(o.get('lr', '?'))}, seed {plain(o.get('seed', '?'))} · {h.tokens_per_s:,.0f} tokens/s · "
               f"trained on the original (fingerprint {plain(trained.fingerprint)})")


def _experts(study: Study, trained: TrainedSAE) -> None:
    st.subheader("Expert features")
    ex = run_job(f"experts::{trained.sae_id}", "finding expert features",
                 lambda s, progress: find_expert_features(s.load("original"), trained, s.forget, s.retain))
    samples = {s.id: s for s in study.samples()}
    rows = []
    for kind, groups in (("person", ex.by_person), ("relation", ex.by_relation)):
        for concept, feats in groups.items():
            for f in feats:
                top = ex.top_samples.get(f.feature, [])
                rows.append({"concept": f"{kind}: {concept}", "feature": f.feature, "F1": round(f.f1, 3),
                             "mean diff": round(f.mean_diff, 3), "retain people active": round(f.concept_frac, 3),
                             "top-activating samples": " · ".join(
                                 f"{samples[i].prompt} → {samples[i].answer} ({v:.1f})" for i, v in top[:3])})
    if not rows:
        st.warning("No selective features found for the forget concepts.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _fit_caption(r: RestorationReport) -> str:
    """How well the original's SAE reconstructs this model's own activations, beside the original's."""

    def fve(fit: dict[str, Any] | None) -> str:
        return "n/a" if not fit or fit.get("fve") is None else f"{fit['fve']:.2f}"

    flag = "⚠️ poor fit: read retention and restoration with care · " if r.caveats else ""
    # numbers formatted here (no user text): no escaping needed
    return (f"{flag}SAE fit on its own activations: explained variance {fve(r.sae_fit)} (original "
            f"{fve(r.sae_fit_original)}; caveat below {MIN_SAE_FVE} or {MAX_SAE_FVE_DROP} under the original's)")


def page() -> None:
    st.title("Suppression vs deletion")
    st.caption("Does unlearning erase the knowledge, or hide it? Three signals, each compared with the retrain "
               "control: expert-feature retention, active restoration by steering SAE features, and a probe "
               "on the model's own activations (catches models changed only at the readout).")
    study = get_study()
    study_param(study)
    if not study.forget:
        st.error("This study has no forget samples: there is nothing to restore.")
        return
    if not study.manifest.retrain:
        st.error("This study has no retrain control, which the verdict needs as the deletion reference.")
        return
    n_layers = load_model("original").n_layers
    c1, c2, c3 = st.columns(3)
    defaults = SAEOptions()
    layer = int(c1.number_input("SAE layer", 0, n_layers - 1, n_layers // 2, key="sae_layer",
                                help=SAE_OPTION_HELP["layer"]))
    k = int(c2.number_input("k (TopK)", 1, 256, defaults.k, key="sae_k", help=SAE_OPTION_HELP["k"]))
    steps = int(c3.number_input("training steps", 50, 20000, defaults.steps, step=50, key="sae_steps",
                                help=SAE_OPTION_HELP["steps"]))
    trained = _sae(study, layer, k, steps)
    _health(trained)
    _experts(study, trained)

    ref = str(study.manifest.retrain)
    names = judged_models(study)  # the reference retrain control is what they are judged against, never itself
    chosen = st.multiselect("Models", names, default=names, key="sae_models")
    if not chosen:
        st.warning("Pick at least one model.")
        return
    reports = run_job(f"restore::{trained.sae_id}::{','.join(chosen)}", "restoration, retention and probes",
                      lambda s, progress: restore_all(s, chosen, trained=trained, progress=progress))
    control = next(iter(reports.values())).retrain  # the reference's own signals, shared by every report
    curves = {n: {"0": r.acc_unlearned, **r.per_alpha} for n, r in reports.items()}
    curves[ref] = {"0": control["acc_unlearned"], **control["per_alpha"]}
    acc_o = next(iter(reports.values())).acc_original
    st.subheader("Restoration vs alpha")
    mode = st.radio("Steering", STEERING_MODES.names(), horizontal=True, key="sae_mode",
                    format_func=STEERING_MODES.label)
    if mode == "add":
        curves = {n: {"0": r.acc_unlearned, **r.per_alpha_add} for n, r in reports.items()}  # control: replace only
    st.plotly_chart(restoration_curves(curves, acc_o, reference=ref), width="stretch", key="restore_chart")
    st.caption("The retrain control (dashed) never knew the forget facts: its curve is how much steering with the "
               "original's features *injects*. Net restoration subtracts it.")
    st.subheader("Expert-feature retention")
    st.plotly_chart(retention_bars({**{n: r.feature_retention for n, r in reports.items()},
                                    ref: control.get("feature_retention")}, reference=ref), width="stretch",
                    key="retention_chart")
    st.caption("How strongly the original's expert features for the forget facts still fire, relative to the "
               "original (1 = as strongly; above 1 = more strongly: the model has not silenced them).")
    st.subheader("Probe accuracy by layer")
    st.plotly_chart(probe_layers({**{n: r.probe_by_layer for n, r in reports.items()},
                                  ref: control["probe_by_layer"]}, reference=ref), width="stretch",
                    key="probe_chart")

    st.subheader("Verdicts")
    st.caption(" ".join(f"{v.capitalize()}: {rule}." for v, rule in VERDICT_RULES.items()))
    cols = st.columns(min(3, len(reports)))
    for j, (n, r) in enumerate(reports.items()):
        with cols[j % len(cols)].container(border=True):
            st.markdown(f"**{plain(n)}** {VERDICT_ICON.get(r.verdict, '')} **{plain(r.verdict)}**"
                        + (f": {plain('; '.join(r.reasons))}" if r.reasons else ""))
            st.caption(_fit_caption(r))
            for e in r.evidence:
                st.markdown(f"- {plain(e)}")
    pick = st.selectbox("Per-sample verdicts of", list(reports), key="sae_pick")
    df = pd.DataFrame(reports[pick].per_sample)
    st.dataframe(df, hide_index=True, width="stretch")


guarded(page)
