"""The causal-trace signal (``causal_trace`` of the meta-evaluation, the diagnosis's trace reading): each model
traces the original's answer and each sample's indirect effect of restoring the subject's mid-layer states is
divided by THAT model's own clean-minus-corrupted gap. Known answer: the readout-only control (every residual
activation the original's) keeps the original's share, where the old reading (the raw probability effect as a
fraction of the original's) gave it ~0; the original's value assembled by hand from the tracing engine; None
below the gap floor; stale stored readings are not served."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.diagnosis.options import default_trace_options
from analysis.evaluation import model_scores
from analysis.signals import SignalReading, bootstrap_ci
from analysis.tracing import TraceOptions, TraceResult, trace, trace_dataset
from analysis.validation.signals_existing import causal_trace

pytestmark = pytest.mark.usefixtures("one_thread")

# What the signal is documented to trace (analysis.diagnosis.options.default_trace_options), written out here.
SIGNAL_TRACE = TraceOptions(kinds=("resid", "mlp"), n_samples=10, metric="logit_diff_corrupted")
GAP_FLOOR = 1.0  # analysis.diagnosis.rules.TRACE_GAP_FLOOR["logit_diff_corrupted"], written out here
MID = [1, 2]  # the middle half of the organism's 4 layers
OLD_TRACE = TraceOptions(kinds=("resid", "mlp"), n_samples=3)  # the old reading's trace: answer probability
READOUT = "readout_suppression"


def hand_share(r: TraceResult) -> float | None:
    """One sample's normalised mid-layer effect of the first subject token, by explicit loops over the trace's
    cells: mean over kinds, mid layers and the token of (restored - corrupted), over (clean - corrupted)."""
    gap = r.clean - r.corrupted
    if abs(gap) < GAP_FLOOR:
        return None
    t = r.subject_range[0]  # the first subject token: where the organism's subject effect sits
    cells = [r.scores[kind][layer][t] - r.corrupted for kind in ("resid", "mlp") for layer in MID]
    return sum(cells) / len(cells) / gap


def answered(study) -> dict[str, bool]:
    per = model_scores(study, "original")["per_sample"]
    return {str(i): bool(c) for i, c in zip(per["ids"], per["correct"], strict=True)}


@pytest.fixture(scope="module")
def original_by_hand(small_study) -> dict[str, float | None]:
    """The original's per-sample shares from the tracing engine (``trace``: no store, no diagnosis code)."""
    h, pool, ok = small_study.load("original"), small_study.subject_pool(), answered(small_study)
    return {s.id: hand_share(trace(h, s, pool, SIGNAL_TRACE)) if ok[s.id] else None for s in small_study.forget}


def _mean(values: dict[str, float | None]) -> float:
    return float(np.mean([v for v in values.values() if v is not None]))


def old_kept(study, model: str) -> float:
    """The old reading: the raw AIE (answer probability) of the subject group at the mid layers, averaged over
    the traced kinds, on ``model`` as a fraction of the original's, at the group where the original's is largest."""
    aies = {n: trace_dataset(study, n, OLD_TRACE) for n in ("original", model)}

    def overall(n: str, role: str) -> float:
        a = aies[n]
        i = a.roles.index(role)
        return float(np.mean([np.mean([a.aie[k][i][layer] for layer in MID]) for k in a.aie]))

    roles = ("first subject token", "last subject token")
    role = max(roles, key=lambda r: overall("original", r))
    return overall(model, role) / overall("original", role)


def test_signal_traces_what_it_says():
    assert default_trace_options() == SIGNAL_TRACE


def test_original_value_equals_the_engine_assembled_by_hand(small_study, original_by_hand):
    got = causal_trace(small_study, "original")
    assert got.details["role"] == "first subject token"
    assert got.per_sample.keys() == original_by_hand.keys()
    for sid, want in original_by_hand.items():
        if want is None:
            assert got.per_sample[sid] is None, sid
        else:
            assert got.per_sample[sid] == pytest.approx(want, rel=1e-5, abs=1e-7), sid
    defined = [v for v in original_by_hand.values() if v is not None]
    assert len(defined) >= 12  # the original's gap is several logits on nearly every sample
    assert got.value == pytest.approx(float(np.mean(defined)), rel=1e-5, abs=1e-7)
    assert got.details["share_original"] == pytest.approx(got.value, abs=1e-9)
    assert got.ci == pytest.approx(bootstrap_ci(defined), rel=1e-5, abs=1e-7)
    assert got.details["kept"] == pytest.approx(1.0)
    assert 0 < got.value < 1  # some, not all, of the subject's effect flows through its mid-layer states


def test_readout_control_keeps_the_original_share(small_study, original_by_hand):
    """Only the unembedding differs from the original: the subject's mid-layer states carry the same share of
    the control's own (reversed: the control pushes the clean answer down) clean-vs-corrupted difference. The
    old reading, the control's raw probability effect over the original's, saw ~0 because the control no longer
    gives the answer at all."""
    assert abs(old_kept(small_study, READOUT)) < 0.05  # the defect: the old reading repeats the output metric
    orig = _mean(original_by_hand)
    got = causal_trace(small_study, READOUT)
    assert sum(v is not None for v in got.per_sample.values()) >= 12  # a logit gap does not vanish
    assert 0.5 * orig <= got.value <= 2 * orig, (got.value, orig)
    assert got.ci is not None and got.ci[0] <= orig <= got.ci[1]  # the original's share is within its interval
    assert got.ci[0] > 0
    # the same per sample, assembled by hand on the control
    h, pool = small_study.load(READOUT), small_study.subject_pool()
    for s in small_study.forget[:4]:
        want = hand_share(trace(h, s, pool, SIGNAL_TRACE))
        assert got.per_sample[s.id] == (None if want is None else pytest.approx(want, rel=1e-5, abs=1e-7))


