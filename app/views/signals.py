"""Knowledge signals: does a model still hold the forget knowledge inside, whatever its outputs say? Each signal
is a section (a function of the study and the chosen model), so more signals can be added to this page."""

from __future__ import annotations

import streamlit as st

from analysis.logit_lens import READOUTS, LensOptions, LensResult, lens_cached, lens_result
from analysis.logit_lens.figures import lens_lines
from analysis.logit_lens.options import READOUT_HELP, READOUT_LABELS
from analysis.patching import AGGREGATIONS, POSITIONS, PatchOptions, patching_cached, patching_result
from analysis.patching.figures import patching_curves, ratio_heatmap
from analysis.patching.options import (
    AGGREGATION_HELP,
    AGGREGATION_LABELS,
    MIN_DROP_HELP,
    POSITION_HELP,
    POSITION_LABELS,
    UDS_TAU,
)
from analysis.study import Study
from app.context import study_param, url_select
from app.state import compute_button, get_study, guarded, load_model, plain, run_per_model
from app.views.signal_sections_attack import membership_section, relearn_section


def _interval(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"95% CI [{ci[0]:.3f}, {ci[1]:.3f}]"


def patching_section(study: Study, model: str) -> None:
    """Cross-model activation patching of ``model`` into the original, per layer, against the retrain control."""
    st.subheader("Cross-model activation patching")
    st.caption("Each layer's hidden state of the chosen model replaces the original's on the forget prompts; how "
               "much the original then loses the answer, divided by the same patch from the retrain control (true "
               "deletion), is that layer's erasure ratio (UDS, Lee et al. 2026). Depth 1 = as deep as the retrain "
               "control; 0 = the original's knowledge is intact in the model's hidden states.")
    c1, c2, c3 = st.columns([2, 2, 1])
    positions = c1.radio("Patched positions", POSITIONS, horizontal=True, key="patch_positions",
                         format_func=POSITION_LABELS.__getitem__, help=POSITION_HELP)
    aggregation = c2.radio("Depth score", AGGREGATIONS, horizontal=True, key="patch_aggregation",
                           format_func=AGGREGATION_LABELS.__getitem__, help=AGGREGATION_HELP)
    min_drop = c3.number_input("Min. retrain drop (nats)", min_value=0.0, value=UDS_TAU, step=0.05, format="%.2f",
                               key="patch_min_drop", help=MIN_DROP_HELP)
    opts = PatchOptions(positions=positions, aggregation=aggregation, min_drop=float(min_drop))
    ref = study.manifest.retrain
    if ref is None:
        st.info("This study has no retrain control: the drops are shown, the depth score needs the control.")
    cached = patching_cached(study, model, opts)
    n = len(study.forget)
    if not cached and not compute_button(f"Compute patching ({n} forget samples x {load_model(model).n_layers} "
                                         "layers)", "patch_go"):
        st.caption("One forward of the original per layer over all samples, for the model and the retrain control "
                   "(stored in the study: a second view is instant).")
        return
    out = run_per_model([model], lambda s, name, progress: patching_result(s, name, opts, progress=progress),
                        key=f"patching the forget set::{opts!r}", text="patching the forget set")
    if out is None:
        return
    r = out[model]
    m = st.columns(3)
    m[0].metric("depth score", "-" if r.depth_mean is None else f"{r.depth_mean:.3f}", help=_interval(r.depth_ci))
    m[1].metric("signal (1 - depth)", "-" if r.signal is None else f"{r.signal:.3f}", help=_interval(r.signal_ci))
    m[2].metric("reference", plain(r.reference or "none"))
    if r.note:
        st.caption(plain(r.note))
    st.plotly_chart(patching_curves(r, title=f"{r.model} vs {r.reference or 'no reference'}"), width="stretch",
                    key="patch_curves")
    if r.ratio is not None:
        with st.expander("Erasure ratio per sample and layer"):
            st.plotly_chart(ratio_heatmap(r), width="stretch", key="patch_heatmap")


def lens_section(study: Study, model: str) -> None:
    """The logit lens of the original and ``model``, both read through the original's final norm and unembedding."""
    st.subheader("Logit lens through the original's readout")
    st.caption("Every layer's residual stream at the positions predicting the answer, read through the original "
               "model's final norm and unembedding (so a model that only changed its readout cannot hide the "
               "answer): the answer's probability and rank by layer, the original against the chosen model.")
    readout = st.radio("Readout", READOUTS, horizontal=True, key="lens_readout",
                       format_func=READOUT_LABELS.__getitem__, help=READOUT_HELP)
    opts = LensOptions(readout=readout)
    names = list(dict.fromkeys(["original", model]))
    cached = all(lens_cached(study, n, opts) for n in names)
    if not cached and not compute_button(f"Compute the logit lens ({len(study.forget)} forget samples x "
                                         f"{len(names)} models)", "lens_go"):
        st.caption("One forward per model over all samples (stored in the study: a second view is instant).")
        return
    out: dict[str, LensResult] | None = run_per_model(
        names, lambda s, name, progress: lens_result(s, name, opts, progress=progress), key=f"lens::{opts!r}",
        text="reading the forget set through the lens")
    if out is None:
        return
    cols = st.columns(len(out))
    for col, (name, r) in zip(cols, out.items(), strict=True):
        col.metric(f"{plain(name)}: highest answer probability", "-" if r.value is None else f"{r.value:.3f}",
                   help=_interval(r.ci))
    st.plotly_chart(lens_lines(out, title=f"read through {READOUT_LABELS[readout]}",
                               reference=study.manifest.retrain), width="stretch", key="lens_lines")


def page() -> None:
    study = get_study()
    study_param(study)
    st.title("Knowledge signals")
    st.caption("Signals of whether a model still holds the forget knowledge inside, whatever its outputs say. Each "
               "is computed per forget sample, with the mean over samples and a 95% bootstrap interval; higher "
               "signal = more knowledge present.")
    names = study.model_names
    others = [n for n in names if n != "original"] or names
    unlearned = [n for n in others if study.entry(n).role == "unlearned"] or others
    model = url_select("Model", others, key="signals_model", param="model", shared="model", default=unlearned[0])
    load_model(model)  # a model that fails to load stops the page with its error here
    patching_section(study, model)
    lens_section(study, model)
    relearn_section(study, model)
    membership_section(study, model)


guarded(page)
