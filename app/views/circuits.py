"""Circuits: the EAP-IG circuit of one sample in the original model and an unlearned model, and their diff."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from analysis.circuits.api import CircuitResult, circuit_for_sample
from analysis.figures import circuit_graph
from app.state import get_study, guarded, sample_picker


def _circuit(study: Any, model: str, sample_id: str, top_n: int) -> CircuitResult:
    # edge scores are cached per sample in the study store; selection and faithfulness are cheap
    with st.spinner(f"EAP-IG on {model}…"):
        return circuit_for_sample(study, model, sample_id, top_n=top_n)


def _diff(a: CircuitResult, b: CircuitResult, k: int = 15) -> pd.DataFrame:
    sa, sb = set(a.circuit), set(b.circuit)
    rows = []
    for i in sa | sb:
        e = a.edges[i]
        status = "kept" if i in sa and i in sb else ("lost" if i in sa else "gained")
        rows.append({"edge": f"{e['src']} → {e['dst']}", "status": status, "original": e["score"],
                     "unlearned": b.edges[i]["score"], "change": b.edges[i]["score"] - e["score"]})
    df = pd.DataFrame(rows)
    return df.reindex(df["change"].abs().sort_values(ascending=False).index).head(k * 3)


def page() -> None:
    study = get_study()
    st.title("Circuits")
    st.caption("EAP-IG edge attribution (5 integrated-gradient steps, zero baseline, length-normalised answer "
               "probability) and the greedy top-n circuit grown from the logits. Edge width = |score|; blue "
               "positive, red negative.")
    c1, c2, c3 = st.columns([3, 2, 2])
    sample_id = sample_picker(study, key="circ_sample", label="Sample", container=c1)
    if sample_id is None:
        return
    others = study.unlearned_names
    other = c2.selectbox("Unlearned model", others, key="circ_model") if others else None
    top_n = c3.slider("top-n edges", 5, 200, 75, key="circ_top")
    s = study.sample(sample_id)
    st.caption(f"`{s.id}`: {s.prompt} → **{s.answer}**")
    handle = study.load("original")
    n_layers, n_heads = handle.n_layers, int(handle.model.cfg.n_heads)
    orig = _circuit(study, "original", sample_id, top_n)
    cols = st.columns(2 if other else 1)
    results = [("original", orig)]
    if other:
        results.append((other, _circuit(study, other, sample_id, top_n)))
    for col, (name, r) in zip(cols, results, strict=True):
        f = r.faithfulness["faithfulness"]
        col.plotly_chart(circuit_graph(r.edges, r.circuit, n_layers, n_heads,
                                       title=f"{name}: faithfulness {'-' if f is None else f'{f:.2f}'}"),
                         width="stretch", key=f"graph_{name}")
        col.json(r.stats, expanded=False)
    if other:
        st.subheader(f"Diff: original vs {other}")
        st.dataframe(_diff(orig, results[1][1]), hide_index=True, width="stretch")


guarded(page)
