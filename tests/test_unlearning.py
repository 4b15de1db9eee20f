"""Unlearning methods on a small organism (40 people, forget = the 16 facts of 4 people)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.data.corpus import Corpus, build_corpus
from analysis.errors import AnalysisInputError
from analysis.organism import OrganismConfig, train_organism
from analysis.organism.train import evaluate_recall
from analysis.scoring import score_answers
from analysis.unlearning import UNLEARNING_METHODS, UnlearnConfig, observed_difficulty, run_unlearning
from analysis.unlearning.base import UnlearnResult

N_PEOPLE = 40
ORGANISM_STEPS = 200  # >= 99% recall on 40 people (checked in the fixture); 300 is the study default
UNLEARN_STEPS = 40  # every gradient method drops forget accuracy to <= ~0.3 in 40 steps at its default lr
RETRAIN_STEPS = 100  # reaches >= 99% recall of the retained facts on 40 people
GRADIENT_METHODS = [m for m in UNLEARNING_METHODS.names() if m != "retrain"]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return build_corpus(seed=0, n_people=N_PEOPLE)


@pytest.fixture(scope="module")
def small(corpus):
    handle, _ = train_organism(OrganismConfig(seed=0, n_people=N_PEOPLE, steps=ORGANISM_STEPS), corpus=corpus)
    rec = evaluate_recall(handle, corpus)
    assert rec["recall"] >= 0.99, rec
    snapshot = {k: v.clone() for k, v in handle.model.state_dict().items()}
    return handle, snapshot


@pytest.fixture(scope="module")
def runs(small, corpus):
    """Each gradient method run once (lazily) at test size, shared by the tests below."""
    cache: dict[str, tuple] = {}

    def get(method: str):
        if method not in cache:
            cache[method] = run_unlearning(
                small[0],
                method,
                corpus.split("forget"),
                corpus.split("retain"),
                UnlearnConfig(seed=0, steps=UNLEARN_STEPS),
                corpus=corpus,
            )
        return cache[method]

    return get


def forget_accuracy(handle, corpus: Corpus) -> float:
    f = corpus.split("forget")
    return float(score_answers(handle, [s.prompt for s in f], [s.answer for s in f]).correct.mean())


def assert_original_untouched(small) -> None:
    handle, snapshot = small
    for k, v in handle.model.state_dict().items():
        assert torch.equal(v, snapshot[k]), f"run_unlearning modified the original's {k}"


def test_registry_lists_every_method():
    assert set(UNLEARNING_METHODS) == {
        "grad_ascent",
        "grad_diff",
        "npo",
        "simnpo",
        "rmu",
        "readout_suppression",
        "retrain",
    }


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_method_lowers_forget_accuracy(method, small, corpus, runs):
    before = forget_accuracy(small[0], corpus)
    handle, result = runs(method)
    after = forget_accuracy(handle, corpus)
    assert before >= 0.99 and after <= 0.5, (before, after)
    assert result.forget_accuracy == pytest.approx(after)
    assert handle.model is not small[0].model and handle.role in ("unlearned", "control")
    assert_original_untouched(small)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_trajectory_shape_and_range(method, small, corpus, runs):
    _, result = runs(method)
    forget = corpus.split("forget")
    assert isinstance(result, UnlearnResult) and result.method == method
    assert result.trajectory.shape == (UNLEARN_STEPS + 1, len(forget))
    assert result.forget_ids == [s.id for s in forget]
    assert np.all((result.trajectory >= 0) & (result.trajectory <= 1))
    # row 0 is the original model, scored the one way every analysis scores answers
    orig = score_answers(small[0], [s.prompt for s in forget], [s.answer for s in forget]).prob
    np.testing.assert_allclose(result.trajectory[0], orig, rtol=1e-4, atol=1e-6)
    assert result.trajectory[-1].mean() < result.trajectory[0].mean()
    assert len(result.losses) == UNLEARN_STEPS and result.seconds > 0
    assert set(result.difficulty) == {"final_loss", "auc", "auc_after"}
    assert result.difficulty["auc"].shape == (len(forget),)


def test_readout_suppression_only_changes_the_unembedding(small, runs):
    handle, result = runs("readout_suppression")
    changed = set()
    orig = small[0].model.state_dict()
    for k, v in handle.model.state_dict().items():
        if not torch.equal(v, orig[k]):
            changed.add(k)
    assert changed and changed <= {"unembed.W_U", "unembed.b_U"}, changed
    assert "unembed.W_U" in changed
    assert result.extra["trained_parameters"] == ["unembed.W_U", "unembed.b_U"]


def test_rmu_updates_only_mlps_up_to_its_layer(small, runs):
    handle, result = runs("rmu")
    layer = result.extra["rmu_layer"]
    assert layer == small[0].n_layers // 2
    orig = small[0].model.state_dict()
    changed = {k for k, v in handle.model.state_dict().items() if not torch.equal(v, orig[k])}
    allowed = {
        f"blocks.{i}.mlp.{p}"
        for i in result.extra["rmu_updated_layers"]
        for p in ("W_in", "b_in", "W_out", "b_out")
    }
    assert changed and changed <= allowed, changed - allowed


def test_rmu_steers_the_resid_post_hook(small, runs):
    """RMU's activation (a forward stopped after block l) is exactly the one cached at hooks.resid_post(l)."""
    from analysis import hooks
    from analysis.unlearning.rmu import resid_post_activation

    _, result = runs("rmu")
    layer = result.extra["rmu_layer"]
    assert result.extra["rmu_hook"] == hooks.resid_post(layer) == f"blocks.{layer}.hook_resid_post"
    model = small[0].model
    tokens = torch.tensor([[1, 5, 9, 12, 7]], device=small[0].device)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hooks.resid_post(layer))
        act = resid_post_activation(model, tokens, layer)
    torch.testing.assert_close(act, cache[hooks.resid_post(layer)].float(), rtol=0, atol=0)


