import json
import shutil

import pytest

from analysis.demo import DEMO_MODELS, build_demo
from analysis.errors import SampleError, StudyError
from analysis.evaluation import evaluate_study
from analysis.organism.tokenizer import build_tokenizer
from analysis.study import Study

from .conftest import SMALL_PEOPLE, SMALL_STEPS, SMALL_UNLEARN_STEPS


def test_demo_has_every_model(small_study):
    from analysis.zoo import zoo_members

    zoo = [n for n in zoo_members(small_study) if n not in DEMO_MODELS]  # the zoo's own models come last
    assert len(zoo) >= 7 and small_study.all_model_names[:len(DEMO_MODELS) + 1 + len(zoo)] == ["original", *DEMO_MODELS, *zoo]
    assert small_study.model_names == ["original", *DEMO_MODELS]  # the zoo is the ruler, not a model under study
    assert small_study.manifest.retrain == "retrain"
    assert small_study.entry("retrain").role == "control" and small_study.entry("npo").role == "unlearned"
    assert len({small_study.fingerprint(n) for n in small_study.model_names}) == len(small_study.model_names)


def test_scoreboard_ground_truth(small_study):
    board = evaluate_study(small_study)
    orig = board["original"]
    assert orig.forget_acc >= 0.95 and orig.retain_acc >= 0.95
    assert board["retrain"].forget_acc <= 0.5  # never saw the forget facts: near chance on them
    assert board["retrain"].retain_acc >= 0.9
    assert board["retrain"].forget_quality is None
    for name in ("grad_ascent", "grad_diff", "npo", "simnpo", "rmu", "readout_suppression"):
        assert board[name].forget_acc < orig.forget_acc - 0.3, name
        assert 0.0 <= board[name].forget_quality <= 1.0
    # the retrain control is the reference: the original is far from it
    assert board["original"].forget_quality < 0.05


def test_demo_is_idempotent(small_study):
    before = {n: small_study.fingerprint(n) for n in small_study.model_names}
    study, timings = build_demo(small_study.root, seed=0, n_people=SMALL_PEOPLE, organism_steps=SMALL_STEPS,
                                unlearn_steps=SMALL_UNLEARN_STEPS, evaluate=False)
    assert set(timings) == {"total"}  # nothing rebuilt
    assert {n: study.fingerprint(n) for n in study.model_names} == before
    with pytest.raises(ValueError, match="built with seed 0"):
        build_demo(small_study.root, seed=1, n_people=SMALL_PEOPLE)


def test_eval_is_cached_in_store(small_study):
    evaluate_study(small_study, ["original"])
    kinds = dict(small_study.store.kinds())
    assert kinds.get("eval", 0) >= 1


def test_create_study_from_checkpoints(small_study, tmp_path):
    root = small_study.root
    s = Study.create(tmp_path / "mine", original=small_study.model_path("original"),
                     unlearned={"npo": small_study.model_path("npo"), "rt": small_study.model_path("retrain")},
                     forget=root / "samples/forget.jsonl", retain=root / "samples/retain.jsonl", retrain="rt")
    again = Study.open(s.root)
    assert again.model_names == ["original", "npo", "rt"]
    assert again.entry("rt").role == "control" and len(again.forget) == len(small_study.forget)
    board = evaluate_study(again)
    assert board["rt"].forget_quality is None and board["npo"].forget_quality is not None


def test_create_study_bad_inputs(small_study, tmp_path):
    root = small_study.root
    kw = dict(original=small_study.model_path("original"), forget=root / "samples/forget.jsonl",
              retain=root / "samples/retain.jsonl")
    with pytest.raises(SampleError, match="sample file not found"):
        Study.create(tmp_path / "a", **{**kw, "forget": tmp_path / "nope.jsonl"}, unlearned={})
    with pytest.raises(StudyError, match="retrain model 'x' is not among"):
        Study.create(tmp_path / "b", **kw, unlearned={}, retrain="x")
    # sample ids that do not match: the same id in forget and retain
    clash = tmp_path / "clash.jsonl"
    rows = [json.loads(line) for line in (root / "samples/forget.jsonl").read_text().splitlines()]
    clash.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n")
    with pytest.raises(SampleError, match="duplicate sample id"):
        Study.create(tmp_path / "c", **{**kw, "retain": clash}, unlearned={})
    # a model with another tokenizer
    other = tmp_path / "other_tok"
    shutil.copytree(small_study.model_path("npo"), other)
    build_tokenizer(["completely", "different", "words"]).save_pretrained(str(other))
    with pytest.raises(StudyError, match="different tokenizer"):
        Study.create(tmp_path / "d", **kw, unlearned={"bad": other})
    with pytest.raises(StudyError, match="unknown model 'nope'"):
        small_study.entry("nope")
    with pytest.raises(StudyError, match="unknown sample id"):
        small_study.sample("p9999-pet")
    with pytest.raises(StudyError, match="not a study"):
        Study.open(tmp_path)
