"""Circuits: the EAP-IG circuit of one sample in the original model and an unlearned model, and their diff."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from analysis.circuits.eap import BASELINES, METRICS
from analysis.circuits.figures import circuit_diff_table, circuit_graph, faithfulness_bars
from analysis.circuits.options import CIRCUIT_DEFAULTS, DEFAULT_TOP_N, HELP, EAPOptions
from analysis.circuits.result import CircuitResult
from analysis.circuits.runner import circuit_for_sample, circuit_typed
from app.context import PromptChoice, prompt_source, study_param, url_select
from app.state import get_study, guarded, plain, run_job

if TYPE_CHECKING:
    pass


def _circuit(model: str, choice: PromptChoice, top_n: int, options: EAPOptions) -> CircuitResult:
    # edge scores are cached per sample (and per typed prompt) in the study store; selection and faithfulness
    # are cheap
    typed, sid = choice.typed, choice.id
    return run_job(f"circuit::{model}::{sid}::{top_n}::{options!r}", f"EAP-IG on {model}",
                   lambda s, progress: circuit_for_sample(s, model, sid, top_n=top_n, options=options)
                   if typed is None else circuit_typed(s, model, typed, top_n=top_n, options=options))


def _stats_table(stats: dict[str, Any]) -> pd.DataFrame:
    """The circuit statistics as rows (edge counts per layer folded into one row)."""
    rows = [(k, v) for k, v in stats.items() if not isinstance(v, dict)]
    layers = stats.get("edge_layers") or {}
    rows.append(("edges per layer (input side)", ", ".join(f"L{k}: {v}" for k, v in layers.items())))
    return pd.DataFrame({"statistic": [r[0].replace("_", " ") for r in rows],
                         "value": [("-" if r[1] is None else f"{r[1]:.3g}" if isinstance(r[1], float) else str(r[1]))
                                   for r in rows]})


def page() -> None:
    study = get_study()
    study_param(study)
    st.title("Circuits")
    st.caption(f"EAP-IG edge attribution ({CIRCUIT_DEFAULTS.steps} integrated-gradient steps) and the greedy "
               "top-n circuit grown from the logits. Edge width = |score|; orange = positive score, blue = negative (named in the legend). "
               "Faithfulness = (circuit - all ablated) / (full model - all ablated), edges outside the circuit "
               "ablated to the baseline: 1 = the circuit alone does what the full model does; above 1 = the "
               "circuit does more (edges left out worked against the answer); below 0 = worse than ablating "
               "everything. The defaults "
               "(answer log-prob, corrupted baseline) give faithful circuits on the organism (median 0.96 at 75 "
               "edges); CUD's setting (probability, zero baseline) gives circuits of faithfulness ~0 there.")
    choice = prompt_source(study, key="circ_sample", label="Sample")
    if choice is None:
        return
    c2, c3, c4, c5 = st.columns([2, 2, 1.4, 1.4])
    others = study.unlearned_names  # the controls too (a circuit of the retrain control is a useful contrast)
    first = next((n for n in others if study.entry(n).role == "unlearned"), None)  # default: an unlearning method
    other = url_select("Unlearned model", others, key="circ_model", param="model", shared="model", default=first,
                       container=c2) if others else None
    top_n = c3.slider("top-n edges", 5, 200, DEFAULT_TOP_N, key="circ_top", help=HELP["top_n"])
    metrics, baselines = METRICS.names(), BASELINES.names()
    metric = c4.selectbox("Metric", metrics, index=metrics.index(CIRCUIT_DEFAULTS.metric), key="circ_metric",
                          help=HELP["metric"])
    baseline = c5.selectbox("Baseline", baselines, index=baselines.index(CIRCUIT_DEFAULTS.baseline),
                            key="circ_base", help=HELP["baseline"])
    opts = EAPOptions(metric=metric, baseline=baseline)
    s = choice.typed or study.sample(choice.id)
    st.caption(f"{plain(s.id)}: {plain(s.prompt)} → **{plain(s.answer)}**")
    handle = study.load("original")
    n_layers, n_heads = handle.n_layers, int(handle.model.cfg.n_heads)
    orig = _circuit("original", choice, top_n, opts)
    cols = st.columns(2 if other else 1)
    results = [("original", orig)]
    if other:
        results.append((other, _circuit(other, choice, top_n, opts)))
    for col, (name, r) in zip(cols, results, strict=True):
        f = r.faithfulness["faithfulness"]
        col.plotly_chart(circuit_graph(r.edges, r.circuit, n_layers, n_heads,
                                       title=f"{name}: faithfulness {'-' if f is None else f'{f:.2f}'}"),
                         width="stretch", key=f"graph_{name}")
        if r.faithfulness.get("note"):
            col.caption(f"Faithfulness {plain(r.faithfulness['note'])}.")
        col.dataframe(_stats_table(r.stats), hide_index=True, width="stretch")
    st.plotly_chart(faithfulness_bars({name: r.faithfulness["faithfulness"] for name, r in results},
                                      title=f"Faithfulness of the top-{top_n} circuit"), width="stretch",
                    key="circ_faithfulness")
    if other:
        st.subheader(f"Diff: original vs {plain(other)}")
        st.dataframe(circuit_diff_table(orig, results[1][1]), hide_index=True, width="stretch")


guarded(page)
