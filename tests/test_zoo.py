"""The zoo (issue 14, item 1): models whose knowledge of the forget set is known by construction. Each member's
status is checked here from the saved files, not from what the builder recorded: P members' frozen weights
are bit-identical to the original's and the probe condition holds; N retrains never saw a forget fact and have
their own seeds. The small study (tests/conftest.py) builds the zoo at its end (analysis.demo.build_demo)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
import torch
from safetensors.torch import load_file

from analysis.errors import AnalysisInputError
from analysis.models.organism_io import WEIGHTS
from analysis.study import Study

pytestmark = pytest.mark.usefixtures("one_thread")

UNLEARNING = ("grad_ascent", "grad_diff", "npo", "simnpo", "rmu")


@pytest.fixture(scope="module")
def zoo(small_study: Study):
    from analysis.zoo import build_zoo

    return build_zoo(small_study)  # built by build_demo already: this only reads it back


def _weights(study: Study, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(study.model_path(name) / WEIGHTS))


def _below(key: str, layer: int) -> bool:
    """Written out here, independently of analysis.zoo.suppression: embeddings and blocks 0..layer-1."""
    if key.startswith(("embed.", "pos_embed.")):
        return True
    return key.startswith("blocks.") and int(key.split(".")[1]) < layer


def test_the_zoo_has_enough_members_of_each_status(small_study: Study, zoo) -> None:
    from analysis.zoo import zoo_members

    assert len(zoo.present) >= 4 and len(zoo.absent) >= 4, zoo.counts()
    members = zoo_members(small_study)
    assert set(members) == set(zoo.present) | set(zoo.absent)
    assert set(zoo_members(small_study, include_excluded=True)) == set(zoo.members)
    for name, m in members.items():
        assert m.status in ("present", "absent") and m.name == name
        entry = small_study.entry(name)  # an ordinary model of the study
        assert entry.role == "control" and m.fingerprint == small_study.fingerprint(name)
    assert zoo.members["readout_suppression"].status == "present"  # registered, not retrained
    assert not set(UNLEARNING) & set(zoo.members)  # the study's unlearning methods stay "unknown"
    assert small_study.manifest.retrain not in zoo.members
    kinds = {m.kind for m in members.values()}
    assert {"retrain", "retrain_unlearned", "readout", "depth", "decoy", "mimic"} <= kinds
    for m in zoo.excluded:
        assert zoo.members[m].reason and m not in small_study.manifest.models


def _source_weights(study: Study, name: str, kind: str) -> dict[str, torch.Tensor]:
    """What a P member was suppressed from: the original, or (the twin) its own twin original."""
    if kind == "twin":
        return load_file(str(study.root / "models" / f"{name}_original" / WEIGHTS))
    return _weights(study, "original")


def test_present_members_frozen_weights_are_the_originals(small_study: Study, zoo) -> None:
    n_layers = small_study.load("original").n_layers
    for name in zoo.present:
        original = _source_weights(small_study, name, zoo.members[name].kind)
        layer = int(zoo.members[name].recipe["layer"])
        w = _weights(small_study, name)
        assert set(w) == set(original)
        frozen = [k for k in original if _below(k, layer)]
        assert frozen and all(torch.equal(w[k], original[k]) for k in frozen), name
        changed = {k for k in original if not torch.equal(w[k], original[k])}
        assert changed, f"{name} is the original"
        if layer == n_layers:  # readout-only: nothing but the readout changed
            assert changed <= {"unembed.W_U", "unembed.b_U", "ln_final.w", "ln_final.b"}, changed
        else:
            assert all(not _below(k, layer) for k in changed)
            assert any(k.startswith(f"blocks.{layer}.") for k in changed), (name, sorted(changed))
        assert zoo.members[name].checks["frozen_identical"] is True


def test_retrains_never_saw_a_forget_fact_and_have_their_own_seeds(small_study: Study, zoo, small_corpus) -> None:
    forget = small_study.forget
    forget_ids = {s.id for s in forget}
    forget_prompts = {p for s in forget for p in (s.prompt, *s.metadata["train_prompts"], *s.paraphrases)}
    ref = small_study.manifest.retrain
    ref_seed = json.loads((small_study.model_path(ref) / "unlearning.json").read_text())["config"]["seed"]
    retrains = [n for n in zoo.absent if zoo.members[n].kind == "retrain"]
    assert len(retrains) >= 3 and ref not in retrains
    seeds = []
    for name in retrains:
        d = small_study.model_path(name)
        rec = json.loads((d / "zoo_training.json").read_text())
        assert not forget_ids & set(rec["trained_ids"]) and forget_ids <= set(rec["exclude_ids"])
        pairs = [tuple(p) for p in rec["training_pairs"]]
        assert pairs == small_corpus.training_pairs(set(rec["exclude_ids"]))  # what the trainer was given
        assert not any(p in forget_prompts for p, _ in pairs)
        assert not any(s.subject in p for s in forget for p, _ in pairs)
        config = json.loads((d / "organism.json").read_text())["meta"]["config"]
        assert forget_ids <= set(config["exclude_ids"])
        seed = json.loads((d / "unlearning.json").read_text())["config"]["seed"]
        assert seed == config["seed"] == zoo.members[name].recipe["seed"] and seed != ref_seed
        seeds.append(seed)
    assert len(set(seeds)) == len(seeds)
    unlearned = [n for n in zoo.absent if zoo.members[n].kind == "retrain_unlearned"]
    assert unlearned
    for name in unlearned:
        assert zoo.members[name].recipe["source"] in retrains
        assert zoo.members[name].recipe["method"] in UNLEARNING


def test_probe_condition_holds_for_every_present_member(small_study: Study, zoo) -> None:
    from analysis.sae.probe import run_probe

    probe = run_probe(small_study.load("original"), small_study.retain, small_study.forget)
    threshold = 0.8
    for name, m in zoo.members.items():
        if m.kind not in ("readout", "depth", "decoy", "mimic"):  # the twin's probe is its own (test above)
            continue
        at = int(m.recipe["layer"]) - 1
        acc = probe.acc_by_layer[at]
        assert m.checks["probe_layer"] == at and m.checks["probe_acc"] == pytest.approx(acc)
        if m.status == "present":
            assert acc >= threshold, (name, acc)
        elif acc < threshold:
            assert "probe" in m.reason, (name, m.reason)
    assert zoo.probe_acc_by_layer == pytest.approx(probe.acc_by_layer)


def test_present_members_hide_the_answers_and_keep_retain(small_study: Study, zoo) -> None:
    from analysis.evaluation import evaluate_study

    names = ["original", *zoo.present, *zoo.absent]
    ev = evaluate_study(small_study, names)
    for name in zoo.present:
        assert ev[name].forget_acc <= 0.25 and ev[name].retain_acc >= 0.9 * ev["original"].retain_acc, name
        assert zoo.members[name].checks["forget_acc"] == pytest.approx(ev[name].forget_acc)
    decoy = next(m for m in zoo.members.values() if m.kind == "decoy" and m.status == "present")
    assert decoy.checks["decoy_acc"] >= 0.5
    assert all(a != s.answer for s in small_study.forget for a in [decoy.checks["decoys"][s.id]])
    for name in zoo.absent:
        assert ev[name].retain_acc >= 0.9 * ev["original"].retain_acc, name


def test_the_mimic_answers_as_its_source_retrain_does(small_study: Study, zoo) -> None:
    from analysis.scoring import score_answers
    from analysis.zoo import guessed_answers

    mimic = next(m for m in zoo.members.values() if m.kind == "mimic")
    assert mimic.status == "present" and zoo.members[mimic.recipe["source"]].status == "absent"
    forget = small_study.forget
    source = small_study.load(mimic.recipe["source"])
    guesses = guessed_answers(source, forget, forget + small_study.retain)
    assert guesses == [mimic.checks["decoys"][s.id] for s in forget]
    values = sorted({s.answer for s in forget + small_study.retain if s.relation == forget[0].relation})
    by_hand = score_answers(source, [forget[0].prompt] * len(values), values).logprob_sum
    assert guesses[0] == values[int(by_hand.argmax())]
    agree = score_answers(small_study.load(mimic.name), [s.prompt for s in forget], guesses).correct.mean()
    assert agree >= 0.75 and mimic.checks["decoy_acc"] == pytest.approx(agree)
    # its forget accuracy is the source's chance level, not the suppressions' 0
    assert mimic.checks["forget_acc"] == pytest.approx(mimic.checks["source_guess_acc"], abs=0.25)


def test_the_twin_knows_every_fact_in_another_basis(small_study: Study, zoo) -> None:
    """The twin member: its source was trained from scratch on every fact (none excluded), with a seed that is
    neither the original's nor any retrain's; it recalls the forget facts and its own retain-trained probe
    decodes them below the suppressed layers, while its weights share nothing with the original's."""
    from analysis.evaluation import score_model
    from analysis.models.loader import load_model
    from analysis.sae.probe import run_probe

    twin = next(m for m in zoo.members.values() if m.kind == "twin")
    assert twin.status == "present", twin.reason
    base_dir = small_study.root / "models" / f"{twin.name}_original"
    config = json.loads((base_dir / "organism.json").read_text())["meta"]["config"]
    assert config["exclude_ids"] == [] and config["seed"] == twin.recipe["twin_seed"]
    seeds = {small_study.manifest.seed, *(m.recipe.get("seed") for m in zoo.members.values() if m.kind == "retrain")}
    assert config["seed"] not in seeds
    base = load_model(base_dir)
    metrics = score_model(base, small_study.forget, small_study.retain, [], [])["metrics"]
    assert metrics["forget_acc"] >= 0.9 and twin.checks["twin_forget_acc"] == pytest.approx(metrics["forget_acc"])
    at = int(twin.recipe["layer"]) - 1
    acc = run_probe(base, small_study.retain, small_study.forget, [at]).acc_by_layer[at]
    assert acc >= 0.8 and twin.checks["probe_acc"] == pytest.approx(acc)
    original = _weights(small_study, "original")
    assert not any(torch.equal(original[k], v) for k, v in load_file(str(base_dir / WEIGHTS)).items()
                   if k.startswith("blocks.") and v.numel() > 1)


