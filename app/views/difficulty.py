"""Difficulty: CUD (circuit-guided unlearning difficulty) of every forget sample, cross-validated against the
difficulty observed after unlearning."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from analysis.circuits.api import score_study
from analysis.circuits.cud import DISTANCES
from analysis.figures import cud_scatter, signature_bars
from app.state import get_study, guarded


def page() -> None:
    study = get_study()
    st.title("Difficulty")
    st.caption("CUD scores each forget sample before unlearning from its circuit in the original model: "
               "closer to the hard anchor than to the easy one = harder (0..1). Anchors come from samples "
               "that most unlearning methods found easy or hard; scores are out-of-fold.")
    c1, c2, c3 = st.columns(3)
    dist = c1.selectbox("Distance", DISTANCES, key="cud_dist")
    top_n = c2.slider("Circuit size (edges)", 10, 200, 75, key="cud_top")
    folds = c3.number_input("Folds", 2, 20, 5, key="cud_folds")
    bar = st.progress(0.0, text="EAP-IG on the forget samples (stored in the study, computed once)")
    rep = score_study(study, distance=dist, top_n=top_n, folds=int(folds),
                      progress=lambda f, m: bar.progress(min(1.0, f), text=m))
    bar.empty()
    v = rep.validation
    m = st.columns(4)
    m[0].metric("Spearman rho (CUD)", "-" if v["spearman"] is None else f"{v['spearman']:.3f}")
    m[1].metric("AUROC easy vs hard", "-" if v["auroc"] is None else f"{v['auroc']:.3f}")
    for col, (name, b) in zip(m[2:], v["baselines"].items(), strict=False):
        col.metric(f"baseline {name}", "-" if b["spearman"] is None else f"rho {b['spearman']:.3f}",
                   None if b["auroc"] is None else f"AUROC {b['auroc']:.3f}", delta_color="off")
    label = {1: "hard", -1: "easy", 0: "-"}
    table = pd.DataFrame({"id": rep.ids, "cud": rep.cud, "observed": rep.observed,
                          "label": [label[x] for x in rep.labels]})
    st.dataframe(table, hide_index=True, width="stretch")
    c1, c2 = st.columns(2)
    c1.plotly_chart(px.histogram(table, x="cud", nbins=20, title="CUD distribution"), width="stretch", key="cud_hist")
    c2.plotly_chart(cud_scatter(table, v["spearman"]), width="stretch", key="cud_scatter")
    st.subheader("Easy vs hard circuit signature")
    st.plotly_chart(signature_bars(rep.signature), width="stretch", key="cud_sig")
    st.caption(f"methods: {', '.join(v['methods'])}; {v['n_hard']} hard, {v['n_easy']} easy of {v['n']}.")


guarded(page)
