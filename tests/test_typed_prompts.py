"""Typed prompts (analysis.typed and the typed entry points of tracing, attribution and circuits): the text is
checked and kept as typed; a typed prompt equal to a sample of the study gets that sample's trace, attribution
and circuit; a prompt that is not in the study is traced with the tokens typed; a multi-token answer is scored
length-normalised; bad input is a clear AnalysisInputError; results are stored in their own slot and served
only to the same text."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.attribution.options import ATTRIBUTION_STORE_KIND, AttributionOptions
from analysis.attribution.runner import attribute_sample, attribute_typed
from analysis.circuits.options import CIRCUIT_DEFAULTS, EAPOptions
from analysis.circuits.options import STORE_KIND as EAP_KIND
from analysis.circuits.runner import circuit_for_sample, circuit_typed
from analysis.data.schema import MAX_PROMPT_CHARS, Sample
from analysis.errors import AnalysisInputError
from analysis.study import Study
from analysis.tracing import runner as tracing_runner
from analysis.tracing.options import STORE_KIND as TRACE_KIND
from analysis.tracing.options import TraceOptions
from analysis.tracing.runner import trace_sample, trace_typed
from analysis.typed import (
    TYPED_SPLIT,
    TypedSlot,
    is_typed,
    typed_id,
    typed_kind,
    typed_sample,
    with_study_relation,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-6
UNLEARNED = "npo"
# a paraphrase of a forget sample (its relation: birthplace), not the prompt of any sample of the study
NEW_PROMPT, NEW_SUBJECT = "The city where Dridaen Dumiovert was born is", "Dridaen Dumiovert"


@pytest.fixture(scope="module")
def study(small_study, tmp_path_factory: pytest.TempPathFactory) -> Study:
    """A copy of the small study with an empty store: every by-id and typed result below is computed here (one
    sample per batch both ways), and the session study's store is left as the other tests expect it."""
    root = Path(tmp_path_factory.mktemp("typed")) / "study"
    shutil.copytree(small_study.root, root, ignore=shutil.ignore_patterns("results.sqlite*", "sae"))
    return Study.open(root)


def _as_typed(s: Sample) -> Sample:
    return typed_sample(s.prompt, s.answer, s.subject)


def _hand_mean_logprob(study: Study, model: str, prompt: str, answer: str) -> tuple[float, int]:
    """Mean log-prob of the answer tokens after the prompt, from one plain forward of the model (no analysis
    code), and the number of answer tokens. The organism's tokenizer is word-level: one token per word."""
    h = study.load(model)
    tok = h.tokenizer
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(answer, add_special_tokens=False)["input_ids"]
    if h.prepend_bos:
        p_ids = [tok.bos_token_id, *p_ids]
    ids = torch.tensor([p_ids + a_ids])
    with torch.no_grad():
        logp = torch.log_softmax(h.model(ids)[0].double(), -1)
    lp = [float(logp[len(p_ids) - 1 + i, a]) for i, a in enumerate(a_ids)]
    return float(np.mean(lp)), len(a_ids)


# ---- the typed sample ------------------------------------------------------------------------------------
def test_typed_sample_keeps_the_text_and_names_it_by_its_text() -> None:
    t = typed_sample("Dridaen Dumiovert was born in", "Mossgate", "Dridaen Dumiovert")
    assert (t.prompt, t.answer, t.subject, t.split, t.relation) == (
        "Dridaen Dumiovert was born in", "Mossgate", "Dridaen Dumiovert", TYPED_SPLIT, "")
    assert t.id.startswith("typed-") and len(t.id) == len("typed-") + 12 and is_typed(t)
    assert typed_sample("Dridaen Dumiovert was born in", "Mossgate", "Dridaen Dumiovert").id == t.id
    others = {typed_sample("Dridaen Dumiovert was born in", "Mossgate").id,  # no subject
              typed_sample("Dridaen Dumiovert was born in", "Mossgate", "Dumiovert").id,
              typed_sample("Dridaen Dumiovert was born in", "Quenlow", "Dridaen Dumiovert").id,
              typed_sample("Dridaen Dumiovert was born in ", "Mossgate", "Dridaen Dumiovert").id}
    assert t.id not in others and len(others) == 4
    assert typed_sample("a b", "c", "").subject == "" and typed_sample("a b", "c", "").id == typed_sample("a b", "c").id
    # not "fixed": no leading space added to the answer, no spaces stripped
    spaced = typed_sample("Dridaen Dumiovert was born in ", " Mossgate ", "Dridaen")
    assert (spaced.prompt, spaced.answer) == ("Dridaen Dumiovert was born in ", " Mossgate ")
    assert typed_id(t.prompt, t.answer, t.subject) == t.id


