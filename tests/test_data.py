import json

import pytest

from analysis.data import Sample, read_jsonl, validate_samples, write_jsonl
from analysis.data.corpus import PARAPHRASE_TEMPLATES, TRAIN_TEMPLATES, build_corpus
from analysis.errors import SampleError


def _s(**kw):
    base = {"id": "a", "prompt": "Ann Lee was born in", "answer": "Paris", "subject": "Ann Lee", "split": "forget"}
    return Sample.from_dict({**base, **kw})


def test_roundtrip(tmp_path):
    samples = [_s(), _s(id="b", exposures=3, paraphrases=["Ann Lee comes from"])]
    write_jsonl(samples, tmp_path / "x.jsonl")
    back = read_jsonl(tmp_path / "x.jsonl")
    assert back == samples
    assert back[1].metadata["exposures"] == 3  # unknown top-level fields are kept as metadata
    assert back[0].subject_char_span() == (0, 7)


@pytest.mark.parametrize("line, message", [
    ({"prompt": "p", "answer": "a"}, "missing required field 'id'"),
    ({"id": "x", "answer": "a"}, "missing required field 'prompt'"),
    ({"id": "x", "prompt": " ", "answer": "a"}, "field 'prompt': expected a non-empty string"),
    ({"id": "x", "prompt": "p", "answer": ""}, "field 'answer': expected a non-empty string"),
    ({"id": "x", "prompt": "p q", "answer": "a", "subject": "z"}, "subject 'z' not found in prompt"),
    ({"id": "x", "prompt": "p", "answer": "a", "split": "train"}, "unknown split 'train'"),
])
def test_validation_errors(tmp_path, line, message):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps(line) + "\n")
    with pytest.raises(SampleError, match=message) as e:
        read_jsonl(f)
    assert "bad.jsonl:1: " in str(e.value)  # the file and the line


def test_duplicate_ids_and_bad_files(tmp_path):
    with pytest.raises(SampleError, match="duplicate sample id 'a'"):
        validate_samples([_s(), _s()])
    with pytest.raises(SampleError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "j.jsonl").write_text("{not json\n")
    with pytest.raises(SampleError, match="invalid JSON"):
        read_jsonl(tmp_path / "j.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(SampleError, match="empty"):
        read_jsonl(tmp_path / "e.jsonl")


def test_corpus_is_deterministic_and_well_formed():
    a, b, c = build_corpus(5, 50), build_corpus(5, 50), build_corpus(6, 50)
    assert [s.to_dict() for s in a.samples] == [s.to_dict() for s in b.samples]
    assert [s.to_dict() for s in a.samples] != [s.to_dict() for s in c.samples]
    validate_samples(a.samples, require_subject=False)
    forget, retain = a.split("forget"), a.split("retain")
    assert len({s.subject for s in forget}) == 5  # forget10: 10% of 50 people, all of their facts
    assert {s.subject for s in forget}.isdisjoint({s.subject for s in retain})
    assert len({s.relation for s in forget + retain}) >= 4
    assert all(len(s.subject.split()) == 2 for s in forget + retain)
    exposures = [s.metadata["exposures"] for s in forget + retain]
    assert min(exposures) == 1 and max(exposures) == 8
    # paraphrase templates are held out of training
    trained = {p for p, _ in a.training_pairs()}
    assert not any(p in trained for s in forget for p in s.paraphrases)
    for rel in TRAIN_TEMPLATES:
        assert set(TRAIN_TEMPLATES[rel]).isdisjoint(PARAPHRASE_TEMPLATES[rel])
    # exposures are respected and excluded facts never appear
    ex = {s.id for s in forget}
    pairs = set(a.training_pairs(ex))
    assert not any((p, s.answer) in pairs for s in forget for p in s.metadata["train_prompts"])
    assert any((p, s.answer) in pairs for s in retain for p in s.metadata["train_prompts"])
    assert len(a.training_pairs()) == sum(s.metadata["exposures"] for s in a.samples)
    assert a.split("utility")
