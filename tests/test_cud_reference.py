"""Issue 15, CUD: labels that share no term with the answer-loss baseline, and the reference setting (k/steps
IG points, IG over each node's activations, binary top-n anchor circuits, votes from the post-unlearning loss)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from analysis.circuits.cud import (
    auroc,
    circuit_vectors,
    cross_validate,
    labels_from_scores,
    mean_anchor,
    method_difficulty,
    top_n_anchor,
)
from analysis.circuits.eap import baseline_outputs, edge_scores, ig_alphas, metric_values, run_with_edges
from analysis.circuits.graph import Graph
from analysis.circuits.options import CUDOptions, EAPOptions
from analysis.circuits.selection import greedy_circuit
from analysis.errors import AnalysisInputError
from analysis.scoring import batch_from_ids
from analysis.unlearning.base import observed_difficulty

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- (a) observed difficulty without the original's own probability --------------------------------------
def test_auc_after_leaves_out_the_original_row() -> None:
    """Two samples with the same trajectory after row 0 but different originals: the old ``auc`` differs by
    a third of the originals' difference (a function of row 0), ``auc_after`` is identical."""
    traj = np.array([[0.9, 0.1], [0.4, 0.4], [0.2, 0.2]])
    d = observed_difficulty(traj)
    np.testing.assert_allclose(d["auc"], [1.5 / 3, 0.7 / 3])
    assert d["auc"][0] - d["auc"][1] == pytest.approx((0.9 - 0.1) / 3)
    np.testing.assert_allclose(d["auc_after"], [0.3, 0.3])
    # a record written before auc_after existed gets it from its trajectory, the same numbers
    log = {"forget_ids": ["a", "b"], "difficulty": {"auc": d["auc"].tolist()}, "trajectory": traj.tolist()}
    assert method_difficulty(log, "auc_after") == pytest.approx({"a": 0.3, "b": 0.3})
    assert method_difficulty(log, "auc") == pytest.approx({"a": 0.5, "b": 0.7 / 3})
    assert method_difficulty({"forget_ids": ["a"], "difficulty": {}}, "auc_after") is None
    with pytest.raises(AnalysisInputError, match="unknown label kind"):
        method_difficulty(log, "auroc")


