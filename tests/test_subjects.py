"""analysis.subjects (where a prompt's subject is, the study's subject pool, symmetric token replacement's
choice) and the Study's cached pool and model comparisons."""

from __future__ import annotations

import dataclasses

import pytest

from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError, StudyError
from analysis.study import Comparison, Study
from analysis.subjects import SubjectPool, pick_replacement, subject_input, subject_token_range, token_strings


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
    picks = {seed: pick_replacement(own, pool, seed) for seed in range(40)}
    assert all(p in {(4, 5), (6, 7)} for p in picks.values()), picks  # (1, 3) shares a token: not chosen
    assert set(picks.values()) == {(4, 5), (6, 7)}  # the seed decides
    assert all(pick_replacement(own, pool, seed) == p for seed, p in picks.items())  # deterministic
    # with no disjoint candidate, a partly overlapping one of the same length
    assert pick_replacement(own, SubjectPool.from_ids([(1, 2), (1, 3), (8,)]), 0) == (1, 3)
    with pytest.raises(AnalysisInputError, match="no other subject of 2 token"):
        pick_replacement(own, SubjectPool.from_ids([(1, 2), (8,), (3, 4, 5)]), 0)


def test_pick_replacement_on_the_study_pool(small_study):
    pool = small_study.subject_pool()
    assert len(pool) == sum(1 for s in small_study.samples() if s.subject)
    for own in sorted(set(pool.subjects))[:10]:
        pick = pick_replacement(own, pool, seed=0)
        assert len(pick) == len(own) and pick != own and pick in pool.subjects
        disjoint_exists = any(len(c) == len(own) and all(a != b for a, b in zip(c, own, strict=True))
                              for c in pool.subjects)
        if disjoint_exists:
            assert all(a != b for a, b in zip(pick, own, strict=True))


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
