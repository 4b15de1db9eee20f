"""Attribution (unPact): which prompt tokens carry the answer before and after unlearning, and does
re-emphasising them bring a forgotten answer back (beside the retrain control)?"""

from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from analysis.attribution import (
    ABLATIONS,
    ATTRIBUTION_METHODS,
    EMPHASES,
    KEYWORD_SOURCES,
    AttributionOptions,
    EmphasisParams,
    RecoveryOptions,
    TokenAttribution,
    attribute_sample,
    attribute_typed,
    compare_models,
    dataset_cached,
    recover,
    recovery_cached,
    strategy_names,
)
from analysis.attribution.emphasis import emphasis_help
from analysis.attribution.figures import attribution_heatmap, contribution_change_bars, recovery_bars
from analysis.attribution.options import ablation_help, attribution_method_help
from analysis.errors import WorkbenchError
from analysis.study import Study
from app.context import PromptChoice, prompt_source, study_param, url_select
from app.jobs import ProgressFn
from app.state import compute_button, get_study, guarded, plain, run_job, run_per_model


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def _attribution_controls() -> AttributionOptions:
    c1, c2, c3, c4 = st.columns([3, 2, 1, 1])
    method = c1.radio("Method", ATTRIBUTION_METHODS.names(), key="method", horizontal=True,
                      format_func=ATTRIBUTION_METHODS.label, help=attribution_method_help())
    ablation = c2.radio("Ablation (leave-one-out)", ABLATIONS.names(), key="ablation", horizontal=True,
                        disabled=method != "loo", help=ablation_help() + " (the neutral token: unk)")
    alpha = c3.number_input("alpha", min_value=0.0, max_value=0.99, value=0.1, step=0.05, key="alpha",
                            help="KeyTokens: minimum share C_i / sum of positive C of a keyword")
    beta = c4.number_input("beta", min_value=1, max_value=20, value=3, step=1, key="beta",
                           help="KeyTokens: with fewer than beta positive tokens, all of them are keywords")
    return AttributionOptions(method=method, ablation=ablation, alpha=float(alpha), beta=int(beta)).validated()


def _sample_section(study: Study, choice: PromptChoice, after: str, opts: AttributionOptions) -> None:
    names = study.comparison(after).names
    typed, sample_id = choice.typed, choice.id

    def attribute(s: Study, progress: ProgressFn) -> dict[str, TokenAttribution]:
        out = {}
        for i, n in enumerate(names):  # the bar moves by model
            progress(i / len(names), f"attributing on {n}")
            out[n] = attribute_sample(s, n, sample_id, opts) if typed is None else attribute_typed(s, n, typed, opts)
        return out

    try:
        results = run_job(f"attribute::{','.join(names)}::{sample_id}::{opts!r}", f"attributing {sample_id}",
                          attribute)
    except WorkbenchError as e:
        st.error(plain(e))
        return
    orig = results["original"]
    st.caption(f"Answer **{plain(orig.answer)}** · LP = mean log-prob of the answer tokens: "
               + " · ".join(f"{plain(n)} {r.logprob:.3f}" for n, r in results.items()))
    labels = {n: f"{n} (control)" if n == study.manifest.retrain else n for n in results}
    st.plotly_chart(attribution_heatmap({labels[n]: r for n, r in results.items()}, keywords_from="original",
                                        title=f"Contribution of each prompt token to “{html.escape(orig.answer)}”"),
                    width="stretch", key="attr_heatmap")
    rows = [{"position": i, "token": t, **{n: results[n].contributions[i] for n in results},
             **{f"{n} keyword": i in results[n].keywords for n in results}} for i, t in enumerate(orig.tokens)
            if orig.contributions[i] is not None]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _comparison_section(study: Study, after: str, opts: AttributionOptions) -> None:
    st.subheader("Before vs after over the study")
    st.caption("Contribution change (after − before) per token group, groups from the original model's keywords. "
               "Disrupted focus: how much the keywords' contribution drops on the forget set. Indiscriminate "
               "penalisation: how much contributions drop on the retain set, which unlearning should leave alone.")
    names = [n for n in study.comparison(after).names if n != "original"]
    splits = [s for s in ("forget", "retain") if s in study.manifest.samples]
    cached = all(dataset_cached(study, n, opts, splits) for n in ["original", *names])
    if not cached and not compute_button(f"Compare over {' and '.join(splits)} samples", "compare_go"):
        st.caption("Attributes every forget and retain sample on each model (stored in the study).")
        return
    comps = run_per_model(names, lambda s, n, progress: compare_models(s, n, options=opts, splits=splits,
                                                                       progress=progress),
                          key=f"compare::{opts!r}::{splits}", text="attributing")
    if comps is None:
        return
    cols = st.columns(len(comps))
    for col, (name, c) in zip(cols, comps.items(), strict=True):
        col.metric(f"{plain(name)}: disrupted focus", _fmt(c.disrupted_focus, ".3f"),
                   help="forget set: mean drop of the original keywords' contribution")
        col.metric(f"{plain(name)}: indiscriminate penalisation", _fmt(c.indiscriminate_penalisation, ".3f"),
                   help=f"retain set: mean drop of every token's contribution (mean |change| "
                        f"{_fmt(c.retain_abs_change, '.3f')})")
        col.caption("keyword overlap (Jaccard) "
                    + ", ".join(f"{plain(s)} {_fmt(v)}" for s, v in c.keyword_overlap.items()))
    st.plotly_chart(contribution_change_bars(comps), width="stretch", key="change_bars")