def test_old_labels_follow_the_original_and_the_new_do_not() -> None:
    """Originals decreasing, the unlearning steps after them increasing: the old labels are the originals'
    order (so the answer-loss baseline scores AUROC 1 against them by construction), the new the steps'."""
    n, steps = 10, 2
    original = np.linspace(0.9, 0.1, n)
    after = 0.01 * np.arange(n)
    traj = np.vstack([original] + [after] * steps)
    d = observed_difficulty(traj)
    per_old = {m: d["auc"] for m in ("ga", "npo", "rmu")}
    per_new = {m: d["auc_after"] for m in ("ga", "npo", "rmu")}
    _, old = labels_from_scores(per_old, 0.3)
    obs_new, new = labels_from_scores(per_new, 0.3)
    np.testing.assert_array_equal(old, [1, 1, 1, 0, 0, 0, 0, -1, -1, -1])
    np.testing.assert_array_equal(new, [-1, -1, -1, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(obs_new, after)
    loss_baseline = np.log(original)  # the original's answer log-prob: higher (lower loss) = harder
    assert auroc(loss_baseline, old) == 1.0
    assert auroc(loss_baseline, new) == 0.0


def test_loss_votes_known_answer() -> None:
    """The reference's labels: votes from the post-unlearning loss (lower = harder), a third per method."""
    up = [0.1, 0.2, 1.0, 2.0, 5.0, 9.0]
    logs = {m: {"forget_ids": list("abcdef"), "difficulty": {"final_loss": losses}}
            for m, losses in (("ga", up), ("npo", up), ("rmu", up[::-1]))}
    per = {m: np.array(list(method_difficulty(lg, "final_loss").values())) for m, lg in logs.items()}
    observed, labels = labels_from_scores(per, 1 / 3)
    np.testing.assert_array_equal(labels, [1, 1, 0, 0, -1, -1])  # low loss after unlearning = hard
    assert observed[0] == pytest.approx((2 * np.exp(-0.1) + np.exp(-9.0)) / 3)


# ---- (b) the reference setting -----------------------------------------------------------------------------
def test_ig_points_known_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ig_alphas(4) == [0.125, 0.375, 0.625, 0.875]
    assert ig_alphas(4, "endpoint") == [0.25, 0.5, 0.75, 1.0]
    with pytest.raises(AnalysisInputError):
        ig_alphas(4, "left")
    with pytest.raises(AnalysisInputError, match="unknown IG points"):
        EAPOptions(points="left")  # type: ignore[arg-type]
    assert CUDOptions(setting="reference").scoring_eap.points == "endpoint"
    # the engine integrates at those points
    import analysis.circuits.eap as eap

    seen: list[float] = []
    real = eap.ig_gradients

    def spy(*args: Any, **kw: Any) -> torch.Tensor:
        seen.extend(args[5])
        return real(*args, **kw)

    monkeypatch.setattr(eap, "ig_gradients", spy)
    m, b = _model(), _batch()
    for points, want in (("endpoint", [0.25, 0.5, 0.75, 1.0]), ("midpoint", [0.125, 0.375, 0.625, 0.875])):
        seen.clear()
        edge_scores(m, b, EAPOptions(steps=4, points=points), max_rows=1000)  # type: ignore[arg-type]
        assert seen == want


def _model(seed: int = 1) -> HookedTransformer:
    """A random 2-layer model with heads and MLPs, no LayerNorm (IG converges in a few dozen steps)."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=8, n_ctx=8, d_head=4, n_heads=2, d_vocab=6, d_mlp=16,
                                  act_fn="gelu", normalization_type=None, positional_embedding_type="standard",
                                  device="cpu", seed=seed)
    return HookedTransformer(cfg)


def _batch() -> Any:
    return batch_from_ids([([0, t, 2], [(t + 1) % 6]) for t in (1, 3, 4)], pad_id=0, n_ctx=8)


def test_ig_over_activations_completeness_per_node() -> None:
    """IG over node u's output alone: the edges out of u sum to M(clean) - M(clean with u's output set to its
    baseline), for every node (heads, MLPs, the input); the input's edges equal IG over the inputs."""
    m, b = _model(), _batch()
    ref = batch_from_ids([([0, 5, 1], [2])], pad_id=0, n_ctx=8)
    g = Graph.of(m)
    acts = edge_scores(m, b, EAPOptions(metric="logprob", steps=64, baseline="mean", ig_over="activations",
                                        points="endpoint"), reference=ref)
    inputs = edge_scores(m, b, EAPOptions(metric="logprob", steps=64, baseline="mean", points="endpoint"),
                         reference=ref)
    base = baseline_outputs(m, g, b, "mean", reference=ref)
    with torch.no_grad():
        full = metric_values(m(b.tokens), b, "logprob").numpy()
    for node in g.upstream:
        out = [i for i, e in enumerate(g.edges) if e.src == node]
        keep = np.ones(g.n_edges, dtype=bool)
        keep[out] = False
        patched = run_with_edges(m, b, keep, "logprob", base).numpy()
        np.testing.assert_allclose(acts[:, out].sum(1), full - patched, rtol=2e-2, atol=2e-3, err_msg=node)
        if node == "input":
            np.testing.assert_allclose(acts[:, out], inputs[:, out], rtol=1e-6, atol=1e-9)
    later = [i for i, e in enumerate(g.edges) if e.src != "input"]
    assert np.abs(acts[:, later] - inputs[:, later]).max() > 1e-3  # the option changes the other edges


def test_top_n_anchor_is_a_binary_circuit_known_answer() -> None:
    """The reference's anchor: the greedy top-n circuit of the set's mean edge scores, 0/1; ours: the mean
    of the samples' binary circuits (shares)."""
    g = Graph(n_layers=2, n_heads=2, has_mlp=False)
    edge = {(e.src, e.dst): i for i, e in enumerate(g.edges)}
    a_out, a_in, b_out = edge["a1.h0", "logits"], edge["input", "a1.h0.q"], edge["a0.h0", "logits"]
    scores = np.zeros((2, g.n_edges))
    scores[0, a_out], scores[0, a_in] = -1.0, 5.0
    scores[1, b_out] = 2.0
    # mean scores: b_out 1.0, a_out -0.5, a_in 2.5; greedy from the logits: b_out, then a_out (a_in only
    # becomes eligible once a1.h0 is in the circuit)
    want = np.zeros(g.n_edges)
    want[[b_out, a_out]] = 1.0
    got = top_n_anchor(scores, lambda s: greedy_circuit(g, s, 2))
    np.testing.assert_array_equal(got, want)
    weighted = top_n_anchor(scores, lambda s: greedy_circuit(g, s, 2), "weighted")
    assert weighted[b_out] == 1.0 and weighted[a_out] == 0.5 and weighted.sum() == 1.5
    vecs = circuit_vectors(scores, [greedy_circuit(g, s, 2) for s in scores], "binary")
    ours = mean_anchor(vecs)
    assert ours[a_out] == ours[a_in] == ours[b_out] == 0.5 and ours.sum() == 2.0
    # n beyond the graph: every edge
    assert top_n_anchor(scores, lambda s: greedy_circuit(g, s, 10_000)).sum() == g.n_edges
    # cross_validate builds its anchors with the function given: here swapped (the hard vector for the easy
    # set), so every easy sample scores 1 and every hard one 0 (the default mean anchors: the reverse)
    e, h = np.array([1.0, 1, 0, 0]), np.array([0.0, 0, 1, 1])
    six = np.vstack([e, e, e, h, h, h])
    labels = np.array([-1, -1, -1, 1, 1, 1])

    def swapped(rows: np.ndarray) -> np.ndarray:
        return h if (labels[rows] == -1).all() else e

    np.testing.assert_allclose(cross_validate(six, labels, folds=3, anchor=swapped), [1, 1, 1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(cross_validate(six, labels, folds=3), [0, 0, 0, 1, 1, 1], atol=1e-12)


def test_options_and_store_keys() -> None:
    # the default edge-score key is the one before the new options (stored scores stay valid) ...
    assert EAPOptions().key() == {"metric": "prob", "steps": 5, "baseline": "zero", "seed": 0, "version": 1}
    ours, ref = CUDOptions(), CUDOptions(setting="reference")
    assert (ours.anchor_kind, ours.label_kind, ours.scoring_eap) == ("mean", "auc_after", EAPOptions())
    assert (ref.anchor_kind, ref.label_kind) == ("top_n", "final_loss")
    # ... and the reference setting's edge scores are stored under another key
    assert ref.scoring_eap.key() != ours.scoring_eap.key()
    assert ref.scoring_eap.key()["ig_over"] == "activations" and ref.scoring_eap.key()["points"] == "endpoint"
    assert ref.report_options()["setting"] == "reference" and ours.report_options()["labels"] == "auc_after"
    with pytest.raises(AnalysisInputError, match="unknown CUD setting 'paper'"):
        CUDOptions(setting="paper").validated()  # type: ignore[arg-type]
    with pytest.raises(AnalysisInputError, match="unknown IG over"):
        EAPOptions(ig_over="weights")  # type: ignore[arg-type]


def test_score_reference_setting_cli_and_page(small_study: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.circuits.options import STORE_KIND
    from analysis.circuits.runner import store_key
    from tests.test_circuits import _parser

    p = _parser()
    args = p.parse_args(["score", str(small_study.root), "--reference-setting", "--json"])
    args.fn(args)
    out = json.loads(capsys.readouterr().out)
    assert out["options"]["setting"] == "reference" and out["options"]["ig_over"] == "activations"
    assert out["validation"]["labels"] == "final_loss"
    assert set(out["label_comparison"]) == {"auc_after", "auc", "final_loss"}
    for c in out["label_comparison"].values():
        assert {"cud", "baselines", "n_hard", "n_easy"} <= set(c)
    ids = [s.id for s in small_study.forget]
    fp = small_study.fingerprint("original")
    ref_eap = CUDOptions(setting="reference").scoring_eap
    assert set(small_study.store.get_many(STORE_KIND, fp, store_key(small_study, ref_eap), ids)) == set(ids)
    args = p.parse_args(["score", str(small_study.root), "--json"])
    args.fn(args)
    ours = json.loads(capsys.readouterr().out)
    assert ours["options"]["setting"] == "ours" and ours["validation"]["labels"] == "auc_after"
    assert ours["label_comparison"]["auc_after"]["cud"] == {k: ours["validation"][k] for k in ("spearman", "auroc")}
    # the old labels are reported beside the new
    assert ours["label_comparison"]["auc"]["baselines"]["original_loss"]["auroc"] is not None
    from analysis.circuits.runner import score_study

    rep = score_study(small_study, CUDOptions(setting="reference"))
    for a in rep.anchors.values():  # binary top-n anchor circuits
        assert set(a) <= {0.0, 1.0} and sum(a) == CUDOptions().top_n


def test_difficulty_page_reference_toggle(small_study: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(small_study.root))
    views = Path(__file__).resolve().parent.parent / "app" / "views"
    at = AppTest.from_file(str(views / "difficulty.py"), default_timeout=300).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert {r["labels"] for r in at.dataframe[-1].value.to_dict("records")} == {"auc_after", "auc", "final_loss"}
    # the page says in words when a baseline beats CUD, and only then
    from analysis.circuits.runner import score_study

    v = score_study(small_study).validation
    beaten = any(b["auroc"] is not None and v["auroc"] is not None and b["auroc"] > v["auroc"]
                 for b in v["baselines"].values())
    assert any("CUD loses here" in w.value for w in at.warning) == beaten
    at.toggle(key="cud_reference").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("top-n circuit" in c.value for c in at.caption)
