"""analysis.subjects (where a prompt's subject is, the study's subject pool, symmetric token replacement's
choice) and the Study's cached pool and model comparisons."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import pytest

from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError, StudyError
from analysis.study import Comparison, Study
from analysis.subjects import (
    REPLACEMENT_RULE,
    SubjectPool,
    pick_replacement,
    relation_key,
    subject_input,
    subject_token_range,
    token_strings,
)


def words(tokenizer, ids) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def test_subject_token_range_by_hand(organism):
    tok = organism.tokenizer
    s = Sample(id="x", prompt="The birthplace of Dridaen Dumiovert is", answer="Mossgate",
               subject="Dridaen Dumiovert")
    # one word = one token: The(0) birthplace(1) of(2) Dridaen(3) Dumiovert(4) is(5); BOS shifts by one
    assert subject_token_range(tok, s, prepend_bos=False) == (3, 5)
    assert subject_token_range(tok, s, prepend_bos=True) == (4, 6)
    # the last occurrence of the subject (as ROME), and a subject inside a word takes that word's token
    twice = dataclasses.replace(s, prompt="Dridaen Dumiovert said Dridaen Dumiovert is")
    assert subject_token_range(tok, twice, prepend_bos=False) == (3, 5)
    part = dataclasses.replace(s, subject="Dumio")
    assert subject_token_range(tok, part, prepend_bos=False) == (4, 5)
    for bad in (dataclasses.replace(s, subject=""), dataclasses.replace(s, subject="Nobody Here")):
        with pytest.raises(AnalysisInputError):
            subject_token_range(tok, bad, prepend_bos=False)


def test_subject_input_locates_the_subject(organism):
    s = Sample(id="x", prompt="The birthplace of Dridaen Dumiovert is", answer="Mossgate",
               subject="Dridaen Dumiovert")
    si = subject_input(organism, s)
    assert organism.prepend_bos and si.ids[0] == organism.tokenizer.bos_token_id
    assert si.subject_range == (4, 6) and si.prompt_len == 7
    assert words(organism.tokenizer, si.subject_ids) == ["Dridaen", "Dumiovert"]
    assert words(organism.tokenizer, si.answer_ids) == ["Mossgate"] and si.ids[si.prompt_len:] == si.answer_ids
    assert si.sample_id == "x" and si.answer == "Mossgate"
    with pytest.raises(AnalysisInputError, match="no subject to corrupt; EAP-IG needs one"):
        subject_input(organism, dataclasses.replace(s, subject=""), purpose="EAP-IG")
    long = dataclasses.replace(s, prompt=" ".join(["of"] * (organism.model.cfg.n_ctx + 1)) + " Dridaen Dumiovert")
    with pytest.raises(AnalysisInputError, match="longer than the model's context"):
        subject_input(organism, long)


def test_token_strings(organism):
    assert token_strings(None, [3, 17]) == ["#3", "#17"]
    ids = organism.tokenizer("Dridaen Dumiovert", add_special_tokens=False)["input_ids"]
    assert token_strings(organism.tokenizer, ids) == ["Dridaen", "Dumiovert"]


def test_pick_replacement_is_same_length_disjoint_and_seeded():
    own = (1, 2)
    pool = SubjectPool.from_ids([(1, 2), (1, 3), (4, 5), (6, 7), (8,), (9, 10, 11), (1, 2)])

    def pick(p: SubjectPool, seed: int) -> tuple[int, ...]:  # no answers known: any other subject will do
        return pick_replacement(own, p, seed, relation="", answer="x")

    picks = {seed: pick(pool, seed) for seed in range(40)}
    assert all(p in {(4, 5), (6, 7)} for p in picks.values()), picks  # (1, 3) shares a token: not chosen
    assert set(picks.values()) == {(4, 5), (6, 7)}  # the seed decides
    assert all(pick(pool, seed) == p for seed, p in picks.items())  # deterministic
    # with no disjoint candidate, a partly overlapping one of the same length
    assert pick(SubjectPool.from_ids([(1, 2), (1, 3), (8,)]), 0) == (1, 3)
    with pytest.raises(AnalysisInputError, match="no other subject of 2 token"):
        pick(SubjectPool.from_ids([(1, 2), (8,), (3, 4, 5)]), 0)


def test_pick_replacement_skips_a_subject_with_the_same_answer():
    """The only same-length subject differing at every token answers the relation as the sample does
    (whitespace and case aside): replacing with it would corrupt nothing, so the partly overlapping subject
    with another answer is chosen, for every seed."""
    own = (1, 2)
    facts = [((3, 4), "pet", " Rabbit"), ((1, 5), "pet", "dog"), ((3, 4), "birthplace", "Mossgate")]
    pool = SubjectPool.from_ids([(1, 2), (3, 4), (1, 5), (6,)], facts)
    assert pool.answers_to((3, 4), "pet") == {"rabbit"} and pool.answers_to((3, 4), "job") is None
    assert pool.answers_to((3, 4), "") is None
    assert {pick_replacement(own, pool, seed, relation="pet", answer="rabbit") for seed in range(20)} == {(1, 5)}
    # for another relation the disjoint subject answers differently: it is preferred again
    assert pick_replacement(own, pool, 0, relation="birthplace", answer="Oakport") == (3, 4)
    # a known different answer beats a subject whose answer is unknown, even a disjoint one
    with_unknown = SubjectPool.from_ids([(1, 2), (3, 4), (1, 5), (7, 8)], facts)
    assert {pick_replacement(own, with_unknown, s, relation="pet", answer="rabbit") for s in range(20)} == {(1, 5)}
    # an unknown one is taken only when no subject is known to answer differently (never the same answer)
    only_unknown = SubjectPool.from_ids([(1, 2), (3, 4), (7, 8), (1, 9)], facts)
    assert {pick_replacement(own, only_unknown, s, relation="pet", answer="rabbit") for s in range(20)} == {(7, 8)}


def test_pick_replacement_error_when_every_candidate_gives_the_same_answer():
    pool = SubjectPool.from_ids([(1, 2), (3, 4), (1, 5), (6,)],
                                [((3, 4), "pet", "rabbit"), ((1, 5), "pet", "RABBIT"), ((6,), "pet", "dog")])
    with pytest.raises(AnalysisInputError, match=r"every other subject of 2 token\(s\).*\(2\) gives the answer "
                                                 r"'rabbit' to 'pet' too.*use noise corruption"):
        pick_replacement((1, 2), pool, 0, relation="pet", answer="rabbit")


def _study_facts(study: Study, handle) -> dict[tuple[tuple[int, ...], str], set[str]]:
    """(subject token ids, relation) -> the answers the study's samples give, read from the samples."""
    facts: dict[tuple[tuple[int, ...], str], set[str]] = {}
    for s in study.samples():
        if s.subject:
            facts.setdefault((subject_input(handle, s).subject_ids, s.relation), set()).add(s.answer.strip())
    return facts


