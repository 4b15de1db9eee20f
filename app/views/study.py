"""Study: the scoreboard of every model, and per-sample answer probabilities and observed difficulty."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from analysis.circuits.cud import method_difficulty
from analysis.evaluation import evaluate_study, model_scores
from analysis.figures import scoreboard_bars, trajectory_lines
from analysis.unlearning.log import read_unlearning_log
from analysis.verdict.matrix import (
    VerdictMatrix,
    forget_utility_scatter,
    model_roles,
    verdict_matrix,
    verdict_matrix_figure,
)
from app.context import study_param
from app.jobs import ProgressFn
from app.state import get_study, guarded, plain, run_job

if TYPE_CHECKING:
    from analysis.study import Study


# scoreboard columns: (short label, what it measures and its range)
SCOREBOARD_COLUMNS: dict[str, tuple[str, str]] = {
    "forget_acc": ("forget acc", "top-1 accuracy on the forget answers, 0-1 (lower = forgotten)"),
    "forget_prob": ("forget p", "mean probability of the forget answers (per token, exp of the mean log p), 0-1"),
    "paraphrase_acc": ("paraphr. acc", "top-1 accuracy on paraphrased forget prompts, 0-1"),
    "retain_acc": ("retain acc", "top-1 accuracy on the retain answers, 0-1 (higher = kept)"),
    "retain_prob": ("retain p", "mean probability of the retain answers (per token), 0-1"),
    "utility": ("utility", "accuracy on the general-ability set, 0-1"),
}


def _scoreboard_rows(study: Study, progress: ProgressFn) -> pd.DataFrame:
    res = evaluate_study(study, progress=progress)  # stored per model fingerprint: a second view is instant
    rows = [{"model": n, "role": study.entry(n).role, "method": study.entry(n).method or "", **r.to_dict()}
            for n, r in res.items()]
    return pd.DataFrame(rows)


def _matrix(study: Study, progress: ProgressFn) -> VerdictMatrix:
    return verdict_matrix(study)


def _verdict_matrix(study: Study, board: pd.DataFrame) -> None:
    """Every model x every signal (the verdict matrix), and forget quality against utility."""
    st.subheader("Verdict matrix")
    st.caption("Every model of the study and of the zoo (models whose knowledge is known by construction: P = "
               "present, N = absent) x every signal read by the meta-evaluation (`erasure validate`, or the "
               "Validation page): the reading, the mean over forget samples and its 95% interval. Colours: orange = "
               "the knowledge is inside, blue = gone, grey = inconclusive, light grey = not read.")
    stored = str(study.store.kinds())  # a new validation reading changes the matrix
    fps = ",".join(study.fingerprint(n) for n in study.model_names)
    matrix = run_job(f"verdict_matrix::{fps}::{stored}", "reading the stored signals", _matrix)
    if all(c.reading == "unavailable" for c in matrix.cells.values()):
        st.info("No signal has been read on this study yet: run the meta-evaluation on the Validation page (or "
                "`erasure validate STUDY`) and the matrix fills in here.")
    else:
        st.plotly_chart(verdict_matrix_figure(matrix), width="stretch", key="verdict_matrix")
        st.caption(plain(matrix.boundary_source))
    st.subheader("Forget quality vs utility")
    scores = {r["model"]: r for r in board.to_dict("records")}
    st.plotly_chart(forget_utility_scatter(scores, model_roles(study, list(scores)), study.manifest.retrain),
                    width="stretch", key="forget_utility")
    st.caption("Each model once: right = its forget answers are distributed like the retrain control's (the "
               "target), up = its general ability is kept. Unlearning aims for the top right.")


def page() -> None:
    study = get_study()
    study_param(study)
    st.title("Study")
    st.caption("Output-level metrics: does each model still produce the forget answers, and at what cost to the "
               "retain set and general ability? Forget quality is the KS-test p-value of truth ratios against "
               "the retrain control (TOFU); near 1 = indistinguishable from never having learned.")
    fps = ",".join(study.fingerprint(n) for n in study.model_names)  # a changed model or sample recomputes
    board = run_job(f"scoreboard::{fps}::{study.samples_digest()}", "evaluating the models", _scoreboard_rows)
    st.subheader("Scoreboard")
    # every column fits at 1400 px: short labels, the method column only where it differs from the model's name
    shown = board if (board["method"] != board["model"]).any() else board.drop(columns="method")
    st.dataframe(shown, hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(label, format="%.3f", width="small", help=why) for c, (label, why) in
        SCOREBOARD_COLUMNS.items()} | {
        "forget_quality": st.column_config.NumberColumn(
            "forget quality", format="%.1e", width="small",
            help="TOFU forget quality: KS-test p-value of the truth ratios against the retrain control's, in [0, "
                 "1]; near 1 = indistinguishable from never having learned, below 0.05 = distinguishable"),
        "model": st.column_config.TextColumn(width="medium", pinned=True),
        "role": st.column_config.TextColumn(width="small")})
    st.plotly_chart(scoreboard_bars(board), width="stretch", key="scoreboard_chart")

    _verdict_matrix(study, board)

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
