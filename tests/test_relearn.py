"""The relearning attack: known answers (no step = the model's own accuracy; attacking the original recovers all
it knew), the recovered share against the retrain baseline on hand-computed cases (the arithmetic, and the runner
with a stub attack), the study's model files untouched, the same seed giving the same numbers, the batched attack
against per-sample gradient accumulation, bad inputs, the store, the signal, the CLI and the page section."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from analysis.cli import main
from analysis.errors import AnalysisInputError
from analysis.models.handle import fingerprint_dir
from analysis.relearn import (
    STORE_KIND,
    AttackRun,
    RelearnOptions,
    attack_model,
    forget_folds,
    pooled_share,
    recovered_share,
    relearn_attack,
    relearn_cached,
    relearn_report,
    retain_subset,
)
from analysis.scoring import score_answers
from analysis.signals import SIGNALS
from analysis.store import ResultStore
from analysis.study import Study
from analysis.unlearning.base import weights_fingerprint
from benchmarks.bench_relearn import naive_attack

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = RelearnOptions(steps=3, retain_rows=16)  # a short attack: these tests check the plumbing and the arithmetic


@pytest.fixture
def study(small_study) -> Study:
    """The small study with a store of its own (stub results stored here never reach other tests)."""
    s = Study.open(small_study.root)
    path = s.root.parent / f"relearn-{id(s)}.sqlite"
    s.store = ResultStore(path, content=s)
    yield s
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def test_recovered_share_hand_computed():
    #        attacked, attacked retrain, original, retrain before
    rows = [(1, 0, 1, 0),  # recovered beyond the baseline: 1
            (1, 1, 1, 0),  # the attack teaches the retrain control too: 0
            (0, 0, 1, 0),  # not recovered: 0
            (1, 0, 0, 0),  # the original never knew it: undefined
            (1, 0, 1, 1),  # the retrain control already answers it: undefined
            (0, 1, 1, 0)]  # below the baseline: clipped to 0
    a, ar, b, rb = (list(c) for c in zip(*rows, strict=True))
    share = recovered_share(a, ar, b, rb)
    assert share[:3].tolist() == [1.0, 0.0, 0.0] and share[5] == 0.0
    assert math.isnan(share[3]) and math.isnan(share[4])
    soft = recovered_share([0.9], [0.3], [0.8], [0.2])  # the same ratio on accuracies in [0, 1]
    assert soft[0] == pytest.approx(1.0) and recovered_share([0.5], [0.3], [0.8], [0.2])[0] == pytest.approx(1 / 3)
    assert pooled_share(a, ar, b, rb) == pytest.approx((4 / 6 - 2 / 6) / (5 / 6 - 1 / 6))
    assert pooled_share([1], [0], [0], [0]) is None
    with pytest.raises(AnalysisInputError, match="shapes"):
        recovered_share([1, 0], [1], [1], [1])


def test_folds_and_subset_are_seeded_and_cover_every_sample():
    ids = [f"s{i}" for i in range(9)]
    (a, b), (c, d) = forget_folds(ids, seed=4)
    assert (a, b) == (d, c) and len(a) == 4 and len(b) == 5 and sorted(a + b) == sorted(ids)
    assert forget_folds(ids, seed=4) == forget_folds(ids, seed=4) and forget_folds(ids, seed=5) != forget_folds(ids, 4)
    sub = retain_subset(ids, 3, seed=1)
    assert len(sub) == 3 and sub == retain_subset(ids, 3, seed=1) and sub == [i for i in ids if i in sub]
    assert retain_subset(ids, 50, seed=1) == ids
    with pytest.raises(AnalysisInputError, match="at least 2"):
        forget_folds(["one"], seed=0)


def test_zero_steps_is_the_models_own_accuracy(small_study):
    handle = small_study.load("npo")
    forget = small_study.forget
    run = relearn_attack(handle, [], forget, steps=0, lr=1e-4)
    own = score_answers(handle, [s.prompt for s in forget], [s.answer for s in forget])
    assert run.correct.shape == (1, len(forget)) and np.array_equal(run.correct[0], own.correct)
    np.testing.assert_allclose(run.logprob[0], own.logprob, atol=1e-6)


def test_same_seed_same_numbers_and_model_untouched(small_study):
    handle = small_study.load("rmu")
    before = (weights_fingerprint(handle.model), [p.requires_grad for p in handle.model.parameters()])
    files = fingerprint_dir(small_study.model_path("rmu"))
    (train, held), _ = forget_folds([s.id for s in small_study.forget], seed=0)
    by_id = {s.id: s for s in small_study.forget}
    args = ([by_id[i] for i in train], [by_id[i] for i in held], 4, 3e-4)
    first, second = relearn_attack(handle, *args, seed=7), relearn_attack(handle, *args, seed=7)
    assert np.array_equal(first.logprob, second.logprob) and first.losses == second.losses
    assert not np.array_equal(first.logprob[-1], first.logprob[0])  # it did train
    assert (weights_fingerprint(handle.model), [p.requires_grad for p in handle.model.parameters()]) == before
    assert fingerprint_dir(small_study.model_path("rmu")) == files == small_study.fingerprint("rmu")


def test_batched_equals_per_sample_accumulation(small_study):
    handle = small_study.load("npo")
    forget = small_study.forget[:8]
    ours = relearn_attack(handle, forget[:4], forget[4:], 3, 1e-4)
    ref = naive_attack(handle, forget[:4], forget[4:], 3, 1e-4)
    assert np.array_equal(ours.correct, ref.correct)
    np.testing.assert_allclose(ours.logprob, ref.logprob, atol=1e-4)
    np.testing.assert_allclose(ours.losses, ref.losses, atol=1e-5)


def test_net_of_the_baseline_with_a_stub_attack(study, monkeypatch):
    """The runner's share is computed against the retrain control's attack: a stub attack makes every model's
    outcome a known function of the sample, and the result must match the formula by hand."""
    import analysis.relearn.runner as runner

    forget = [s.id for s in study.forget]
    ref_before = set(forget[:2])  # the retrain control answers these before any attack
    ref_after = set(forget[:2]) | set(forget[2:6])  # the attack teaches it these (a shared prior, say)
    model_after = set(forget[:12])

    def stub(handle, train, evaluate, steps, lr, seed=0, max_grad_norm=1.0) -> AttackRun:
        ids = [s.id for s in evaluate]
        after = ref_after if handle.name == "retrain" else model_after
        first = ref_before if handle.name == "retrain" else set()
        rows = np.array([[i in first for i in ids], *([[i in after for i in ids]] * steps)])
        return AttackRun(correct=rows, logprob=np.zeros(rows.shape), losses=[0.0] * steps)

    monkeypatch.setattr(runner, "relearn_attack", stub)
    original = score_answers(study.load("original"), [s.prompt for s in study.forget],
                             [s.answer for s in study.forget]).correct
    r = relearn_report(study, "npo", FAST)
    for variant in ("forget", "retain"):
        v = r.variants[variant]
        assert list(v.per_sample) == forget if variant == "retain" else sorted(v.per_sample) == sorted(forget)
        for i, orig in zip(forget, original, strict=True):
            den = int(orig) - (i in ref_before)
            want = None if den <= 0 else float(np.clip(((i in model_after) - (i in ref_after)) / den, 0, 1))
            assert v.per_sample[i] == want, (variant, i)
        defined = [x for x in v.per_sample.values() if x is not None]
        assert v.value == pytest.approx(np.mean(defined))
        assert v.accuracy["reference_before"] == pytest.approx(2 / len(forget))
        assert v.curve[0] == 0.0 and v.curve[-1] == pytest.approx(12 / len(forget))
    assert r.variants["forget"].value == pytest.approx(6 / 14)  # 6 of the 14 samples beyond the baseline


def test_original_recovers_what_it_knew_and_store(study, monkeypatch):
    r = relearn_report(study, "original", FAST)
    v = r.variants["forget"]
    assert v.accuracy["original"] == 1.0 and v.n_defined > 0
    assert v.value == 1.0  # a short attack keeps every fact; the retrain control never gets these back
    assert relearn_cached(study, "original", FAST)
    fp = study.fingerprint("original")
    assert len(study.store.get_many(STORE_KIND, [fp], {**FAST.validated().key(),
                                                       "study_samples": study.samples_digest()},
                                    ["forget:0", "forget:1", "retain"])) == 3
    import analysis.relearn.runner as runner

    monkeypatch.setattr(runner, "relearn_attack", lambda *a, **k: pytest.fail("recomputed a stored attack"))
    assert relearn_report(study, "original", FAST).to_dict() == r.to_dict()
    assert attack_model(study, "retrain", FAST)["retain"].eval == [s.id for s in study.forget]
    monkeypatch.setattr(runner, "relearn_report", lambda s, m, o=None: relearn_report(s, m, FAST))
    reading = SIGNALS.get("relearn")(study, "original")
    assert reading.signal == "relearn" and reading.value == 1.0
    assert reading.per_sample == v.per_sample and reading.details["retain_value"] == r.variants["retain"].value


@pytest.mark.parametrize(("field", "value", "match"), [
    ("steps", -1, "steps"), ("steps", 10_001, "steps"), ("lr", 0.0, "lr"), ("lr", float("nan"), "lr"),
    ("seed", -1, "seed"), ("retain_rows", 0, "retain_rows"), ("max_grad_norm", 0.0, "max_grad_norm")])
def test_bad_options(field, value, match):
    with pytest.raises(AnalysisInputError, match=match):
        RelearnOptions(**{field: value}).validated()


def test_no_retrain_control_is_an_error(study):
    study.manifest.retrain = None
    with pytest.raises(AnalysisInputError, match="retrain control"):
        relearn_report(study, "npo", FAST)
    assert not relearn_cached(study, "npo", FAST)


def test_cli(small_study, capsys):
    root = str(small_study.root)
    assert main(["relearn", root, "--model", "original", "--steps", "2", "--retain-rows", "8", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)["models"]["original"]
    assert obj["signal"]["signal"] == "relearn" and obj["signal"]["value"] == obj["variants"]["forget"]["value"]
    assert obj["options"]["steps"] == 2 and obj["reference"] == "retrain"
    assert main(["relearn", root, "--model", "original", "--steps", "2", "--retain-rows", "8"]) == 0
    assert "baseline retrain" in capsys.readouterr().out
    assert main(["relearn", root, "--model", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["relearn", root, "--lr", "0"])
    assert "--lr" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["relearn", "--help"])
    assert done.value.code == 0 and "--retain-rows" in capsys.readouterr().out


def _section_script() -> None:
    import os

    from analysis.study import Study
    from app.views.signal_sections_attack import relearn_section

    relearn_section(Study.open(os.environ["ERASURE_STUDY"]), "rmu")


def test_page_section(small_study, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(small_study.root))
    at = AppTest.from_function(_section_script, default_timeout=120).run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    at.number_input(key="relearn_steps").set_value(2).run()
    if any(b.key == "relearn_go" for b in at.button):
        at.button(key="relearn_go").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    r = relearn_report(small_study, "rmu", RelearnOptions(steps=2))
    metrics = [m.value for m in at.metric]
    assert metrics == [("-" if v.value is None else f"{v.value:.3f}") for v in r.variants.values()]
    assert len(at.get("plotly_chart")) == 1