def test_replacement_answers_differently_for_every_study_sample(small_study):
    """For every forget and retain sample (three seeds), the subject STR puts in its place has a sample of the
    study with the same relation, whose answer is not the sample's (checked on the samples themselves)."""
    handle = small_study.load("original")
    pool = small_study.subject_pool()
    facts = _study_facts(small_study, handle)
    samples = small_study.forget + small_study.retain
    assert samples and all(s.subject and s.relation for s in samples)
    for s in samples:
        inp = subject_input(handle, s)
        for seed in range(3):
            pick = pick_replacement(inp.subject_ids, pool, seed, relation=inp.relation, answer=inp.answer)
            assert len(pick) == len(inp.subject_ids) and pick != inp.subject_ids
            answers = facts.get((pick, s.relation))
            assert answers, f"{s.id}: replacement {pool.texts[pick]!r} has no {s.relation!r} sample"
            assert s.answer.strip() not in answers, (s.id, pool.texts[pick], answers)


def test_pick_replacement_on_the_study_pool(small_study):
    pool = small_study.subject_pool()
    assert len(pool) == sum(1 for s in small_study.samples() if s.subject)
    for own in sorted(set(pool.subjects))[:10]:
        pick = pick_replacement(own, pool, seed=0, relation="", answer="")
        assert len(pick) == len(own) and pick != own and pick in pool.subjects
        disjoint_exists = any(len(c) == len(own) and all(a != b for a, b in zip(c, own, strict=True))
                              for c in pool.subjects)
        if disjoint_exists:
            assert all(a != b for a, b in zip(pick, own, strict=True))


def test_pool_records_answers_per_relation(small_study):
    handle = small_study.load("original")
    pool = small_study.subject_pool()
    for s in small_study.forget:
        assert s.answer.casefold() in pool.answers_to(subject_input(handle, s).subject_ids, s.relation)
    # a sample without a relation is keyed by its prompt with the subject cut out
    s = Sample(id="x", prompt="Ann Bo met Ann Bo in", answer="Rome", subject="Ann Bo")
    assert relation_key(s) == "prompt: Ann Bo met {subject} in"
    assert relation_key(dataclasses.replace(s, relation="meeting")) == "meeting"
    assert relation_key(dataclasses.replace(s, subject="")) == ""


