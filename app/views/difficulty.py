"""Difficulty: CUD (circuit-guided unlearning difficulty) of every forget sample, cross-validated against the
difficulty observed after unlearning."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from analysis.circuits.cud import DISTANCES
from analysis.circuits.figures import circuit_graph, cud_histogram, cud_scatter, cud_table, signature_bars
from analysis.circuits.graph import Graph
from analysis.circuits.options import HELP, CUDOptions
from analysis.circuits.runner import score_study
from app.state import get_study, guarded, plain, run_job

if TYPE_CHECKING:
    from analysis.study import Study


def _anchor_circuits(study: Study, anchors: dict[str, list[float]], top_n: int, kind: str) -> None:
    """The easy and hard anchors drawn as circuits: ours, each edge weighted by the share of anchor samples
    whose circuit holds it (binary vectors); the reference's, the top-n circuit of the set's mean edge
    scores. The top-n edges of each anchor."""
    if len(anchors) < 2:
        st.info("No anchor circuits: the study's methods label no sample easy or no sample hard.")
        return
    st.subheader("Anchor circuits")
    what = ("the top-n circuit of the easy (hard) samples' mean edge scores (the reference's anchor)"
            if kind == "top_n" else "share of the easy (hard) calibration samples whose circuit contains the edge")
    st.caption(f"Edge width = {what}; built from all labelled samples (the scores above use out-of-fold "
               "anchors).")
    handle = study.load("original")
    g = Graph.of(handle.model)
    cols = st.columns(2)
    for col, name in zip(cols, ("easy", "hard"), strict=True):
        a = np.asarray(anchors[name])
        edges = g.edge_dicts(a)
        top = [int(i) for i in np.argsort(-a)[:top_n] if a[i] > 0]
        col.plotly_chart(circuit_graph(edges, top, g.n_layers, g.n_heads, title=f"{name} anchor"),
                         width="stretch", key=f"anchor_{name}")
    diff = np.asarray(anchors["hard"]) - np.asarray(anchors["easy"])
    order = np.argsort(-np.abs(diff))[:15]
    st.dataframe(pd.DataFrame({"edge": [f"{g.edges[i].src} → {g.edges[i].dst}" for i in order],
                               "easy": [anchors["easy"][i] for i in order],
                               "hard": [anchors["hard"][i] for i in order],
                               "hard - easy": diff[order]}), hide_index=True, width="stretch")


def page() -> None:
    study = get_study()
    st.title("Difficulty")
    st.caption("CUD scores each forget sample before unlearning from its circuit in the original model: "
               "closer to the hard anchor than to the easy one = harder (0..1). Anchors come from samples "
               "that most unlearning methods found easy or hard; scores are out-of-fold.")
    defaults = CUDOptions()
    c1, c2, c3, c4 = st.columns(4)
    dist = c1.selectbox("Distance", DISTANCES.names(), index=DISTANCES.names().index(defaults.distance),
                        key="cud_dist", help=HELP["distance"])
    top_n = c2.slider("Circuit size (edges)", 10, 200, defaults.top_n, key="cud_top", help=HELP["top_n"])
    folds = c3.number_input("Folds", 2, 20, defaults.folds, key="cud_folds", help=HELP["folds"])
    reference = c4.toggle("Reference setting", False, key="cud_reference", help=HELP["setting"])
    opts = CUDOptions(distance=dist, top_n=top_n, folds=int(folds), setting="reference" if reference else "ours")
    rep = run_job(f"cud::{opts!r}", "EAP-IG on the forget samples (stored in the study, computed once)",
                  lambda s, progress: score_study(s, opts, progress=progress))
    v = rep.validation
    m = st.columns(4)
    m[0].metric("Spearman rho (CUD)", "-" if v["spearman"] is None else f"{v['spearman']:.3f}")
    m[1].metric("AUROC easy vs hard", "-" if v["auroc"] is None else f"{v['auroc']:.3f}")
    for col, (name, b) in zip(m[2:], v["baselines"].items(), strict=False):
        col.metric(f"baseline {plain(name)}", "-" if b["spearman"] is None else f"rho {b['spearman']:.3f}",
                   None if b["auroc"] is None else f"AUROC {b['auroc']:.3f}", delta_color="off")
    best = max(((n, b) for n, b in v["baselines"].items() if b["auroc"] is not None),
               key=lambda nb: nb[1]["auroc"], default=None)
    if best is not None and v["auroc"] is not None and best[1]["auroc"] > v["auroc"]:
        st.warning(f"CUD loses here: it tells hard from easy samples at AUROC {v['auroc']:.2f}, the "
                   f"{plain(best[0])} baseline, which needs no circuit at all, at {best[1]['auroc']:.2f} "
                   "(benchmarks/CUD_SEEDS.md has the same comparison on three seeds).")
    best_rho = max(((n, b) for n, b in v["baselines"].items() if b["spearman"] is not None),
                   key=lambda nb: nb[1]["spearman"], default=None)
    if best_rho is not None and v["spearman"] is not None and best_rho[1]["spearman"] > v["spearman"]:
        st.warning(f"Ranking samples by difficulty, CUD correlates with the observed difficulty at Spearman rho "
                   f"{v['spearman']:.2f} (0 = no relation, 1 = the same order); the {plain(best_rho[0])} baseline "
                   f"at {best_rho[1]['spearman']:.2f}.")
    table = cud_table(rep)
    st.dataframe(table, hide_index=True, width="stretch")
    c1, c2 = st.columns(2)
    c1.plotly_chart(cud_histogram(table), width="stretch", key="cud_hist")
    c2.plotly_chart(cud_scatter(table, v["spearman"]), width="stretch", key="cud_scatter")
    _anchor_circuits(study, rep.anchors, top_n, rep.options.get("anchors", "mean"))
    st.subheader("Easy vs hard circuit signature")
    st.plotly_chart(signature_bars(rep.signature), width="stretch", key="cud_sig")
    st.caption(f"methods: {plain(', '.join(v['methods']))}; {v['n_hard']} hard, {v['n_easy']} easy of {v['n']} "
               f"by {plain(v.get('labels', 'auc'))} labels.")
    st.subheader("Which labels")
    st.caption("The same CUD scores and baselines against each kind of calibration label. The old labels (auc) "
               "include the original model's own answer probability, the quantity of the answer-loss "
               "baseline, so that baseline agrees with them partly by construction; auc_after (the default) "
               "leaves it out; final_loss is the reference's votes from the post-unlearning loss.")
    rows = []
    for kind, c in rep.label_comparison.items():
        row: dict[str, object] = {"labels": kind, "definition": c.get("definition", c.get("error", ""))}
        if "cud" in c:
            row |= {"CUD AUROC": c["cud"]["auroc"], "CUD rho": c["cud"]["spearman"],
                    **{f"{n} AUROC": b["auroc"] for n, b in c["baselines"].items()},
                    "hard / easy": f"{c['n_hard']} / {c['n_easy']}"}
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


guarded(page)
