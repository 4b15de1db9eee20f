"""Circuits: EAP-IG known answers, selection, CUD, CLI and bad inputs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, get_args

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from analysis.circuits.cud import cross_validate, cud, distance, labels_from_auc
from analysis.circuits.eap import edge_scores, metric_values, run_with_edges
from analysis.circuits.graph import Graph
from analysis.circuits.options import EAPOptions
from analysis.circuits.selection import circuit_stats, edge_mask, greedy_circuit, threshold_circuit
from analysis.errors import AnalysisInputError, StudyError, WorkbenchError
from analysis.scoring import batch_from_ids

V = 6  # toy vocabulary; answer of prompt [BOS=0, t] is token f(t) = (t + 1) % V


def _toy(planted: tuple[int, int] = (0, 1), ln: bool = False) -> HookedTransformer:
    """2-layer, 2-head attn-only model: the answer is written by head ``planted`` only."""
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=2, d_model=2 * V, n_ctx=8, d_head=V, n_heads=2, d_vocab=V,
                                  attn_only=True, normalization_type="LN" if ln else None, act_fn="relu",
                                  positional_embedding_type="standard", device="cpu", seed=0)
    m = HookedTransformer(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(0.02)
        m.W_E.zero_()
        m.W_E[:, :V] = torch.eye(V)  # token t -> dim t
        m.W_pos.zero_()
        m.W_U.zero_()
        m.W_U[V:, :] = 5 * torch.eye(V)  # logits read dims V..2V-1
        layer, head = planted
        attn = m.blocks[layer].attn
        attn.W_Q[head].zero_()
        attn.W_K[head].zero_()  # uniform attention over the prefix
        attn.W_V[head] = torch.eye(V, V).repeat(2, 1)[: 2 * V] * torch.tensor([1.0] * V + [0.0] * V)[:, None]
        perm = torch.zeros(V, 2 * V)
        for t in range(V):
            perm[t, V + (t + 1) % V] = 4.0
        attn.W_O[head] = perm
    return m


def _toy_batch(tokens: list[int]) -> Any:
    return batch_from_ids([([0, t], [(t + 1) % V]) for t in tokens], pad_id=0, n_ctx=8)


def test_graph_counts() -> None:
    g = Graph(n_layers=2, n_heads=2, has_mlp=False)
    assert g.upstream == ["input", "a0.h0", "a0.h1", "a1.h0", "a1.h1"]
    # layer 0 heads: 1 upstream x 6 inputs; layer 1 heads: 3 x 6; logits: 5
    assert g.n_edges == 6 + 18 + 5
    g2 = Graph(n_layers=4, n_heads=4, has_mlp=True)
    assert g2.n_edges == 479


def test_planted_head_on_top() -> None:
    m = _toy((0, 1))
    b = _toy_batch([1, 2, 3, 4])
    s = edge_scores(m, b, EAPOptions(metric="logprob", steps=10))
    g = Graph.of(m)
    top2 = {(g.edges[i].src, g.edges[i].dst) for i in np.argsort(-np.abs(s).mean(0))[:2]}
    assert top2 == {("a0.h1", "logits"), ("input", "a0.h1.v")}  # the planted path carries the answer
    c = greedy_circuit(g, s[0], 2)
    assert [g.edges[i].src for i in c] == ["a0.h1", "input"]


@pytest.mark.parametrize("ln", [False, True])
def test_completeness_input_node(ln: bool) -> None:
    """Edges out of `input` sum to M(clean) - M(baseline run) (IG completeness of the embeddings)."""
    m = _toy((0, 1), ln=ln)
    b = _toy_batch([1, 2, 3])
    steps = 50 if not ln else 400
    s = edge_scores(m, b, EAPOptions(metric="logprob", steps=steps, baseline="mean"), reference=_toy_batch([0, 5]))
    g = Graph.of(m)
    out_of_input = s[:, [i for i, e in enumerate(g.edges) if e.src == "input"]].sum(1)
    from analysis.circuits.eap import baseline_outputs

    base = baseline_outputs(m, g, b, "mean", reference=_toy_batch([0, 5]))
    with torch.no_grad():
        full = metric_values(m(b.tokens), b, "logprob")
    empty = run_with_edges(m, b, np.zeros(g.n_edges, dtype=bool), "logprob", base)
    np.testing.assert_allclose(out_of_input, (full - empty).numpy(), rtol=2e-2, atol=2e-3)


def test_ablation_extremes() -> None:
    m = _toy()
    b = _toy_batch([1, 2])
    g = Graph.of(m)
    with torch.no_grad():
        full = metric_values(m(b.tokens), b, "prob")
    np.testing.assert_allclose(run_with_edges(m, b, np.ones(g.n_edges, dtype=bool)), full, atol=1e-6)
    planted = [i for i, e in enumerate(g.edges)
               if (e.src, e.dst) in {("a0.h1", "logits"), ("input", "a0.h1.v")}]
    keep = edge_mask(g, planted)
    assert (run_with_edges(m, b, keep) - full).abs().max() < 0.05


def test_batched_equals_one_by_one(organism: Any, small_study: Any) -> None:
    from analysis.scoring import make_batch

    ss = small_study.forget[:4]
    opts = EAPOptions(steps=3)
    batched = edge_scores(organism.model, make_batch(organism, [s.prompt for s in ss], [s.answer for s in ss]), opts)
    # The reference: one sample and one IG step per forward/backward (max_rows=1).
    single = np.stack([edge_scores(organism.model, make_batch(organism, [s.prompt], [s.answer]), opts, max_rows=1)[0]
                       for s in ss])
    scale = np.abs(single).max()
    np.testing.assert_allclose(batched, single, atol=1e-5 * scale)
    # Steps split over several passes (2 rows of 4 samples per pass -> 1 step per pass) agree too.
    split = edge_scores(organism.model, make_batch(organism, [s.prompt for s in ss], [s.answer for s in ss]), opts,
                        max_rows=5)
    np.testing.assert_allclose(split, single, atol=1e-5 * scale)


def test_selection_and_stats() -> None:
    g = Graph(n_layers=2, n_heads=2, has_mlp=False)
    s = np.zeros(g.n_edges)
    i_in = next(i for i, e in enumerate(g.edges) if (e.src, e.dst) == ("input", "a1.h0.q"))
    i_out = next(i for i, e in enumerate(g.edges) if (e.src, e.dst) == ("a1.h0", "logits"))
    s[i_in], s[i_out] = 5.0, -1.0  # the big edge is only eligible once a1.h0 is in the circuit
    assert greedy_circuit(g, s, 2) == [i_out, i_in]
    assert threshold_circuit(g, s, 2.0) == [i_in]
    st = circuit_stats(g, s, [i_out, i_in])
    assert st["longest_path"] == 2 and st["mean_path_length"] == 2.0 and st["n_paths"] == 1
    with pytest.raises(AnalysisInputError):
        greedy_circuit(g, s[:-1], 3)
    with pytest.raises(AnalysisInputError):
        greedy_circuit(g, s * np.nan, 3)


def test_cud_known_answers() -> None:
    easy = np.array([1.0, 1, 0, 0])
    hard = np.array([0.0, 0, 1, 1])
    for kind in ("cosine", "jaccard", "hamming"):
        assert cud(easy, easy, hard, kind)[0] == pytest.approx(0.0, abs=1e-12)
        assert cud(hard, easy, hard, kind)[0] == pytest.approx(1.0, abs=1e-12)
        assert cud(easy, easy, easy, kind)[0] == 0.5
    assert distance(np.zeros(4), easy, "cosine")[0] == 1.0
    with pytest.raises(AnalysisInputError):
        distance(easy, easy, "euclid")
    obs, lab = labels_from_auc({"a": np.arange(10.0), "b": np.arange(10.0), "c": -np.arange(10.0)})
    assert lab[-1] == 1 and lab[0] == -1 and np.allclose(obs, np.arange(10) / 3)
    vecs = np.vstack([np.tile(easy, (6, 1)), np.tile(hard, (6, 1))])
    labels = np.array([-1] * 6 + [1] * 6)
    np.testing.assert_allclose(cross_validate(vecs, labels, folds=3), [0.0] * 6 + [1.0] * 6, atol=1e-12)
    with pytest.raises(AnalysisInputError):
        cross_validate(vecs, labels, folds=1)


def test_circuit_vectors_binary_and_weighted() -> None:
    from analysis.circuits.cud import circuit_vectors

    scores = np.array([[0.5, -2.0, 0.1, 3.0], [1.0, 0.0, -4.0, 0.2]])
    circuits = [[1, 3], [2]]
    np.testing.assert_array_equal(circuit_vectors(scores, circuits, "binary"), [[0, 1, 0, 1], [0, 0, 1, 0]])
    np.testing.assert_allclose(circuit_vectors(scores, circuits, "weighted"), [[0, 2.0, 0, 3.0], [0, 0, 4.0, 0]])
    # weighted Jaccard of a vector with itself is 0; on 0/1 vectors it is the set Jaccard distance
    w = circuit_vectors(scores, circuits, "weighted")
    assert distance(w[:1], w[0], "jaccard")[0] == pytest.approx(0.0)
    assert distance(np.array([[1.0, 1, 0, 0]]), np.array([1.0, 0, 1, 0]), "jaccard")[0] == pytest.approx(2 / 3)


def test_faithfulness_undefined_when_model_lacks_the_metric() -> None:
    from analysis.circuits.eap import MIN_GAP, faithfulness

    m = _toy()
    g = Graph.of(m)
    b = _toy_batch([1, 2])
    keep = np.ones(g.n_edges, dtype=bool)
    f = faithfulness(m, b, keep, "prob")
    assert all(x == pytest.approx(1.0, abs=1e-6) for x in f.faithfulness) and f.notes == [None, None]
    with torch.no_grad():
        m.W_U.zero_()  # no answer preference left: full == empty == 1 / V
    f = faithfulness(m, b, keep, "prob")
    assert f.faithfulness == [None, None] and all("nothing for a circuit to recover" in n for n in f.notes)
    assert abs(f.full[0] - f.empty[0]) < MIN_GAP["prob"]


def test_bad_inputs() -> None:
    with pytest.raises(AnalysisInputError):
        EAPOptions(metric="kl")
    with pytest.raises(AnalysisInputError):
        EAPOptions(steps=0)
    with pytest.raises(AnalysisInputError):
        EAPOptions(baseline="noise")
    m = _toy()
    with pytest.raises(AnalysisInputError):
        run_with_edges(m, _toy_batch([1]), np.ones(3, dtype=bool))
    with pytest.raises(StudyError):
        labels_from_auc({})


def test_every_registered_metric_is_reachable_by_name() -> None:
    from analysis.circuits.eap import METRICS, MIN_GAP, faithfulness
    from analysis.circuits.options import METRIC_LABELS, MetricName

    assert METRICS.names() == get_args(MetricName) == ("prob", "logprob", "logit_margin")
    assert METRICS.labels() == METRIC_LABELS and set(MIN_GAP) == set(METRICS.names())
    assert METRICS.label("logit_margin") == "logit margin (answer - largest other logit)"
    m = _toy()
    g = Graph.of(m)
    tokens = [1, 2, 3]
    b = _toy_batch(tokens)
    with torch.no_grad():
        logits = m(b.tokens)
    for name in METRICS:
        got = metric_values(logits, b, name)
        assert got.shape == (3,) and torch.isfinite(got).all()
        torch.testing.assert_close(got, METRICS.get(name)(logits, b))
        assert EAPOptions(metric=name).metric == name
        s = edge_scores(m, b, EAPOptions(metric=name, steps=2))
        assert s.shape == (3, g.n_edges) and np.isfinite(s).all()
        f = faithfulness(m, b, np.ones(g.n_edges, dtype=bool), name)  # every edge kept: the full model
        np.testing.assert_allclose(f.circuit, f.full, atol=1e-5)
    # known answers: prob = exp(logprob); the logit margin by hand (the one answer token is read at position 1)
    torch.testing.assert_close(metric_values(logits, b, "prob"), metric_values(logits, b, "logprob").exp())
    want = []
    for row, t in enumerate(tokens):
        ans = (t + 1) % V
        want.append(logits[row, 1, ans] - max(logits[row, 1, j] for j in range(V) if j != ans))
    torch.testing.assert_close(metric_values(logits, b, "logit_margin"), torch.stack(want))


def test_registered_baselines_distances_and_vectors() -> None:
    from analysis.circuits.cud import DISTANCES, VECTORS, circuit_vectors
    from analysis.circuits.eap import BASELINES, baseline_outputs
    from analysis.circuits.options import (
        BASELINE_LABELS,
        DISTANCE_LABELS,
        VECTOR_LABELS,
        BaselineName,
        DistanceName,
        VectorKind,
    )

    assert BASELINES.names() == get_args(BaselineName) and BASELINES.labels() == BASELINE_LABELS
    assert DISTANCES.names() == get_args(DistanceName) and DISTANCES.labels() == DISTANCE_LABELS
    assert VECTORS.names() == get_args(VectorKind) and VECTORS.labels() == VECTOR_LABELS
    m = _toy()
    g = Graph.of(m)
    b = _toy_batch([1, 2])
    for name, run in BASELINES.items():
        out = baseline_outputs(m, g, b, name, corrupted=_toy_batch([3, 4]).tokens if run.needs_corrupted else None,
                               reference=_toy_batch([0, 5]) if run.needs_reference else None)
        assert out.shape == (2, b.tokens.shape[1], len(g.upstream), m.cfg.d_model)
    assert not baseline_outputs(m, g, b, "zero")[:, :, 0].any()  # the input node's baseline: zero embeddings
    easy, hard = np.array([1.0, 1, 0, 0]), np.array([0.0, 0, 1, 1])
    for name in DISTANCES:
        assert distance(easy, easy, name)[0] == pytest.approx(0.0) and distance(hard, easy, name)[0] > 0
        assert cud(hard, easy, hard, name)[0] == pytest.approx(1.0)
    scores = np.array([[0.5, -2.0, 0.1, 3.0]])
    for name in VECTORS:
        assert circuit_vectors(scores, [[1, 3]], name)[0, 0] == 0


def test_unknown_choices_name_the_choices(small_study: Any) -> None:
    from analysis.circuits.cud import circuit_vectors
    from analysis.circuits.eap import baseline_outputs
    from analysis.circuits.options import CUDOptions
    from analysis.circuits.runner import score_study

    m = _toy()
    b = _toy_batch([1])
    metric = r"unknown metric 'logit_diff' \(expected one of prob, logprob, logit_margin\)"
    with pytest.raises(AnalysisInputError, match=metric):
        EAPOptions(metric="logit_diff")
    with pytest.raises(AnalysisInputError, match=metric):
        metric_values(m(b.tokens), b, "logit_diff")
    baseline = r"unknown baseline 'noise' \(expected one of zero, mean, corrupted\)"
    with pytest.raises(AnalysisInputError, match=baseline):
        EAPOptions(baseline="noise")
    with pytest.raises(AnalysisInputError, match=baseline):
        baseline_outputs(m, Graph.of(m), b, "noise")
    dist = r"unknown distance 'euclid' \(expected one of cosine, jaccard, hamming\)"
    with pytest.raises(AnalysisInputError, match=dist):
        distance(np.ones(2), np.ones(2), "euclid")
    with pytest.raises(AnalysisInputError, match=dist):
        CUDOptions(distance="euclid").validated()  # type: ignore[arg-type]
    with pytest.raises(AnalysisInputError, match=dist):
        score_study(small_study, distance="euclid")  # type: ignore[arg-type]
    with pytest.raises(AnalysisInputError, match=r"expected one of binary, weighted"):
        circuit_vectors(np.ones((1, 2)), [[0]], "dense")
    with pytest.raises(AnalysisInputError, match="CUDOptions"):
        score_study(small_study, EAPOptions())  # type: ignore[arg-type]
    for bad in (CUDOptions(top_n=0), CUDOptions(quantile=0.7), CUDOptions(folds=1)):
        with pytest.raises(AnalysisInputError):
            bad.validated()
    with pytest.raises(SystemExit):  # the CLI's choices are the registry's
        _parser().parse_args(["circuit", "study", "--sample", "x", "--metric", "logit_diff"])


def test_results_round_trip() -> None:
    from analysis.circuits.result import CircuitResult, CUDReport, Faithfulness

    c = CircuitResult("original", "s1", ["input", "logits"], [{"src": "input", "dst": "logits", "score": 0.5}], [0],
                      {"faithfulness": 1.0}, {"n_edges": 1}, {"metric": "logprob", "top_n": 1})
    assert CircuitResult.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    r = CUDReport(["s1", "s2"], [0.2, 0.8], [0.1, 0.9], [-1, 1], "cosine", {"n": 2}, {"all": {"n": 2}},
                  {"top_n": 75}, {"easy": [1.0, 0.0], "hard": [0.0, 1.0]})
    assert CUDReport.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    f = Faithfulness([1.0], [0.5], [0.0], [0.5], [None])
    assert Faithfulness.from_dict(f.to_dict()) == f


def test_circuits_do_not_import_tracing() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "analysis" / "circuits"
    for path in root.glob("*.py"):
        assert "analysis.tracing" not in path.read_text(), path.name


def _parser() -> argparse.ArgumentParser:
    from analysis.circuits.cli import add_parser

    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="verb", required=True)

    def verb(parent: Any, name: str, fn: Callable[[argparse.Namespace], None], help_: str) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_)
        sp.add_argument("--json", action="store_true")
        sp.set_defaults(fn=fn)
        return sp

    add_parser(sub, verb)
    return p


def test_cli_circuit_and_score(small_study: Any, capsys: pytest.CaptureFixture[str]) -> None:
    p = _parser()
    sid = small_study.forget[0].id
    args = p.parse_args(["circuit", str(small_study.root), "--sample", sid, "--top", "20", "--json"])
    args.fn(args)
    out = json.loads(capsys.readouterr().out)
    assert {"nodes", "edges", "circuit", "faithfulness", "stats"} <= set(out)
    assert len(out["circuit"]) == 20 and out["edges"][0].keys() == {"src", "dst", "score"}
    args = p.parse_args(["score", str(small_study.root), "--distance", "jaccard", "--json"])
    args.fn(args)
    out = json.loads(capsys.readouterr().out)
    assert len(out["samples"]) == len(small_study.forget)
    assert all(0 <= s["cud"] <= 1 for s in out["samples"])
    assert set(out["validation"]["baselines"]) == {"original_loss", "exposures"}
    assert {"spearman", "auroc"} <= set(out["validation"])
    with pytest.raises(WorkbenchError):
        args = p.parse_args(["circuit", str(small_study.root), "--sample", "nope", "--json"])
        args.fn(args)
    # stored: a second run recomputes nothing
    from analysis.circuits.options import STORE_KIND

    assert dict(small_study.store.kinds())[STORE_KIND] >= len(small_study.forget)


@pytest.fixture
def app_page(small_study: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    import sys
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(small_study.root))
    views = Path(__file__).resolve().parent.parent / "app" / "views"
    return lambda name: AppTest.from_file(str(views / name), default_timeout=300)


def test_circuits_page(app_page: Callable[[str], Any], small_study: Any) -> None:
    at = app_page("circuits.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Circuits"
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # original and the first unlearning method side by side, and their faithfulness
    bars = json.loads(charts[2].proto.spec)["data"]
    assert sorted(x for t in bars for x in t["x"]) == sorted(["original", at.selectbox(key="circ_model").value])
    assert at.selectbox(key="circ_model").value != small_study.manifest.retrain  # an unlearning method by default
    assert len(at.dataframe) == 3  # two statistics tables and the diff
    stats = at.dataframe[0].value
    assert "n edges" in set(stats["statistic"]) and stats.loc[stats["statistic"] == "n edges", "value"].item() == "75"
    at.slider(key="circ_top").set_value(20).run()
    assert not at.exception and not at.error
    assert at.dataframe[0].value.loc[at.dataframe[0].value["statistic"] == "n edges", "value"].item() == "20"
    at = app_page("circuits.py")
    at.query_params["sample"] = "ghost"
    at.run()
    assert not at.exception and any("ghost" in e.value for e in at.error)


def test_difficulty_page(app_page: Callable[[str], Any], small_study: Any) -> None:
    at = app_page("difficulty.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Difficulty"
    # histogram, scatter, two anchor circuits, signature
    assert len(at.get("plotly_chart")) == 5
    table = at.dataframe[0].value
    assert len(table) == len(small_study.forget) and {"id", "cud", "observed", "label"} <= set(table.columns)
    assert table["cud"].between(0, 1).all()
    at.selectbox(key="cud_dist").set_value("jaccard").run()
    assert not at.exception and not at.error


def test_corrupted_baseline_is_tracings_token_replacement(organism: Any, small_study: Any) -> None:
    from analysis.circuits.runner import sample_edge_scores, subject_replaced
    from analysis.scoring import make_batch
    from analysis.subjects import SubjectPool, subject_input
    from analysis.tracing import TraceOptions, get_corruption

    ss = small_study.forget[:3]
    pool = SubjectPool.from_samples(organism.tokenizer, small_study.samples())
    batch = make_batch(organism, [s.prompt for s in ss], [s.answer for s in ss])
    corrupted = subject_replaced(organism, ss, batch, pool, seed=4)
    for row, s in enumerate(ss):
        inp = subject_input(organism, s)
        want = get_corruption("str").corrupt(organism, inp, pool, TraceOptions(corruption="str", seed=4)).tokens[0]
        assert corrupted[row, :len(inp.ids)].tolist() == want.tolist()
        assert corrupted[row, len(inp.ids):].tolist() == batch.tokens[row, len(inp.ids):].tolist()  # padding
    opts = EAPOptions(baseline="corrupted", steps=2, seed=4)
    got = sample_edge_scores(small_study, "original", [s.id for s in ss], opts)
    direct = edge_scores(organism.model, batch, opts, corrupted=corrupted)
    for row, s in enumerate(ss):
        np.testing.assert_allclose(got[s.id], direct[row], rtol=1e-5, atol=1e-9)
    no_subject = next(s for s in small_study.samples() if not s.subject)
    with pytest.raises(AnalysisInputError, match="no subject"):
        sample_edge_scores(small_study, "original", [no_subject.id], opts)


def test_corrupted_baseline_replaces_the_subject_with_one_answering_differently(organism: Any,
                                                                                small_study: Any) -> None:
    """The corrupted EAP-IG baseline puts in each sample's place a subject whose answer to the sample's
    relation (read from the study's samples) is not the sample's: a same-answer subject corrupts nothing."""
    from analysis.circuits.runner import subject_replaced
    from analysis.scoring import make_batch
    from analysis.subjects import subject_input

    facts: dict[tuple[tuple[int, ...], str], set[str]] = {}
    for s in small_study.samples():
        if s.subject:
            facts.setdefault((subject_input(organism, s).subject_ids, s.relation), set()).add(s.answer.strip())
    ss = small_study.forget + small_study.retain[::4]
    batch = make_batch(organism, [s.prompt for s in ss], [s.answer for s in ss])
    for seed in range(3):
        corrupted = subject_replaced(organism, ss, batch, small_study.subject_pool(), seed=seed)
        for row, s in enumerate(ss):
            inp = subject_input(organism, s)
            s0, s1 = inp.subject_range
            repl = tuple(corrupted[row, s0:s1].tolist())
            assert repl != inp.subject_ids
            answers = facts.get((repl, s.relation))
            assert answers and s.answer.strip() not in answers, (seed, s.id, answers)