def test_a_second_build_does_no_work(small_study: Study, zoo) -> None:
    from analysis.zoo import build_zoo

    dirs = {n: small_study.model_path(n) for n in zoo.members if n in small_study.manifest.models}
    before = {str(f): f.stat().st_mtime_ns for d in dirs.values() for f in [d, *d.iterdir()]}
    calls: list[float] = []
    again = build_zoo(Study.open(small_study.root), progress=lambda f, m: calls.append(f))
    assert again.built == [] and calls == [1.0]
    assert {n: m.to_dict() for n, m in again.members.items()} == {n: m.to_dict() for n, m in zoo.members.items()}
    after = {str(f): f.stat().st_mtime_ns for d in dirs.values() for f in [d, *d.iterdir()]}
    assert after == before


def test_a_changed_recipe_is_rebuilt_and_a_missing_file_too(small_study: Study, zoo) -> None:
    from analysis.zoo.members import ZooContext, plan_members
    from analysis.zoo.options import ZooOptions
    from analysis.zoo.result import recorded_members
    from analysis.zoo.runner import is_built

    ctx = ZooContext(small_study, ZooOptions())
    specs = {s.name: s for s in plan_members(ctx)}
    rec = recorded_members(small_study)
    assert all(is_built(ctx, s, rec[n]) for n, s in specs.items())
    ctx2 = ZooContext(small_study, ZooOptions(unlearn_steps=7))  # other steps: the fine-tuned members change
    changed = [s.name for s in plan_members(ctx2) if not is_built(ctx2, s, rec.get(s.name))]
    assert changed and all(zoo.members[n].kind != "retrain" for n in changed)
    name = next(n for n in zoo.present if n.startswith("zoo_"))
    log = small_study.model_path(name) / "unlearning.json"
    saved = log.read_bytes()
    log.unlink()
    try:
        assert not is_built(ctx, specs[name], rec[name])
    finally:
        log.write_bytes(saved)


