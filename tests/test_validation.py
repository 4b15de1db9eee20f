"""The meta-evaluation (analysis.validation): AUROC known answers and its bootstrap interval, the quantised
variant's known error bound, robustness known answers, one validate run on the small study (JSON shape, store,
variants never members), the CLI and the Validation page."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.errors import AnalysisInputError
from analysis.validation.auroc import auroc, auroc_ci, auroc_naive, auroc_pairs
from analysis.validation.options import READING_KIND, ValidationOptions, parse_signals
from analysis.validation.robustness import (
    harmonic,
    quant_scale,
    quantise_tensor,
    quantise_weights,
    robustness,
)
from tests.conftest import VALIDATED_SIGNALS as SIGNALS  # the one validate run's (cheap) signals

pytestmark = pytest.mark.usefixtures("one_thread")

HOME = str(Path(__file__).resolve().parent.parent / "app" / "Home.py")


# ---- AUROC ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("present", "absent", "expected"), [
    ([0.9, 0.8, 0.7], [0.1, 0.2, 0.3], 1.0),  # perfect separation
    ([0.1, 0.2, 0.3], [0.9, 0.8, 0.7], 0.0),  # reversed
    ([0.5, 0.5, 0.5], [0.5, 0.5], 0.5),  # identical
    # by hand: pairs (P, N) with P > N: 3 > 1, 3 > 2, 2 > 1 -> 3; ties: (2, 2) -> 0.5; 1 vs 1 tie -> 0.5;
    # 1 < 2, 2 < 4, 3 < 4, 1 < 4 -> 0. (3 + 0.5 + 0.5) / 9 = 4 / 9
    ([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], 4 / 9),
])
def test_auroc_known_answers(present, absent, expected):
    assert auroc(present, absent) == pytest.approx(expected, abs=1e-12)
    assert auroc_naive(present, absent) == pytest.approx(expected, abs=1e-12)
    assert float(auroc_pairs(np.array(present), np.array(absent))) == pytest.approx(expected, abs=1e-12)


def test_auroc_equals_the_pairwise_definition_and_drops_undefined():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.integers(0, 4, size=rng.integers(1, 7)).astype(float)
        n = rng.integers(0, 4, size=rng.integers(1, 7)).astype(float)
        assert auroc(p.tolist(), n.tolist()) == pytest.approx(auroc_naive(p.tolist(), n.tolist()), abs=1e-12)
    assert auroc([1.0, None, float("nan")], [0.0]) == 1.0
    assert auroc([None], [0.0]) is None


def test_auroc_interval_contains_the_estimate_and_is_seeded():
    p, n = [0.9, 0.4, 0.8, 0.7, 0.55], [0.1, 0.5, 0.3, 0.6, 0.2]
    a = auroc_ci(p, n, n_resamples=500, seed=3)
    assert a.auroc == pytest.approx(auroc_naive(p, n))
    assert a.ci_low is not None and a.ci_high is not None
    assert 0.0 <= a.ci_low <= a.auroc <= a.ci_high <= 1.0
    assert a.ci_low < a.ci_high  # not a separation every resample keeps
    assert (a.n_present, a.n_absent) == (5, 5)
    assert auroc_ci(p, n, n_resamples=500, seed=3) == a
    assert auroc_ci(p, n, n_resamples=500, seed=4) != a  # the seed drives the resampling
    perfect = auroc_ci([0.9, 0.8, 0.7], [0.1, 0.2], n_resamples=200)
    assert (perfect.auroc, perfect.ci_low, perfect.ci_high) == (1.0, 1.0, 1.0)  # every resample separates
    assert auroc_ci([0.9], [0.1, 0.2]).ci_low is None  # one member on a side: no interval


# ---- robustness ------------------------------------------------------------------------------------------------
def test_quantised_weights_move_at_most_half_a_step(organism):
    model = organism.model
    q = quantise_weights(model, bits=8)
    n_matrices = 0
    for (name, w), (_, wq) in zip(model.named_parameters(), q.named_parameters(), strict=True):
        if w.ndim >= 2:
            n_matrices += 1
            step = quant_scale(w, 8)
            err = (wq - w).abs().max().item()
            # half a step, plus float32 rounding of the dequantised value
            assert err <= step / 2 + 4 * torch.finfo(torch.float32).eps * w.abs().max().item(), name
            levels = torch.unique(torch.round(wq.double() / step))
            assert levels.abs().max() <= 127 and len(levels) <= 255, name
        else:
            assert torch.equal(w, wq), f"{name} is not a weight matrix and must stay unchanged"
    assert n_matrices > 0
    assert any(not torch.equal(w, wq) for w, wq in zip(model.parameters(), q.parameters(), strict=True))
    assert all(p.data_ptr() != pq.data_ptr() for p, pq in zip(model.parameters(), q.parameters(), strict=True))


def test_quantise_tensor_known_answer():
    w = torch.tensor([[-1.0, 0.5], [0.26, 0.0]])
    # scale = 1 / 127; 0.5 * 127 = 63.5 -> 64 (round half to even gives 64); 0.26 * 127 = 33.02 -> 33
    expected = torch.tensor([[-127.0, 64.0], [33.0, 0.0]]) / 127
    assert torch.allclose(quantise_tensor(w, 8), expected, atol=1e-7)
    assert torch.equal(quantise_tensor(torch.zeros(2, 2), 8), torch.zeros(2, 2))


def test_robustness_known_answer():
    member = {"a": 0.9, "b": 0.1, "c": None}
    ft = {"a": 0.7, "b": 0.2, "c": 0.5}  # shifts 0.2, 0.1 -> R = 0.85 (c undefined on the member: left out)
    q = {"a": 0.9, "b": 0.1, "c": 0.4}  # no shift -> Q = 1
    rob = robustness(member, ft, q)
    assert rob.r == pytest.approx(0.85) and rob.q == pytest.approx(1.0)
    assert rob.h == pytest.approx(2 * 0.85 / 1.85)
    assert (rob.n_ft, rob.n_q) == (2, 2)
    assert harmonic(-0.2, 0.9) == 0.0 and harmonic(None, 0.5) is None


def test_placement_known_answers():
    from analysis.validation.result import place

    p, n = [0.8, 1.0], [0.1, 0.2]
    assert place(0.9, p, n) == {"score": 0.9, "above_absent": 1.0, "above_present": 0.5, "reads_as": "present"}
    assert place(0.5, p, n)["reads_as"] == "between"
    assert place(0.15, p, n) == {"score": 0.15, "above_absent": 0.5, "above_present": 0.0, "reads_as": "absent"}
    assert place(0.5, [0.3, 0.9], [0.1, 0.6])["reads_as"] == "overlap"
    assert place(None, p, n)["reads_as"] == "undefined"


# ---- options -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("opts", "words"), [
    (ValidationOptions(n_resamples=0), "n_resamples"),
    (ValidationOptions(quant_bits=1), "quant_bits"),
    (ValidationOptions(finetune_steps=0), "finetune_steps"),
    (ValidationOptions(finetune_lr=float("nan")), "finetune_lr"),
    (ValidationOptions(finetune_split="forget"), "finetune_split"),  # type: ignore[arg-type]
    (ValidationOptions(signals=()), "at least one signal"),
    (ValidationOptions(seed=-1), "seed"),
])
def test_bad_options(opts, words):
    with pytest.raises(AnalysisInputError, match=words):
        opts.validated()


def test_parse_signals():
    assert parse_signals(" a, b ,a") == ("a", "b")
    assert parse_signals("") is None
    with pytest.raises(AnalysisInputError, match="empty name"):
        parse_signals("a,,b")


# ---- one run on the small study (the `validated` fixture lives in tests/conftest.py) -------------------------


def test_validate_json_shape(validated):
    from analysis.signals import SIGNALS as REGISTRY
    from analysis.validation.runner import validation_members

    study, _, result = validated
    d = json.loads(json.dumps(result.to_dict()))
    assert [s["signal"] for s in d["signals"]] == list(SIGNALS)
    for s in d["signals"]:
        assert {"signal", "auroc", "ci_low", "ci_high", "n_present", "n_absent", "robustness_r", "robustness_q",
                "robustness_h"} <= set(s)
        assert s["signal"] in REGISTRY
    members = validation_members(study)
    assert [m["name"] for m in d["members"]] == [m.name for m in members]
    zoo = [m for m in d["members"] if m["status"] != "unknown"]
    assert zoo and all(m["status"] in ("present", "absent") for m in zoo)
    unknown = {m["name"] for m in d["members"] if m["status"] == "unknown"}
    assert unknown == {n for n, e in study.manifest.models.items() if e.role == "unlearned"} - {m["name"] for m in zoo}
    for m in d["members"]:
        assert set(m["scores"]) == set(SIGNALS)
    rec = result.signal("output_forget_acc")
    assert rec.auroc is not None and 0.0 <= rec.auroc <= 1.0  # computed; near 0.5 by design, not asserted
    assert (rec.n_present, rec.n_absent) == (len(result.by_status("present")), len(result.by_status("absent")))
    if rec.ci_low is not None:
        assert rec.ci_low <= rec.auroc <= rec.ci_high
    # the member scores are the signal's own readings: output accuracy is the evaluation's forget accuracy
    from analysis.evaluation import evaluate_study

    for m in result.members:
        assert m.scores["output_forget_acc"] == pytest.approx(evaluate_study(study, [m.name])[m.name].forget_acc)
    assert result.statement() and set(result.placement()) == set(SIGNALS)


def test_variants_are_study_models_never_members(validated):
    from analysis.validation.robustness import VARIANTS_KEY
    from analysis.validation.runner import validation_members

    study, opts, result = validated
    recorded = study.manifest.extra[VARIANTS_KEY]
    zoo = [m for m in result.members if m.status != "unknown"]
    assert len(recorded) == 2 * len(zoo)
    for m in zoo:
        assert set(m.variants) == {"quantised", "finetuned"}
        for kind, name in m.variants.items():
            assert recorded[name]["of"] == m.name and recorded[name]["kind"] == kind
            assert name in study.manifest.models and study.load(name).n_layers == study.load(m.name).n_layers
            assert set(m.variant_scores[kind]) == set(SIGNALS)
    assert not set(recorded) & {m.name for m in validation_members(study)}
    # the saved quantised variant is the member's weights quantised: within half a step, biases untouched
    member = zoo[0]
    orig = dict(study.load(member.name).model.named_parameters())
    for name, wq in study.load(member.variants["quantised"]).model.named_parameters():
        w = orig[name]
        if w.ndim >= 2:
            bound = quant_scale(w, opts.quant_bits) / 2 + 4 * torch.finfo(torch.float32).eps * w.abs().max().item()
            assert (wq - w).abs().max().item() <= bound, name
        else:
            assert torch.equal(w, wq), name
    tuned = dict(study.load(member.variants["finetuned"]).model.named_parameters())
    assert any(not torch.equal(orig[n], t) for n, t in tuned.items())  # the fine-tune did train
    rec = result.signal("output_forget_acc")
    assert rec.robustness_r is not None and rec.robustness_q is not None and rec.robustness_h is not None
    shifts = [abs(m.variant_scores["quantised"]["output_forget_acc"] - m.scores["output_forget_acc"]) for m in zoo]
    assert rec.robustness_q == pytest.approx(1 - float(np.mean(shifts)))


def test_rerun_is_instant_and_resumable(validated, monkeypatch):
    from analysis.signals import SIGNALS as REGISTRY
    from analysis.validation import runner

    study, opts, result = validated
    rows = dict(study.store.kinds())[READING_KIND]
    n_models = len(result.members) + sum(len(m.variants) for m in result.members)
    assert rows >= len(SIGNALS) * n_models  # one stored reading per (signal, model)

    def boom(study, model):
        raise AssertionError("a stored result must not be recomputed")

    monkeypatch.setitem(REGISTRY._members, "output_forget_acc", boom)
    again = runner.validate(study, opts)
    assert again.to_dict() == result.to_dict()
    assert runner.stored_validation(study, opts).to_dict() == result.to_dict()
    # the whole result gone, the readings kept: reassembled from the readings alone (nothing recomputed)
    from analysis.validation.options import STORE_KIND

    study.store.delete(STORE_KIND)
    assert runner.stored_validation(study, opts) is None
    assert runner.validate(study, opts).to_dict() == result.to_dict()


def test_unknown_signal_is_an_error(validated):
    from analysis.validation.runner import validate

    study, _, _ = validated
    with pytest.raises(AnalysisInputError, match="unknown signal 'nope'"):
        validate(study, ValidationOptions(signals=("nope",), robustness=False))


def test_cli_validate(validated, capsys):
    from analysis.cli import main

    study, opts, result = validated
    args = ["validate", str(study.root), "--signals", ",".join(SIGNALS), "--resamples", str(opts.n_resamples),
            "--finetune-steps", str(opts.finetune_steps)]
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["signals"] == json.loads(json.dumps(result.to_dict()))["signals"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "95% interval" in out and "output_forget_acc" in out
    assert main(["validate", str(study.root), "--signals", "nope", "--no-robustness"]) == 2
    err = capsys.readouterr().err
    assert "unknown signal 'nope'" in err and "Traceback" not in err


def test_page_renders(validated, monkeypatch):
    from streamlit.testing.v1 import AppTest

    study, _, _ = validated
    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(study.root))
    at = AppTest.from_file(HOME, default_timeout=60)
    at.switch_page("views/validation.py")
    at.session_state["val_signals"] = list(SIGNALS)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Validation"
    assert len(at.get("plotly_chart")) >= 1 + 1 + len(SIGNALS) + 1  # AUROC, legend, strips, robustness
    table = at.dataframe[0].value
    assert list(table["signal"]).count("output_forget_acc") == 1
    assert any("separate" in m.value for m in at.markdown)
    at.multiselect(key="val_signals").set_value([]).run()  # bad input: an error, not a traceback
    assert not at.exception
    assert any("at least one signal" in e.value for e in at.error)