def test_diagnosis_reads_the_readout_control_as_keeping_its_share(small_study):
    from analysis.diagnosis.signals import trace as gather_trace

    got = gather_trace(small_study, READOUT, default_trace_options(), None)
    n = got.signal.numbers
    assert got.signal.reading != "gone"  # the old reading: gone (kept ~0)
    assert n["kept"] >= 0.5
    assert n["kept_ci"][0] <= n["kept"] <= n["kept_ci"][1]
    rows = got.per_sample
    assert all(rows[sid]["trace_after"] == pytest.approx(v) for sid, v in
               causal_trace(small_study, READOUT).per_sample.items() if v is not None)


def test_undefined_below_the_gap_floor(small_study):
    """The retrain control never learned the facts: on some samples the corruption hardly moves its logit
    difference. Exactly those samples (|clean - corrupted| below the floor) have no share, with a note."""
    got = causal_trace(small_study, "retrain")
    h, pool = small_study.load("retrain"), small_study.subject_pool()
    gaps = {s.id: (lambda r: r.clean - r.corrupted)(trace(h, s, pool, SIGNAL_TRACE)) for s in small_study.forget}
    ok = answered(small_study)
    below = {sid for sid, g in gaps.items() if abs(g) < GAP_FLOOR}
    assert below, "the retrain control should have samples below the floor"
    assert {sid for sid, v in got.per_sample.items() if v is None} == below | {sid for sid in ok if not ok[sid]}
    notes = got.details["per_sample_notes"]
    assert all("below the floor" in notes[sid] for sid in below)
    assert got.value == pytest.approx(_mean(got.per_sample), abs=1e-12)


def test_normalised_effect_floor_known_answer():
    from analysis.diagnosis.signals import normalised_effect

    def toy(clean: float, corrupted: float) -> TraceResult:
        # 4 layers x 3 tokens (BOS, subject, last); restoring the subject at layers 1-2 gives +0.6 and +0.2 (resid)
        # and +0.4, +0.4 (mlp) over the corrupted value: mean effect 0.4
        base = [[corrupted] * 3 for _ in range(4)]
        resid = [row[:] for row in base]
        mlp = [row[:] for row in base]
        resid[1][1], resid[2][1], mlp[1][1], mlp[2][1] = (corrupted + 0.6, corrupted + 0.2, corrupted + 0.4,
                                                          corrupted + 0.4)
        return TraceResult(tokens=["<bos>", "S", "is"], subject_range=(1, 2), layers=[0, 1, 2, 3], clean=clean,
                           corrupted=corrupted, scores={"resid": resid, "mlp": mlp}, options={}, model="toy")

    value, why = normalised_effect(toy(3.0, 1.0), MID, "first subject token", 1.0)
    assert value == pytest.approx(0.4 / 2.0) and why == ""
    value, why = normalised_effect(toy(-1.0, 1.0), MID, "first subject token", 1.0)  # a reversed gap
    assert value == pytest.approx(0.4 / -2.0)
    value, why = normalised_effect(toy(1.5, 1.0), MID, "first subject token", 1.0)  # gap 0.5 < floor 1
    assert value is None and "below the floor" in why
    value, why = normalised_effect(toy(math.nan, 1.0), MID, "first subject token", 1.0)
    assert value is None
    value, why = normalised_effect(toy(3.0, 1.0), MID, "middle subject tokens", 1.0)  # one-token subject
    assert value is None and "no middle subject tokens" in why


def test_stale_stored_readings_are_not_served(small_study):
    """A reading stored under the old definition's key is not read back: the causal trace has its own version."""
    from analysis.validation import runner
    from analysis.validation.options import READING_KIND, READING_VERSION, ValidationOptions

    fps, key = runner.reading_key(small_study, "causal_trace", "grad_ascent")
    old_key = {"signal": "causal_trace", "version": READING_VERSION}
    assert key != old_key
    stale = SignalReading("causal_trace", "grad_ascent", 0.0, None, {}, "", {"stale": True})
    small_study.store.put(READING_KIND, fps, old_key, stale.to_dict())
    assert runner.stored_reading(small_study, "causal_trace", "grad_ascent") is None
    # the key of a whole validation result holding the signal changes with it; one without it does not
    opts = ValidationOptions()
    assert opts.key(("causal_trace",)) != {**opts.key(("output_forget_acc",)), "signals": ["causal_trace"]}
    assert "signal_versions" not in opts.key(("output_forget_acc",))
    # the other signals keep their keys (their stored readings stay valid)
    assert runner.reading_key(small_study, "output_forget_acc", "grad_ascent")[1] == {
        "signal": "output_forget_acc", "version": READING_VERSION}