@pytest.mark.parametrize("prompt, answer, subject, words", [
    ("", "Mossgate", None, ["prompt is empty"]),
    ("   ", "Mossgate", None, ["prompt is empty"]),
    ("Dridaen Dumiovert was born in", "", None, ["answer is empty"]),
    ("Dridaen Dumiovert was born in", " \n", None, ["answer is empty"]),
    ("Dridaen Dumiovert was born in", "Mossgate", "Pioquas Gebaekal", ["'Pioquas Gebaekal'", "not in the prompt"]),
    ("Dridaen Dumiovert was born in", "Mossgate", "dridaen dumiovert", ["'dridaen dumiovert'", "upper / lower case"]),
    ("Dridaen Dumiovert was born in", "Mossgate", "  ", ["subject is empty"]),
    ("x " * MAX_PROMPT_CHARS, "Mossgate", None, ["prompt has", "characters"]),
    ("Dridaen\x00 was born in", "Mossgate", None, ["NUL"]),
])
def test_typed_sample_errors_say_what_is_wrong(prompt: str, answer: str, subject: str | None,
                                               words: list[str]) -> None:
    with pytest.raises(AnalysisInputError) as e:
        typed_sample(prompt, answer, subject)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_the_study_relation_of_a_typed_question(study: Study) -> None:
    forget = study.forget[0]
    assert with_study_relation(study, _as_typed(forget)).relation == forget.relation
    # another person, same question (a retain sample's template); a paraphrase of the samples' question
    assert with_study_relation(study, typed_sample("Pioquas Gebaekal works as a", "baker", "Pioquas Gebaekal")
                               ).relation == "profession"
    assert with_study_relation(study, typed_sample(NEW_PROMPT, "Mossgate", NEW_SUBJECT)).relation == "birthplace"
    # a question no sample asks, and a typed prompt without a subject: no relation
    assert with_study_relation(study, typed_sample("The birthplace of Dridaen Dumiovert is", "Mossgate",
                                                   NEW_SUBJECT)).relation == ""
    assert with_study_relation(study, typed_sample(forget.prompt, forget.answer)).relation == ""


# ---- typed equals by id -----------------------------------------------------------------------------------
def _forget_pair(study: Study) -> list[Sample]:
    return [study.forget[0], study.forget[-1]]


@pytest.mark.parametrize("corruption", ["noise", "str"])
def test_typed_trace_equals_the_samples_trace(study: Study, corruption: str) -> None:
    """STR draws the replacement by the sample's relation: without the study's relation the typed prompt would
    get another replacement subject on most forget samples (11 of 16 on the small study), so this compares
    more than one code path with itself."""
    opts = TraceOptions(corruption=corruption, n_samples=4)
    for s in _forget_pair(study):
        for model in ("original", UNLEARNED):
            by_id, typed = trace_sample(study, model, s.id, opts), trace_typed(study, model, _as_typed(s), opts)
            assert typed.sample_id == _as_typed(s).id and typed.answer == s.answer
            assert typed.tokens == by_id.tokens and typed.subject_range == by_id.subject_range
            assert typed.options == by_id.options  # the same replacement subject / noise std
            assert abs(typed.clean - by_id.clean) <= TOL and abs(typed.corrupted - by_id.corrupted) <= TOL
            for kind in by_id.kinds:
                np.testing.assert_allclose(typed.array(kind), by_id.array(kind), rtol=0, atol=TOL)


