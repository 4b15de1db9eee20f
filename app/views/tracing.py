"""Causal tracing: where does a model recall a sample's answer, before and after unlearning?"""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from analysis.errors import WorkbenchError
from analysis.tracing import (
    CORRUPTIONS,
    KIND_LABELS,
    KINDS,
    METRIC_LABELS,
    METRICS,
    TraceOptions,
    TraceResult,
    dataset_cached,
    trace_dataset,
    trace_difference,
    trace_sample,
    trace_typed,
)
from analysis.tracing.corruptions import corruption_help
from analysis.tracing.figures import aie_lines, trace_heatmaps, trace_title, trace_value_range
from analysis.tracing.options import METRIC_HELP, default_window
from app.context import prompt_source, study_param, url_int, url_multiselect, url_select
from app.jobs import ProgressFn
from app.state import compute_button, get_study, guarded, load_model, plain, run_job, run_per_model

if TYPE_CHECKING:
    from analysis.study import Study


def _controls(n_layers: int) -> TraceOptions:
    """The trace options, each bound to the URL (the Diagnosis links open the page with its own options)."""
    c1, c2, c3 = st.columns([2, 2, 3])
    corruption = url_select("Corruption", CORRUPTIONS.names(), key="corruption", param="corruption", radio=True,
                            container=c1, format_func=CORRUPTIONS.label, help=corruption_help())
    metric = url_select("Metric", list(METRICS), key="metric", param="metric", radio=True, container=c2,
                        format_func=METRIC_LABELS.__getitem__, help=METRIC_HELP)
    kinds = url_multiselect("Restore", list(KINDS), key="kinds", param="kinds", default=list(KINDS), container=c3,
                            format_func=KIND_LABELS.__getitem__)
    c4, c5, c6 = st.columns(3)
    window = url_int("Window (layers, MLP/attention)", key="window", param="window", default=default_window(n_layers),
                     min_value=1, max_value=n_layers, container=c4,
                     help="Layers restored together around each layer (ROME: 10; 1 = no window).")
    n_samples = url_int("Noise samples", key="n_samples", param="n_samples", default=10, min_value=1, max_value=100,
                        container=c5, disabled=corruption != "noise")
    seed = url_int("Seed", key="seed", param="seed", default=0, min_value=0, container=c6)
    return TraceOptions(kinds=tuple(kinds), corruption=corruption, metric=metric, window=window,
                        n_samples=n_samples, seed=seed)


def page() -> None:
    study = get_study()
    study_param(study)
    st.title("Causal tracing")
    st.caption("Corrupt the subject, then restore one hidden state (layer x token) from the clean run: where "
               "restoring brings the answer back is where the model carries the fact (Meng et al. 2022). After "
               "true erasure the answer is gone from the clean run too; after suppression the internal trace "
               "can stay while only the readout changes.")
    choice = prompt_source(study, key="sample")
    if choice is None:
        return
    sample_id = choice.id
    names = study.model_names
    others = [n for n in names if n != "original"] or names
    unlearned = [n for n in others if study.entry(n).role == "unlearned"] or others
    c1, c2 = st.columns(2)
    before = url_select("Before", names, key="before", param="before", default="original", container=c1)
    after = url_select("After", others, key="after", param="model", shared="model", default=unlearned[0],
                       container=c2)
    load_model(after)  # a model that fails to load stops the page with its error here
    opts = _controls(load_model(before).n_layers)
    if not opts.kinds:
        st.warning("Pick at least one of residual stream, MLP, attention.")
        return

    st.subheader(f"Sample {plain(sample_id)}" if choice.typed is None else
                 f"Your prompt: {plain(choice.typed.prompt)} → {plain(choice.typed.answer)}")
    try:
        def traces(s: Study, progress: ProgressFn) -> tuple[TraceResult, TraceResult]:
            out = []
            for i, name in enumerate((before, after)):  # the bar moves by model
                progress(i / 2, f"tracing on {name}")
                out.append(trace_sample(s, name, sample_id, opts) if choice.typed is None else
                           trace_typed(s, name, choice.typed, opts))
            return out[0], out[1]

        r_before, r_after = run_job(f"trace::{before}::{after}::{sample_id}::{opts!r}",
                                    f"tracing {sample_id} on {before} and {after}", traces)
    except WorkbenchError as e:
        st.error(plain(e))
        r_before = r_after = None
    if r_before is not None and r_after is not None:
        info = r_after.options
        extra = (f"noise std {info['noise_std']:.3g}" if "noise_std" in info else
                 f"subject replaced by {plain(repr(info['replacement']))}" if "replacement" in info else "")
        st.caption(f"Answer **{plain(r_before.answer)}** · subject tokens starred and boxed · {extra}")
        c1, c2 = st.columns(2)
        shared = c1.checkbox("One colour scale for both models", value=False, key="shared_scale",
                         help="Off: each map has its own scale (its range is in its colour-bar title), so a model whose "
                              "effects are all small still shows where they are. On: magnitudes compare directly.")
        effect = c2.radio("Difference of", ["indirect effect", "metric"], horizontal=True, key="diff_of",
                          help="Indirect effect = restored − corrupted: where the causal structure changed, "
                               "apart from a shift of the whole map.") == "indirect effect"
        zr = trace_value_range([r_before, r_after]) if shared else None
        st.plotly_chart(trace_heatmaps(r_before, title=trace_title(before, r_before), zrange=zr), width="stretch",
                        key="trace_before")
        st.plotly_chart(trace_heatmaps(r_after, title=trace_title(after, r_after), zrange=zr), width="stretch",
                        key="trace_after")
        diff = trace_difference(r_after, r_before, effect=effect)
        what = (f"indirect effect (clean − corrupted {diff.clean:+.3f})" if effect else
                f"clean {diff.clean:+.3f}, corrupted {diff.corrupted:+.3f}")
        st.plotly_chart(trace_heatmaps(diff, title=f"{after} − {before}: {what}", diverging=True),
                        width="stretch", key="trace_diff")

    st.subheader("Forget set: average indirect effect by token role")
    n_forget = len(study.forget)
    try:
        cached = all(dataset_cached(study, n, opts) for n in (before, after))
    except WorkbenchError as e:
        st.error(plain(e))
        return
    if not cached and not compute_button(f"Compute over the forget set ({n_forget} samples x 2 models)", "aie_go"):
        st.caption("Traces every forget sample on both models (stored in the study: a second view is instant).")
        return
    results = run_per_model(list(dict.fromkeys([before, after])),
                            lambda s, n, progress: trace_dataset(s, n, opts, progress=progress),
                            key=f"trace_dataset::{opts!r}", text="tracing the forget set")
    if results is None:
        return
    st.plotly_chart(aie_lines(results), width="stretch", key="aie_chart")
    first = next(iter(results.values()))
    st.caption(f"{first.n_samples} samples traced" + (f", {len(first.skipped)} skipped (no subject)"
                                                      if first.skipped else "")
               + ". AIE = metric with the cell restored − metric of the corrupted run, averaged over samples.")


guarded(page)
