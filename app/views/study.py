"""Study: the scoreboard of every model, and per-sample answer probabilities and observed difficulty."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from analysis.circuits.cud import method_difficulty
from analysis.evaluation import evaluate_study, model_scores
from analysis.figures import scoreboard_bars, trajectory_lines
from analysis.unlearning.log import read_unlearning_log
from app.state import get_study, guarded, plain


@st.cache_data(show_spinner=False)
def _scoreboard(path: str, fingerprints: tuple[str, ...], samples_digest: str) -> pd.DataFrame:
    from analysis.study import Study

    study = Study.open(path)
    bar = st.progress(0.0, text="evaluating models")
    res = evaluate_study(study, progress=lambda f, m: bar.progress(f, text=plain(m)))
    bar.empty()
    rows = [{"model": n, "role": study.entry(n).role, "method": study.entry(n).method or "", **r.to_dict()}
            for n, r in res.items()]
    return pd.DataFrame(rows)


def page() -> None:
    study = get_study()
    st.title("Study")
    st.caption("Output-level metrics: does each model still produce the forget answers, and at what cost to the "
               "retain set and general ability? Forget quality is the KS-test p-value of truth ratios against "
               "the retrain control (TOFU); near 1 = indistinguishable from never having learned.")
    fps = tuple(study.fingerprint(n) for n in study.model_names)
    board = _scoreboard(str(study.root), fps, study.samples_digest())  # a changed model or sample recomputes
    st.subheader("Scoreboard")
    st.dataframe(board, hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in
        ("forget_acc", "forget_prob", "paraphrase_acc", "retain_acc", "retain_prob", "utility")} | {
        "forget_quality": st.column_config.NumberColumn(format="%.2e"),
        "model": st.column_config.TextColumn(width="medium", pinned=True)})
    st.plotly_chart(scoreboard_bars(board), width="stretch", key="scoreboard_chart")

    st.subheader("Per-sample answer probability")
    split = st.radio("Samples", ["forget", "retain"], horizontal=True, key="split")
    samples = study.samples(split)
    table = pd.DataFrame({"id": [s.id for s in samples], "subject": [s.subject for s in samples],
                          "relation": [s.relation for s in samples], "answer": [s.answer for s in samples],
                          "exposures": [s.metadata.get("exposures") for s in samples]})
    for n in study.model_names:
        per = model_scores(study, n)["per_sample"]
        prob = dict(zip(per["ids"], per["prob"], strict=True))
        table[f"p[{n}]"] = [prob.get(s.id, np.nan) for s in samples]
    logs = {n: read_unlearning_log(study, n) for n in study.unlearned_names}
    logs = {n: lg for n, lg in logs.items() if lg is not None}
    if split == "forget":
        for n, lg in logs.items():
            d = method_difficulty(lg, "auc_after") or {}
            table[f"difficulty[{n}]"] = [d.get(s.id, np.nan) for s in samples]
    st.dataframe(table, hide_index=True, width="stretch", height=380,
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns
                                if c.startswith(("p[", "difficulty["))}
                 | {"id": st.column_config.TextColumn(pinned=True)})
    if split == "forget" and logs:
        st.caption("Observed difficulty = the area under the forget answer's probability curve during unlearning "
                   "with that method (mean p over the steps after the original, in [0, 1]): higher = the sample "
                   "resisted unlearning.")
    # Retraining from scratch has no per-step trajectory (only before/after): a line would fake one.
    stepwise = {n: lg["trajectory_mean"] for n, lg in logs.items() if lg.get("method") != "retrain"}
    if split == "forget" and stepwise:
        st.subheader("Unlearning trajectories")
        st.plotly_chart(trajectory_lines(stepwise), width="stretch", key="trajectory_chart")


guarded(page)
