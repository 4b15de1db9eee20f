"""Cross-model activation patching: known answers (a model patched into itself changes nothing; the retrain
control is exactly as deep as itself; a model equal to the original below layer L drops nothing there), the
batched engine against the naive per-(sample, layer) hooked loop, the ratio / depth arithmetic on hand-computed
cases, bad inputs, the store, the signal, the CLI and the page."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.cli import main
from analysis.errors import AnalysisInputError, StudyError
from analysis.patching import (
    STORE_KIND,
    PatchingResult,
    PatchOptions,
    depth_scores,
    erasure_ratios,
    patch_logprobs,
    patching_cached,
    patching_result,
    source_curves,
)
from analysis.scoring import make_batch
from analysis.signals import SIGNALS
from analysis.study import Study
from benchmarks.bench_patching import naive_patch, pairs_of, perturbed_above

pytestmark = pytest.mark.usefixtures("one_thread")
REL_TOL = 1e-5
FROZEN_BELOW = 2  # the depth-limited model: blocks >= 2 perturbed, 0 and 1 bit-identical to the original


@pytest.fixture(scope="module")
def forget_batch(small_study, organism):
    fs = small_study.forget
    return make_batch(organism, [s.prompt for s in fs], [s.answer for s in fs])


@pytest.fixture(scope="module")
def depth_limited(organism):
    return perturbed_above(organism, FROZEN_BELOW, scale=0.5)


@pytest.mark.parametrize("positions", ["all", "answer"])
def test_patching_the_original_into_itself_changes_nothing(organism, forget_batch, positions):
    curves = patch_logprobs(organism, organism, forget_batch, positions)
    assert curves.patched.shape == (len(forget_batch.tokens), organism.n_layers)
    assert np.array_equal(curves.drop, np.zeros_like(curves.drop))  # exact, at every layer
    assert curves.n_forwards == organism.n_layers + 1  # one forward per start layer + the clean run


@pytest.mark.parametrize("positions", ["all", "answer"])
def test_model_equal_below_L_drops_nothing_there(organism, forget_batch, depth_limited, positions):
    for layer in range(FROZEN_BELOW):  # the build really kept the lower blocks
        for a, b in zip(organism.model.blocks[layer].parameters(), depth_limited.model.blocks[layer].parameters(),
                        strict=True):
            assert np.array_equal(a.detach().numpy(), b.detach().numpy())
    drop = patch_logprobs(organism, depth_limited, forget_batch, positions).drop
    assert np.array_equal(drop[:, :FROZEN_BELOW], np.zeros_like(drop[:, :FROZEN_BELOW]))
    assert np.abs(drop[:, FROZEN_BELOW:]).max() > 1e-2  # the perturbed blocks do change the answer


@pytest.mark.parametrize("positions", ["all", "answer"])
def test_batched_equals_naive_loop(small_study, organism, positions):
    source = small_study.load("npo")
    fs = small_study.forget[:4]
    pairs = pairs_of(organism, [s.prompt for s in fs], [s.answer for s in fs])
    base, patched = naive_patch(organism, source, pairs, positions)
    batch = make_batch(organism, [s.prompt for s in fs], [s.answer for s in fs])
    curves = patch_logprobs(organism, source, batch, positions)
    scale = max(1.0, float(np.abs(patched).max()))
    assert np.abs(curves.base - base).max() <= REL_TOL * scale
    assert np.abs(curves.patched - patched).max() <= REL_TOL * scale
    assert np.abs(curves.drop).max() > 1.0  # npo really changes the answer: the comparison is not trivial


def test_ratios_and_depth_known_answers():
    drop_ref = np.array([[0.01, 1.0, 2.0, 4.0], [0.0, 0.02, 0.03, 0.04]])
    drop_model = np.array([[5.0, 0.5, 3.0, -1.0], [1.0, 1.0, 1.0, 1.0]])
    r = erasure_ratios(drop_model, drop_ref, 0.05)
    assert np.isnan(r[0, 0]) and r[0, 1] == 0.5 and r[0, 2] == 1.0 and r[0, 3] == 0.0  # clipped to [0, 1]
    assert np.isnan(r[1]).all()  # the reference never drops more than min_drop: undefined
    mean = depth_scores(r, drop_ref, "mean")
    assert mean[0] == pytest.approx(0.5) and np.isnan(mean[1])
    uds = depth_scores(r, drop_ref, "uds")  # (1 * 0.5 + 2 * 1 + 4 * 0) / (1 + 2 + 4)
    assert uds[0] == pytest.approx(2.5 / 7) and np.isnan(uds[1])
    with pytest.raises(AnalysisInputError, match="do not match"):
        erasure_ratios(drop_model, drop_ref[:, :2], 0.05)
    with pytest.raises(AnalysisInputError, match="unknown aggregation"):
        depth_scores(r, drop_ref, "median")


def test_study_original_retrain_and_unlearned(small_study):
    orig = patching_result(small_study, "original")
    assert orig.depth_mean == 0.0 and orig.signal == 1.0  # knowledge intact: no drop anywhere
    assert all(d == 0.0 for row in orig.drop for d in row)
    ret = patching_result(small_study, "retrain")
    assert ret.reference == "retrain" and ret.depth_mean == 1.0 and ret.signal == 0.0
    assert all(d in (None, 1.0) for d in ret.depth)
    assert ret.ratio_by_layer is not None and all(m in (None, 1.0) for m in ret.ratio_by_layer.mean)
    npo = patching_result(small_study, "npo")
    assert npo.depth_mean is not None and 0.0 < npo.depth_mean <= 1.0
    assert npo.depth_ci is not None and npo.depth_ci[0] <= npo.depth_mean <= npo.depth_ci[1]
    assert len(npo.drop) == len(small_study.forget) and len(npo.drop[0]) == small_study.load("original").n_layers
    assert npo.reference_drop == ret.drop  # the same reference curves
    again = PatchingResult.from_dict(json.loads(json.dumps(npo.to_dict())))
    assert again == npo
    uds = patching_result(small_study, "npo", PatchOptions(aggregation="uds"))
    assert uds.drop == npo.drop and uds.depth_mean != npo.depth_mean  # same stored curves, other aggregation


def test_store_serves_the_curves(small_study, monkeypatch):
    opts = PatchOptions(positions="answer")
    patching_result(small_study, "rmu", opts)
    assert patching_cached(small_study, "rmu", opts)
    assert PatchOptions(min_drop=0.3).key() == PatchOptions().key()  # aggregation settings are not stored
    assert opts.key() != PatchOptions().key()
    fps = [small_study.fingerprint("original"), small_study.fingerprint("rmu")]
    rows = small_study.store.get_many(STORE_KIND, fps, opts.key())
    assert set(rows) == {s.id for s in small_study.forget}

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("computed again instead of read from the store")

    monkeypatch.setattr("analysis.patching.runner.patch_logprobs", boom)
    stored = patching_result(small_study, "rmu", opts)
    assert stored.depth_mean is not None
    curves = source_curves(small_study, "rmu", opts, sample_ids=[small_study.forget[0].id])
    assert curves.patched.shape == (1, small_study.load("rmu").n_layers)


def test_signal_is_one_minus_depth(small_study):
    assert "patching" in SIGNALS
    reading = SIGNALS.get("patching")(small_study, "rmu")
    result = patching_result(small_study, "rmu")
    assert reading.signal == "patching" and reading.model == "rmu"
    assert set(reading.per_sample) == {s.id for s in small_study.forget}
    assert reading.value == pytest.approx(1.0 - result.depth_mean)
    assert reading.ci is not None and reading.ci[0] <= reading.value <= reading.ci[1]
    assert SIGNALS.get("patching")(small_study, "original").value == 1.0


def test_without_a_reference_the_depth_is_undefined(small_study):
    study = Study.open(small_study.root)
    study.manifest.retrain = None  # in memory only
    r = patching_result(study, "npo")
    assert r.reference is None and r.depth_mean is None and r.ratio is None and "no reference" in r.note
    assert r.drop == patching_result(small_study, "npo").drop
    assert r.reading().value is None


def test_bad_inputs(small_study, organism, forget_batch):
    with pytest.raises(AnalysisInputError, match="unknown patch positions"):
        PatchOptions(positions="prompt").validated()  # type: ignore[arg-type]
    with pytest.raises(AnalysisInputError, match="unknown aggregation"):
        PatchOptions(aggregation="max").validated()  # type: ignore[arg-type]
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(AnalysisInputError, match="min_drop"):
            PatchOptions(min_drop=bad).validated()
    with pytest.raises(AnalysisInputError, match="batch size"):
        PatchOptions(batch_size=0).validated()
    with pytest.raises(StudyError, match="unknown model"):
        patching_result(small_study, "nope")
    with pytest.raises(StudyError, match="unknown model"):
        patching_result(small_study, "npo", reference="nope")
    with pytest.raises(AnalysisInputError, match="unknown sample id"):
        patching_result(small_study, "npo", sample_ids=["nope"])
    with pytest.raises(AnalysisInputError, match="unknown patch positions"):
        patch_logprobs(organism, organism, forget_batch, "prompt")


def test_cli(small_study, capsys):
    root = str(small_study.root)
    assert main(["patch", root, "--model", "npo", "--model", "original", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert set(obj["models"]) == {"npo", "original"}
    assert obj["models"]["original"]["depth_mean"] == 0.0 and obj["models"]["original"]["signal"] == 1.0
    assert obj["models"]["npo"]["depth_mean"] == pytest.approx(patching_result(small_study, "npo").depth_mean)
    assert main(["patch", root, "--model", "retrain"]) == 0
    out = capsys.readouterr().out
    assert "retrain: depth 1.000" in out and "ref drop" in out
    assert main(["patch", root, "--model", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["patch", root, "--min-drop", "-1"])
    assert "--min-drop" in capsys.readouterr().err


def test_page_shows_both_sections(small_study, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(small_study.root))
    home = str(Path(__file__).resolve().parent.parent / "app" / "Home.py")
    at = AppTest.from_file(home, default_timeout=120).run()
    at.switch_page("views/signals.py").run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    at.selectbox(key="signals_model").set_value("npo").run()
    for key in ("patch_go", "lens_go"):  # not stored yet for this model: a button, then the charts
        if any(b.key == key for b in at.button):
            at.button(key=key).click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    metrics = {m.label: m.value for m in at.metric}
    depth = patching_result(small_study, "npo").depth_mean
    assert metrics["depth score"] == f"{depth:.3f}"
    assert any("highest answer probability" in label for label in metrics)
    assert len(at.get("plotly_chart")) >= 2


def test_figures(small_study):
    from analysis.logit_lens import lens_result
    from analysis.logit_lens.figures import lens_lines
    from analysis.patching.figures import depth_bars, patching_curves, ratio_heatmap

    r = patching_result(small_study, "npo")
    fig = patching_curves(r)
    names = [t.name for t in fig.data]
    assert names == ["npo", "retrain (reference)", "npo: ratio"]
    assert list(fig.data[0].y) == pytest.approx(r.drop_by_layer.mean)
    z = ratio_heatmap(r).data[0].z
    assert r.ratio is not None and [list(row) for row in z] == r.ratio
    bars = depth_bars({"npo": r, "original": patching_result(small_study, "original")})
    assert list(bars.data[0].x) == ["npo", "original"] and bars.data[0].y[1] == 0.0
    lens = {n: lens_result(small_study, n) for n in ("original", "npo")}
    lf = lens_lines(lens)
    assert [t.name for t in lf.data] == ["original", "original", "npo", "npo"]
    assert list(lf.data[0].y) == pytest.approx(lens["original"].by_layer["mean_prob"].mean)