def test_same_seed_gives_identical_weights(small, corpus):
    forget, retain = corpus.split("forget"), corpus.split("retain")
    cfg = UnlearnConfig(seed=3, steps=5)
    a, ra = run_unlearning(small[0], "npo", forget, retain, cfg)
    b, rb = run_unlearning(small[0], "npo", forget, retain, cfg)
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(ra.trajectory, rb.trajectory)
    c, _ = run_unlearning(small[0], "npo", forget, retain, UnlearnConfig(seed=4, steps=5))
    assert c.fingerprint != a.fingerprint  # another seed draws other batches


def test_retrain_never_sees_a_forget_fact(small, corpus, monkeypatch):
    requested: list[frozenset[str]] = []
    real = Corpus.training_pairs

    def spy(self: Corpus, exclude_ids: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, str]]:
        requested.append(frozenset(exclude_ids))
        return real(self, exclude_ids)

    monkeypatch.setattr(Corpus, "training_pairs", spy)
    forget, retain = corpus.split("forget"), corpus.split("retain")
    handle, result = run_unlearning(
        small[0], "retrain", forget, retain, UnlearnConfig(seed=0, retrain_steps=RETRAIN_STEPS), corpus=corpus
    )
    forget_ids = {s.id for s in forget}
    assert requested and all(
        ex >= forget_ids for ex in requested
    )  # every call the trainer made excluded them
    pairs = result.extra["training_pairs"]
    forget_pairs = {(p, s.answer) for s in forget for p in s.metadata["train_prompts"]}
    assert pairs and not forget_pairs & set(pairs)
    forget_people = {s.subject for s in forget}
    assert not any(person in prompt for prompt, _ in pairs for person in forget_people)
    assert {(s.prompt, s.answer) for s in retain} <= set(pairs)  # every retained fact is still trained
    # the retrained model knows the retained facts but not the forgotten ones
    rec = evaluate_recall(handle, corpus, exclude=forget_ids)
    assert rec["recall"] >= 0.95 and rec["forget_recall"] < forget_accuracy(small[0], corpus) - 0.5
    assert result.trajectory.shape == (2, len(forget)) and handle.role == "control"
    assert_original_untouched(small)


def test_retrain_needs_the_corpus(small, corpus):
    with pytest.raises(AnalysisInputError, match="corpus"):
        run_unlearning(small[0], "retrain", corpus.split("forget"), corpus.split("retain"), UnlearnConfig())


def test_observed_difficulty_by_hand():
    traj = np.array([[0.5, 1.0, 0.8], [0.25, 0.5, 0.8], [0.125, 0.0, 0.8]])
    d = observed_difficulty(traj)
    np.testing.assert_allclose(d["final_loss"][[0, 2]], [np.log(8.0), -np.log(0.8)])
    assert np.isfinite(d["final_loss"][1]) and d["final_loss"][1] > 700  # p underflowed to 0: clipped
    np.testing.assert_allclose(d["auc"], [0.875 / 3, 0.5, 0.8])
    np.testing.assert_allclose(d["auc_after"], [0.375 / 2, 0.25, 0.8])  # row 0 (the original) left out
    with pytest.raises(AnalysisInputError):
        observed_difficulty(np.array([[1.5]]))


def test_unknown_method_names_the_known_ones(small, corpus):
    with pytest.raises(AnalysisInputError, match="unknown unlearning method 'nope'") as err:
        run_unlearning(small[0], "nope", corpus.split("forget"), corpus.split("retain"))
    for name in UNLEARNING_METHODS.names():
        assert name in str(err.value)


def test_empty_forget_set_is_an_error(small, corpus):
    with pytest.raises(AnalysisInputError, match="forget set is empty"):
        run_unlearning(small[0], "npo", [], corpus.split("retain"))


def test_bad_inputs_are_clear_errors(small, corpus):
    forget, retain = corpus.split("forget"), corpus.split("retain")
    with pytest.raises(AnalysisInputError, match="retain set"):
        run_unlearning(small[0], "grad_diff", forget, [])
    with pytest.raises(AnalysisInputError, match="both the forget and retain"):
        run_unlearning(small[0], "npo", forget, retain + forget[:1])
    with pytest.raises(AnalysisInputError, match="steps"):
        run_unlearning(small[0], "npo", forget, retain, UnlearnConfig(steps=0))
    with pytest.raises(AnalysisInputError, match="rmu_layer"):
        run_unlearning(small[0], "rmu", forget, retain, UnlearnConfig(steps=1, rmu_layer=99))