def _recovery_controls(study: Study) -> RecoveryOptions:
    c1, c2, c3, c4 = st.columns([3, 1, 1, 2])
    strategies = c1.multiselect("Emphasis strategies", strategy_names(), default=strategy_names(), key="strategies",
                                format_func=lambda s: f"{s} ({EMPHASES.get(s).level})", help=emphasis_help())
    factor = c2.number_input("factor", min_value=0.1, max_value=100.0, value=3.0, step=0.5, key="factor",
                             help="activation strategies: attention / embedding scale at keyword positions")
    copies = c3.number_input("copies", min_value=1, max_value=5, value=1, step=1, key="copies",
                             help="prompt strategies: extra copies of the keywords")
    source = c4.radio("Keywords from", KEYWORD_SOURCES.names(), key="keywords_from", horizontal=True,
                      format_func=KEYWORD_SOURCES.label)
    return RecoveryOptions(strategies=tuple(strategies), params=EmphasisParams(factor=float(factor), copies=int(copies)),
                           keywords_from=source)


def _recovery_section(study: Study, attr_opts: AttributionOptions) -> None:
    st.subheader("Keyword-emphasis recovery")
    retrain = study.manifest.retrain
    st.caption("Re-emphasise each forget prompt's keywords and count the samples whose answer becomes top-1 again "
               "(among the forget samples the original answers top-1 and this model does not). "
               + (f"{plain(retrain)} never learned the forget facts: what it “recovers” is emphasis inventing "
                  "answers, so read every number against it." if retrain else "This study has no retrain control."))
    candidates = [n for n in study.model_names if n not in ("original", retrain)]
    models = st.multiselect("Models", candidates, default=candidates, key="recovery_models")
    opts = _recovery_controls(study)
    if not models:
        st.warning("Pick at least one model.")
        return
    if not opts.strategies:
        st.warning("Pick at least one emphasis strategy.")
        return
    opts = RecoveryOptions(strategies=opts.strategies, params=opts.params, keywords_from=opts.keywords_from,
                           attribution=attr_opts).validated()
    cached = all(recovery_cached(study, m, opts) for m in models)
    if not cached and not compute_button(f"Compute recovery ({len(models)} models x {len(opts.strategies or ())} "
                                         "strategies)", "recover_go"):
        st.caption("Scores every forget sample under each strategy on each model, the original and the retrain "
                   "control (stored in the study: a second view is instant).")
        return
    reports = run_per_model(models, lambda s, n, progress: recover(s, n, opts, progress=progress),
                            key=f"recover::{opts!r}", text="emphasising")
    if reports is None:
        return
    rows = []
    for name, rep in reports.items():
        for r in rep.table():
            rows.append({"model": name, "strategy": r["strategy"], "recovery rate": r["recovery_rate"],
                         f"{retrain or 'retrain'} rate": r["retrain_recovery_rate"],
                         "net rate": r["net_recovery_rate"], "recovered": r["recovered"],
                         f"{retrain or 'retrain'} recovered": r["retrain_recovered"], "p gain": r["prob_gain"],
                         f"{retrain or 'retrain'} p gain": r["retrain_prob_gain"],
                         "original top-1 with emphasis": r["original_top1"]})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                                ("recovery rate", f"{retrain or 'retrain'} rate", "net rate", "p gain",
                                 f"{retrain or 'retrain'} p gain", "original top-1 with emphasis")})
    first = next(iter(reports.values()))
    st.caption(f"{first.n_eligible} of {first.n_forget} forget samples are eligible (the original answers them "
               f"top-1). Net rate: the recovery rate minus {plain(retrain) if retrain else 'the retrain control'}'s. "
               "p gain: mean change of the answer probability over eligible samples. “original top-1 with "
               "emphasis”: how often the emphasis keeps the original model right (low = the rewrite itself "
               "disturbs the model).")
    metric = st.radio("Chart", ["recovery_rate", "prob_gain"], key="recovery_metric", horizontal=True,
                      format_func=lambda m: {"recovery_rate": "recovery rate", "prob_gain": "probability gain"}[m])
    st.plotly_chart(recovery_bars(reports, metric=metric), width="stretch", key="recovery_chart")


def page() -> None:
    study = get_study()
    study_param(study)
    st.title("Attribution")
    st.caption("unPact (Zhang et al. 2025): the contribution of prompt token xᵢ to the answer y is "
               "LP(x, y) − LP(x without xᵢ, y), LP the mean log-probability of the answer tokens. KeyTokens are the "
               "tokens that carry most of it. Unlearning often removes the focus on the keywords rather than the "
               "knowledge; re-emphasising them can bring the answer back.")
    if "original" not in study.model_names:
        st.error("This study has no 'original' model to compare with.")
        return
    choice = prompt_source(study, key="sample")
    if choice is None:
        return
    others = [n for n in study.model_names if n != "original"]
    if not others:
        st.error("This study has no unlearned model to compare with the original.")
        return
    unlearned = [n for n in others if study.entry(n).role == "unlearned"] or others
    after = url_select("Unlearned model", others, key="after", param="model", shared="model", default=unlearned[0])
    try:
        opts = _attribution_controls()
    except WorkbenchError as e:
        st.error(plain(e))
        return
    st.subheader(f"Sample {plain(choice.id)}" if choice.typed is None else
                 f"Your prompt: {plain(choice.typed.prompt)} → {plain(choice.typed.answer)}")
    _sample_section(study, choice, after, opts)
    _comparison_section(study, after, opts)
    _recovery_section(study, opts)


guarded(page)