def test_typed_attribution_equals_the_samples_attribution(study: Study) -> None:
    for opts in (AttributionOptions(), AttributionOptions(method="ig", ig_steps=8)):
        for s in _forget_pair(study):
            for model in ("original", UNLEARNED):
                by_id, typed = attribute_sample(study, model, s.id, opts), attribute_typed(study, model,
                                                                                           _as_typed(s), opts)
                assert typed.tokens == by_id.tokens and typed.keywords == by_id.keywords
                assert (typed.prompt, typed.answer) == (s.prompt, s.answer)
                assert abs(typed.logprob - by_id.logprob) <= TOL
                np.testing.assert_allclose(typed.array(), by_id.array(), rtol=0, atol=TOL)


@pytest.mark.parametrize("baseline", ["corrupted", "zero"])
def test_typed_circuit_equals_the_samples_circuit(study: Study, baseline: str) -> None:
    opts = replace(CIRCUIT_DEFAULTS, baseline=baseline)
    for s in _forget_pair(study):
        for model in ("original", UNLEARNED):
            by_id = circuit_for_sample(study, model, s.id, top_n=20, options=opts)
            typed = circuit_typed(study, model, _as_typed(s), top_n=20, options=opts)
            assert typed.sample_id == _as_typed(s).id and typed.circuit == by_id.circuit
            np.testing.assert_allclose([e["score"] for e in typed.edges], [e["score"] for e in by_id.edges],
                                       rtol=0, atol=TOL)
            assert typed.faithfulness["note"] == by_id.faithfulness["note"]
            for k in ("faithfulness", "metric_full", "metric_circuit", "metric_empty"):
                a, b = typed.faithfulness[k], by_id.faithfulness[k]
                assert (a is None and b is None) or abs(a - b) <= TOL, k  # None: undefined (see the note)


# ---- a prompt that is not in the study --------------------------------------------------------------------
def test_a_typed_prompt_not_in_the_study_is_traced_as_typed(study: Study) -> None:
    assert NEW_PROMPT not in {s.prompt for s in study.samples()}
    t = typed_sample(NEW_PROMPT, "Mossgate", NEW_SUBJECT)
    r = trace_typed(study, "original", t, TraceOptions(n_samples=4))
    assert r.tokens == ["<bos>", *NEW_PROMPT.split()] and r.answer == "Mossgate" and r.sample_id == t.id
    assert r.subject_range == (4, 6)  # <bos> The city where [Dridaen Dumiovert] was born is
    hand, n = _hand_mean_logprob(study, "original", NEW_PROMPT, "Mossgate")
    assert n == 1 and abs(r.clean - np.exp(hand)) <= 1e-5
    a = attribute_typed(study, "original", t)
    assert a.tokens == r.tokens and a.prompt == NEW_PROMPT and abs(a.logprob - hand) <= 1e-5
    c = circuit_typed(study, "original", t, top_n=20)
    assert c.sample_id == t.id and abs(c.faithfulness["metric_full"] - hand) <= 1e-5


def test_a_multi_token_answer_is_length_normalised(study: Study) -> None:
    """The organism's tokenizer is word-level: a two-word answer is two tokens. Tracing's prob is exp(mean
    log p), attribution's LP and the circuit's logprob metric the mean log p, over both answer tokens."""
    t = typed_sample("Dridaen Dumiovert works as a", "trained baker", "Dridaen Dumiovert")
    hand, n = _hand_mean_logprob(study, "original", t.prompt, t.answer)
    first, _ = _hand_mean_logprob(study, "original", t.prompt, "trained")
    assert n == 2 and abs(hand - first) > 1e-3  # the second token changes the number
    r = trace_typed(study, "original", t, TraceOptions(n_samples=4))
    assert r.answer == "trained baker" and abs(r.clean - np.exp(hand)) <= 1e-5
    assert abs(attribute_typed(study, "original", t).logprob - hand) <= 1e-5
    assert abs(circuit_typed(study, "original", t, top_n=20).faithfulness["metric_full"] - hand) <= 1e-5