@pytest.fixture
def study_copy(small_study, tmp_path) -> Study:
    root = tmp_path / "demo"
    shutil.copytree(small_study.root, root, ignore=shutil.ignore_patterns("results.sqlite*", "sae"))
    return Study.open(root)


def test_store_keys_of_replacements_follow_answers_and_the_rule(study_copy):
    """Results that replace subjects (tracing's STR, the corrupted EAP-IG baseline) are keyed by what the
    subjects answer and by the replacement rule: a trace stored before this rule is not served, and editing
    another sample's answer recomputes them; noise traces and zero-baseline scores keep their keys."""
    from analysis.circuits.options import EAPOptions
    from analysis.circuits.runner import store_key as eap_key
    from analysis.tracing import TraceOptions
    from analysis.tracing import runner as tracing_runner
    from analysis.tracing.options import STORE_KIND

    st = study_copy
    n_layers = st.load("original").n_layers
    str_opts = TraceOptions(corruption="str", kinds=("resid",)).validated(n_layers)
    noise_opts = TraceOptions(corruption="noise", kinds=("resid",), n_samples=2).validated(n_layers)
    sid = st.forget[0].id
    fp = [st.fingerprint("original")]
    pool = st.subject_pool()
    old_digest = hashlib.sha256(repr((pool.subjects, sorted(pool.texts.items()))).encode()).hexdigest()[:12]
    for opts in (str_opts, noise_opts):  # a stale row stored under the key of the old code
        stale = tracing_runner.trace(st.load("original"), st.sample(sid), pool, opts).to_dict()
        stale["clean"] = -123.0
        st.store.put(STORE_KIND, fp, {**opts.key(), "subjects": old_digest}, stale, sample_id=sid)
    assert tracing_runner.trace_sample(st, "original", sid, str_opts).clean != -123.0  # recomputed
    assert tracing_runner.trace_sample(st, "original", sid, noise_opts).clean == -123.0  # noise: still served
    assert tracing_runner.store_key(st, str_opts)["replacement_rule"] == REPLACEMENT_RULE

    before = {"str": tracing_runner.store_key(st, str_opts), "noise": tracing_runner.store_key(st, noise_opts),
              "corrupted": eap_key(st, EAPOptions(baseline="corrupted")), "zero": eap_key(st, EAPOptions())}
    path = st.root / st.manifest.samples["retain"]
    lines = path.read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace(f'"answer": "{st.retain[0].answer}"', '"answer": "Elsewhere"', 1)
    assert "Elsewhere" in lines[0]
    path.write_text("".join(lines))
    after = {"str": tracing_runner.store_key(st, str_opts), "noise": tracing_runner.store_key(st, noise_opts),
             "corrupted": eap_key(st, EAPOptions(baseline="corrupted")), "zero": eap_key(st, EAPOptions())}
    assert after["str"] != before["str"] and after["corrupted"] != before["corrupted"]
    assert after["noise"] == before["noise"] and after["zero"] == before["zero"]


def test_study_subject_pool_is_cached_per_study(small_study):
    pool = small_study.subject_pool()
    assert small_study.subject_pool() is pool
    tok = small_study.load("original").tokenizer
    assert pool == SubjectPool.from_samples(tok, small_study.samples())
    again = Study.open(small_study.root)  # another Study object builds its own (no module-level cache)
    other = again.subject_pool()
    assert other is not pool and other == pool and again.subject_pool() is other


def test_study_comparison_names(small_study):
    assert small_study.manifest.retrain == "retrain"
    cmp = small_study.comparison("npo")
    assert cmp == Comparison(original="original", model="npo", reference="retrain")
    assert cmp.names == ["original", "npo", "retrain"]
    assert small_study.comparison("retrain").names == ["original", "retrain"]
    assert small_study.comparison("original").names == ["original", "retrain"]  # judging the original itself
    with pytest.raises(StudyError, match="unknown model 'nope'"):
        small_study.comparison("nope")
    no_retrain = Study(small_study.root, dataclasses.replace(small_study.manifest, retrain=None))
    assert no_retrain.comparison("npo") == Comparison("original", "npo", None)
    assert no_retrain.comparison("npo").names == ["original", "npo"]