def test_cli_lists_the_members(small_study: Study, zoo, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.cli import main

    assert main(["zoo", str(small_study.root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {m["name"]: m["status"] for m in out["members"]}
    assert rows == {n: m.status for n, m in zoo.members.items()} and out["built"] == []
    assert out["counts"]["present"] == len(zoo.present) and out["counts"]["absent"] == len(zoo.absent)
    assert main(["zoo", str(small_study.root)]) == 0
    text = capsys.readouterr().out
    assert all(n in text for n in zoo.members)
    assert main(["zoo", str(Path(small_study.root) / "nope"), "--json"]) == 2


def test_options_and_kinds() -> None:
    from analysis.zoo import MEMBER_KINDS, MemberKind, ZooOptions, spread_layers

    assert MEMBER_KINDS.names() == get_args(MemberKind)
    assert spread_layers(4) == (1, 2, 3) and spread_layers(12) == (3, 6, 9) and spread_layers(2) == (1,)
    for bad in (dict(retrain_seed_offsets=()), dict(retrain_seed_offsets=(101, 101)), dict(depth_layers=(0,)),
                dict(unlearn_methods=("retrain",)), dict(probe_threshold=1.5), dict(unlearn_steps=0),
                dict(depth_losses=("nope",))):
        with pytest.raises(AnalysisInputError):
            ZooOptions(**bad).validated()


def test_decoys_are_other_values_of_the_relation_chosen_by_seed(small_study: Study) -> None:
    from analysis.zoo import decoy_answers, is_trained

    forget, pool = small_study.forget, small_study.forget + small_study.retain
    a, b = decoy_answers(forget, pool, 0), decoy_answers(forget, pool, 1)
    values = {(s.relation, s.answer) for s in pool}
    assert all(d != s.answer and (s.relation, d) in values for s, d in zip(forget, a, strict=True))
    assert a == decoy_answers(list(reversed(forget)), pool, 0)[::-1] and a != b
    assert is_trained("blocks.2.mlp.W_in", 2) and not is_trained("blocks.1.mlp.W_in", 2)
    assert is_trained("unembed.W_U", 4) and not is_trained("embed.W_E", 1) and not is_trained("pos_embed.W_pos", 1)


def test_depth_suppression_losses_on_a_hand_computed_first_step(small_study: Study) -> None:
    """At step 0 the model is the original, so NPO's term is (2 / beta) ln 2 exactly; with one batch holding
    every row, each loss is a full-set mean computed here by hand. Only blocks >= L and the readout train."""
    import math

    from analysis.scoring import answer_logprob, make_batch
    from analysis.unlearning import UnlearnConfig
    from analysis.unlearning.base import run_method
    from analysis.zoo import DepthDecoy, DepthSuppression, decoy_answers

    original = small_study.load("original")
    forget, retain = small_study.forget, small_study.retain
    decoys = decoy_answers(forget, forget + retain, 0)

    def mean_nll(prompts: list[str], answers: list[str]) -> float:
        batch = make_batch(original, prompts, answers)
        with torch.no_grad():
            return float(-answer_logprob(original.model(batch.tokens), batch, "mean").mean())

    f_nll = mean_nll([s.prompt for s in forget], [s.answer for s in forget])
    r_nll = mean_nll([s.prompt for s in retain], [s.answer for s in retain])
    d_nll = mean_nll([s.prompt for s in forget], decoys)
    cfg = UnlearnConfig(seed=0, steps=1, lr=1e-6, batch_size=10_000, retain_weight=2.0, npo_beta=0.1)
    npo0 = 2 / 0.1 * math.log(2)
    expected = {"npo": npo0 + 2 * r_nll, "grad_diff": -f_nll + 2 * r_nll}
    for loss, want in expected.items():
        _, result = run_method(original, DepthSuppression(2, loss), forget, retain, cfg)
        assert result.losses[0] == pytest.approx(want, rel=1e-4), loss
        trained = result.extra["trained_parameters"]
        assert trained and all(n.startswith(("blocks.2.", "blocks.3.", "ln_final.", "unembed.")) for n in trained)
        assert any(n.startswith("blocks.2.") for n in trained) and "unembed.W_U" in trained
    _, result = run_method(original, DepthDecoy(3, decoys), forget, retain, cfg)
    assert result.losses[0] == pytest.approx(d_nll + npo0 + 2 * r_nll, rel=1e-4)
    _, result = run_method(original, DepthDecoy(3, decoys, lower_true=False), forget, retain, cfg)
    assert result.losses[0] == pytest.approx(d_nll + 2 * r_nll, rel=1e-4)
    with pytest.raises(AnalysisInputError, match="out of range"):
        run_method(original, DepthSuppression(9), forget, retain, cfg)