# ---- errors ----------------------------------------------------------------------------------------------
def test_what_needs_a_subject(study: Study) -> None:
    t = typed_sample("Dridaen Dumiovert was born in", "Mossgate")
    with pytest.raises(AnalysisInputError, match="causal tracing .*needs a subject"):
        trace_typed(study, "original", t)
    with pytest.raises(AnalysisInputError, match="corrupted EAP-IG baseline .*needs a subject"):
        circuit_typed(study, "original", t, top_n=20)
    assert attribute_typed(study, "original", t).answer == "Mossgate"
    zero = circuit_typed(study, "original", t, top_n=20, options=EAPOptions(baseline="zero"))
    assert len(zero.circuit) == 20


def test_words_the_tokenizer_cannot_encode_are_named(study: Study) -> None:
    t = typed_sample("Zorblax Dumiovert was born in", "Qwimsy", "Zorblax Dumiovert")
    for run in (lambda: trace_typed(study, "original", t), lambda: attribute_typed(study, "original", t),
                lambda: circuit_typed(study, "original", t, top_n=20)):
        with pytest.raises(AnalysisInputError) as e:
            run()
        msg = str(e.value)
        assert "'Zorblax' in the prompt" in msg and "'Qwimsy' in the answer" in msg and "<unk>" in msg, msg


def test_hand_made_samples_and_long_prompts_are_refused(study: Study) -> None:
    t = typed_sample("Dridaen Dumiovert was born in", "Mossgate", "Dridaen Dumiovert")
    for bad in (replace(t, prompt="Pioquas Gebaekal was born in", subject="Pioquas Gebaekal"),  # id of other text
                study.forget[0]):  # a sample of the study: use trace_sample
        with pytest.raises(AnalysisInputError, match="not a typed sample"):
            trace_typed(study, "original", bad)
    n_ctx = study.load("original").model.cfg.n_ctx
    long = typed_sample(" ".join(["Dridaen Dumiovert was born in"] * (n_ctx // 5 + 1)), "Mossgate", "Dridaen")
    with pytest.raises(AnalysisInputError, match="longer than the model's context"):
        trace_typed(study, "original", long)
    with pytest.raises(AnalysisInputError, match="longer than the model's context"):
        attribute_typed(study, "original", long)


# ---- the store -------------------------------------------------------------------------------------------
def test_typed_results_are_stored_apart_and_served_only_to_the_same_text(study: Study,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    opts = TraceOptions(n_samples=3, seed=7)  # used by no other test: nothing stored yet
    t = typed_sample(NEW_PROMPT, "Mossgate", NEW_SUBJECT)
    calls: list[str] = []
    real = tracing_runner.trace

    def counted(*args: object, **kwargs: object) -> object:
        calls.append("trace")
        return real(*args, **kwargs)

    monkeypatch.setattr(tracing_runner, "trace", counted)
    first = trace_typed(study, "original", t, opts)
    again = trace_typed(study, "original", typed_sample(NEW_PROMPT, "Mossgate", NEW_SUBJECT), opts)  # typed again
    assert len(calls) == 1 and again.to_dict() == first.to_dict()
    fp = study.fingerprint("original")
    key = tracing_runner.store_key(study, opts.validated(study.load("original").n_layers))
    assert study.store.get(TRACE_KIND, [fp], key, sample_id=t.id) is None  # not among the study's rows
    assert study.store.get(typed_kind(TRACE_KIND), [fp], key, sample_id=t.id)["value"] == first.to_dict()

    # a row under the same id and key computed from other text (a digest collision) is never served
    other = replace(t, prompt="Pioquas Gebaekal was born in", subject="Pioquas Gebaekal", relation="birthplace")
    bogus = {**first.to_dict(), "clean": 123.0}
    TypedSlot(study.store, TRACE_KIND, (fp,), other).put(key, bogus)
    served = trace_typed(study, "original", t, opts)
    assert len(calls) == 2 and served.clean == first.clean  # recomputed, not the other text's row
    assert trace_typed(study, "original", t, opts).clean == first.clean and len(calls) == 2  # and stored again

    attribute_typed(study, "original", t)
    circuit_typed(study, "original", t, top_n=20)
    kinds = dict(study.store.kinds())
    assert kinds[typed_kind(ATTRIBUTION_STORE_KIND)] >= 1 and kinds[typed_kind(EAP_KIND)] >= 1
