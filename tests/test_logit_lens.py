"""The logit lens through the original's readout: known answers (at the last layer the original's lens is its
own output probability, exactly; a model whose lower layers are the original's shows the original's values
there; a model that changed only its readout shows the original's values everywhere through the original's
readout), the batched engine against the naive per-(sample, layer, position) loop, bad inputs, the store, the
signal and the CLI. The page is tested with patching's (tests/test_patching.py: both sections)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.cli import main
from analysis.errors import AnalysisInputError, StudyError
from analysis.logit_lens import (
    QUANTITIES,
    STORE_KIND,
    LensOptions,
    LensResult,
    lens_cached,
    lens_result,
    lens_values,
)
from analysis.scoring import answer_token_logprobs, make_batch
from analysis.signals import SIGNALS
from benchmarks.bench_patching import naive_lens, pairs_of, perturbed_above

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5
FROZEN_BELOW = 2


@pytest.fixture(scope="module")
def forget_batch(small_study, organism):
    fs = small_study.forget
    return make_batch(organism, [s.prompt for s in fs], [s.answer for s in fs])


def test_last_layer_is_the_originals_own_output_exactly(organism, forget_batch):
    values = lens_values(organism, organism, forget_batch)
    with torch.no_grad():
        tok = answer_token_logprobs(organism.model(forget_batch.tokens), forget_batch)
    p = tok.exp().double() * forget_batch.target_mask
    first = torch.stack([p[i, int(n) - 1] for i, n in enumerate(forget_batch.prompt_lens)]).numpy()
    mean = (p.sum(-1) / forget_batch.answer_lens).numpy()
    assert np.array_equal(values.first_prob[:, -1], first)
    assert np.array_equal(values.mean_prob[:, -1], mean)
    assert values.first_prob.shape == (len(forget_batch.tokens), organism.n_layers)
    assert (values.first_rank >= 1).all() and (values.first_rank[:, -1] == 1).mean() > 0.9  # it knows the answers


def test_model_equal_below_L_shows_the_originals_lens_there(organism, forget_batch):
    member = perturbed_above(organism, FROZEN_BELOW, scale=0.5)
    ours, orig = lens_values(member, organism, forget_batch), lens_values(organism, organism, forget_batch)
    for q in QUANTITIES:
        a, b = getattr(ours, q), getattr(orig, q)
        assert np.array_equal(a[:, :FROZEN_BELOW], b[:, :FROZEN_BELOW]), q
    assert np.abs(ours.mean_prob[:, FROZEN_BELOW:] - orig.mean_prob[:, FROZEN_BELOW:]).max() > 1e-3


def test_readout_only_control_cannot_hide_through_the_originals_readout(small_study, organism, forget_batch):
    control = small_study.load("readout_suppression")  # activations bit-identical to the original's
    through_original = lens_values(control, organism, forget_batch)
    orig = lens_values(organism, organism, forget_batch)
    assert np.array_equal(through_original.mean_prob, orig.mean_prob)
    own = lens_values(control, control, forget_batch)
    assert own.mean_prob[:, -1].mean() < 0.5 * orig.mean_prob[:, -1].mean()  # its own readout hides the answer


def test_batched_equals_naive_loop(small_study, organism):
    model = small_study.load("rmu")
    fs = small_study.forget[:5]
    ref = naive_lens(model, organism, pairs_of(organism, [s.prompt for s in fs], [s.answer for s in fs]))
    ours = lens_values(model, organism, make_batch(organism, [s.prompt for s in fs], [s.answer for s in fs]))
    for q in ("first_prob", "mean_prob"):
        assert np.abs(getattr(ours, q) - ref[q]).max() <= TOL, q
    for q in ("first_rank", "mean_rank"):
        assert np.array_equal(getattr(ours, q), ref[q]), q
    assert ours.first_rank.max() > 1  # rmu moves the answer off the top somewhere: ranks are compared for real


def test_multi_token_answers_average_over_tokens(organism):
    prompts, answers = ["Hello there my", "The city of"], ["friend of mine", "Mossgate"]
    batch = make_batch(organism, prompts, answers)
    assert int(batch.answer_lens.max()) > 1
    ours = lens_values(organism, organism, batch)
    ref = naive_lens(organism, organism, pairs_of(organism, prompts, answers))
    for q in QUANTITIES:
        assert np.abs(getattr(ours, q) - ref[q]).max() <= TOL, q


def test_study_results_store_and_signal(small_study, monkeypatch):
    orig = lens_result(small_study, "original")
    assert orig.readout == "original" and orig.value is not None and orig.value > 0.9
    assert orig.ci is not None and orig.ci[0] <= orig.value <= orig.ci[1]
    arr = orig.array("mean_prob")
    assert orig.peak == pytest.approx(arr.max(axis=1).tolist()) and orig.value == pytest.approx(arr.max(1).mean())
    ret = lens_result(small_study, "retrain")
    assert ret.value is not None and ret.value < orig.value
    assert LensResult.from_dict(json.loads(json.dumps(ret.to_dict()))) == ret
    assert lens_cached(small_study, "retrain")
    fps = [small_study.fingerprint("original"), small_study.fingerprint("retrain")]
    assert set(small_study.store.get_many(STORE_KIND, fps, LensOptions().key())) == {s.id for s in small_study.forget}

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("computed again instead of read from the store")

    monkeypatch.setattr("analysis.logit_lens.runner.lens_values", boom)
    assert lens_result(small_study, "retrain") == ret
    reading = SIGNALS.get("logit_lens")(small_study, "retrain")
    assert reading.signal == "logit_lens" and reading.value == pytest.approx(ret.value)
    assert set(reading.per_sample) == {s.id for s in small_study.forget}


def test_own_readout_is_stored_apart(small_study):
    own = lens_result(small_study, "readout_suppression", LensOptions(readout="own"))
    through = lens_result(small_study, "readout_suppression")
    assert own.readout == "readout_suppression" and through.readout == "original"
    assert through.value == pytest.approx(lens_result(small_study, "original").value)
    assert own.value is not None and through.value is not None and own.value < through.value


def test_bad_inputs(small_study):
    with pytest.raises(AnalysisInputError, match="unknown readout"):
        LensOptions(readout="mine").validated()  # type: ignore[arg-type]
    with pytest.raises(AnalysisInputError, match="batch size"):
        LensOptions(batch_size=0).validated()
    with pytest.raises(StudyError, match="unknown model"):
        lens_result(small_study, "nope")
    with pytest.raises(AnalysisInputError, match="unknown sample id"):
        lens_result(small_study, "npo", sample_ids=["nope"])


def test_cli(small_study, capsys):
    root = str(small_study.root)
    assert main(["lens", root, "--model", "readout_suppression", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert list(obj["models"]) == ["original", "readout_suppression"]  # the original always shown
    a, b = obj["models"]["original"], obj["models"]["readout_suppression"]
    assert a["values"] == b["values"] and a["value"] > 0.9
    assert main(["lens", root, "--model", "npo", "--readout", "own"]) == 0
    out = capsys.readouterr().out
    assert "npo's final norm" in out and "layer" in out
    assert main(["lens", root, "--model", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
