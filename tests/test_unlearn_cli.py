"""`erasure unlearn` on a user's checkpoint and `erasure study add`.

The checkpoint is a tiny Llama (tests/hf_fixtures.py) fine-tuned here with transformers until it gives every
fact of a small set top-1 (forget and retain accuracy 1.0), so that unlearning has something to remove. The
output must load with ``transformers.AutoModelForCausalLM``, reproduce the trained model's logits, have lower
forget accuracy and log-prob, and an interrupted run must resume to the very weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from analysis.cli import main
from analysis.data.schema import Sample, write_jsonl
from tests.hf_fixtures import make_tiny_checkpoint, quiet_progress

pytestmark = pytest.mark.usefixtures("one_thread")

FORGET_FACTS = [("Ada lives in", "Paris"), ("Ben lives in", "Oslo"), ("Cy works as a", "baker"),
                ("Di was born in", "May")]
RETAIN_FACTS = [("Ed lives in", "Rome"), ("Flo lives in", "Lima"), ("Gus works as a", "pilot"),
                ("Hal works as a", "nurse"), ("Ivy was born in", "June"), ("Jo was born in", "July"),
                ("Kit works as a", "judge"), ("Lu lives in", "Kyiv")]
MEMORISE_STEPS = 80
FAST = ["--lr", "1e-3", "--batch-size", "2"]  # a tiny model needs far more than the pretrained preset's 1e-5


def _samples(facts: list[tuple[str, str]], split: str) -> list[Sample]:
    return [Sample(id=f"{split}-{i}", prompt=p, answer=a, split=split) for i, (p, a) in enumerate(facts)]


def memorised_checkpoint(out: Path, seed: int = 0, overrides: dict[str, Any] | None = None) -> Path:
    """A tiny Llama fine-tuned (transformers, Adam) on every fact until each answer is its top-1 continuation,
    with the workbench's own tokens (analysis.scoring.make_batch), saved as a checkpoint in ``out``."""
    from transformers import AutoModelForCausalLM

    from analysis.models import load_model
    from analysis.scoring import answer_correct, answer_logprob, make_batch

    raw = make_tiny_checkpoint("llama", out, seed=seed, config_overrides=overrides)
    handle = load_model(raw, device="cpu", dtype=torch.float32)
    facts = FORGET_FACTS + RETAIN_FACTS
    batch = make_batch(handle, [p for p, _ in facts], [a for _, a in facts])
    with quiet_progress():
        model = AutoModelForCausalLM.from_pretrained(str(raw), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(MEMORISE_STEPS):
        loss = -answer_logprob(model(input_ids=batch.tokens).logits, batch, "mean").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert bool(answer_correct(model(input_ids=batch.tokens).logits, batch).all()), "the facts were not learnt"
    with quiet_progress():
        model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unlearn")
    model = memorised_checkpoint(root / "tiny-llama")
    forget, retain = root / "forget.jsonl", root / "retain.jsonl"
    write_jsonl(_samples(FORGET_FACTS, "forget"), forget)
    write_jsonl(_samples(RETAIN_FACTS, "retain"), retain)
    return {"root": root, "model": model, "forget": forget, "retain": retain}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    """``erasure argv --json``: (exit code, the JSON object or the error line)."""
    capsys.readouterr()
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else err.strip())


def unlearn_argv(tiny: dict[str, Path], out: Path, method: str = "npo", *extra: str) -> list[str]:
    return ["unlearn", str(tiny["model"]), "--method", method, "--forget", str(tiny["forget"]), "--retain",
            str(tiny["retain"]), "--out", str(out), *extra]


def hf_scores(model_dir: Path, samples: list[Sample], like: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean answer log-prob [n], top-1 correct [n]) under ``transformers``' own load of ``model_dir``, on the
    workbench's tokens (of the checkpoint ``like``, default ``model_dir``)."""
    from transformers import AutoModelForCausalLM

    from analysis.models import load_model
    from analysis.scoring import answer_correct, answer_logprob, make_batch

    handle = load_model(like or model_dir, device="cpu", dtype=torch.float32)
    batch = make_batch(handle, [s.prompt for s in samples], [s.answer for s in samples])
    with quiet_progress():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.no_grad():
        logits = model(input_ids=batch.tokens).logits
    return answer_logprob(logits, batch, "mean"), answer_correct(logits, batch)


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest |a - b| over the floating-point tensors of two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


# ---- options and presets (no model) -------------------------------------------------------------------------


def test_method_names_are_the_registry_and_the_presets() -> None:
    from analysis.models.handle import MODEL_ROLES
    from analysis.unlearn.cli import ROLES
    from analysis.unlearn.options import METHODS, CheckpointMethod, UnlearnRunOptions
    from analysis.unlearning import UNLEARNING_METHODS
    from analysis.unlearning.base import PRESET_EPOCHS, PRETRAINED_PRESET

    assert set(get_args(CheckpointMethod)) == set(METHODS) == {*UNLEARNING_METHODS.names(), "depth_suppression"}
    assert set(PRETRAINED_PRESET) == set(METHODS) == set(PRESET_EPOCHS)
    for name in UNLEARNING_METHODS.names():
        opts = UnlearnRunOptions(method=name, base="scratch" if name == "retrain" else None)
        assert opts.role == UNLEARNING_METHODS.get(name).role, name
    assert UnlearnRunOptions(method="depth_suppression").role == "control"
    assert ROLES == MODEL_ROLES


def test_pretrained_preset_values() -> None:
    """open-unlearning's TOFU settings (lr 1e-5, 10 epochs of the forget set, batch 32; retrain: 5 epochs of
    the retain set), steps = epochs x floor(n / batch)."""
    from analysis.errors import AnalysisInputError
    from analysis.unlearning.base import pretrained_config

    npo = pretrained_config("npo", n_forget=40, n_retain=360)
    assert (npo.lr, npo.npo_beta, npo.retain_weight, npo.batch_size, npo.steps) == (1e-5, 0.1, 1.0, 32, 10)
    assert pretrained_config("npo", 40, 360, batch_size=8).steps == 50  # 10 x floor(40 / 8)
    assert pretrained_config("npo", 5, 360).steps == 10  # batches of 5 when the forget set is smaller than 32
    assert pretrained_config("retrain", 40, 360).steps == 55  # 5 x floor(360 / 32)
    simnpo = pretrained_config("simnpo", 40, 360)
    assert (simnpo.simnpo_beta, simnpo.simnpo_gamma, simnpo.retain_weight) == (4.5, 0.0, 8.0)
    rmu = pretrained_config("rmu", 40, 360, lr=3e-5, steps=7)
    assert (rmu.rmu_coeff, rmu.rmu_alpha, rmu.lr, rmu.steps) == (2.0, 1.0, 3e-5, 7)
    assert pretrained_config("npo", 40, 360, lr=None).lr == 1e-5  # None = not given
    with pytest.raises(AnalysisInputError, match="no pretrained preset"):
        pretrained_config("nope", 1, 1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "retrain"}, "needs a base"),
    ({"method": "npo", "base": "scratch"}, "only the retrain control"),
    ({"method": "npo", "layer": 1}, "only depth_suppression and rmu"),
    ({"method": "npo", "depth_loss": "grad_diff"}, "only depth_suppression"),
    ({"method": "nope"}, "unknown method"),
    ({"method": "npo", "lr": 0.0}, "lr must be"),
])
def test_options_refuse_what_does_not_apply(kwargs: dict[str, Any], message: str) -> None:
    from analysis.errors import AnalysisInputError
    from analysis.unlearn.options import UnlearnRunOptions

    with pytest.raises(AnalysisInputError, match=message):
        UnlearnRunOptions(**kwargs).validated()


# ---- the loop's saved state (no export) ------------------------------------------------------------------------


def _interrupt_at(step: int):  # noqa: ANN202 - a ProgressFn
    def progress(frac: float, msg: str) -> None:
        if f"step {step}/" in msg:
            raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("method", ["npo", "rmu"])
def test_resumed_loop_equals_the_uninterrupted_one(tiny: dict[str, Path], tmp_path: Path, method: str) -> None:
    """12 steps saved every 4; interrupted at step 11 (after the state of step 8 was saved), resumed from 8: the
    weights, optimiser-driven trajectory and losses equal an uninterrupted run's (RMU also draws its random
    direction from the restored generator)."""
    from analysis.models import load_model
    from analysis.unlearn.checkpoint import Checkpointer
    from analysis.unlearning import UnlearnConfig, get_method
    from analysis.unlearning.base import run_method

    handle = load_model(tiny["model"], device="cpu", dtype=torch.float32)
    forget, retain = _samples(FORGET_FACTS, "forget"), _samples(RETAIN_FACTS, "retain")
    cfg = UnlearnConfig(steps=12, lr=1e-3, batch_size=3, seed=5)
    whole, res_whole = run_method(handle, get_method(method), forget, retain, cfg)
    ckpt = Checkpointer(tmp_path / "partial", every=4, steps=12)
    with pytest.raises(KeyboardInterrupt):
        run_method(handle, get_method(method), forget, retain, cfg, progress=_interrupt_at(11), checkpoint=ckpt)
    assert ckpt.latest() is not None and ckpt.latest().name == "step-00000008"
    again = Checkpointer(tmp_path / "partial", every=4, steps=12)
    resumed, res_resumed = run_method(handle, get_method(method), forget, retain, cfg, checkpoint=again)
    assert again.resumed_from == 8
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert max_diff(a, b) <= 1e-6
    assert res_resumed.trajectory.shape == res_whole.trajectory.shape == (13, len(forget))
    assert abs(res_resumed.trajectory - res_whole.trajectory).max() <= 1e-9
    assert res_resumed.losses == pytest.approx(res_whole.losses, abs=1e-9)
    assert max_diff(a, handle.model.state_dict()) > 1e-3  # the weights did move: the 1e-6 above is not trivial


def test_frozen_parameters_never_train(tiny: dict[str, Path]) -> None:
    from analysis.models import load_model
    from analysis.unlearning import UnlearnConfig, get_method
    from analysis.unlearning.base import run_method

    handle = load_model(tiny["model"], device="cpu", dtype=torch.float32)
    frozen = [n for n, _ in handle.model.named_parameters() if n.startswith("blocks.0.")]
    trained, res = run_method(handle, get_method("npo"), _samples(FORGET_FACTS, "forget"),
                              _samples(RETAIN_FACTS, "retain"), UnlearnConfig(steps=3, lr=1e-3), frozen=frozen)
    before, after = handle.model.state_dict(), trained.model.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert not torch.equal(before["blocks.1.mlp.W_out"], after["blocks.1.mlp.W_out"])
    assert res.extra["frozen_parameters"] == sorted(frozen)


# ---- `erasure unlearn` end to end -----------------------------------------------------------------------------


def test_unlearn_writes_a_transformers_checkpoint_with_lower_forget_accuracy(
        tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "npo"
    code, run = run_cli(unlearn_argv(tiny, out, "npo", *FAST, "--steps", "30"), capsys)
    assert code == 0, run
    assert {"config.json", "model.safetensors", "tokenizer.json", "unlearning.json", "unlearn_run.json"} <= {
        p.name for p in out.iterdir()}
    assert not (out / ".partial").exists()
    assert run["verification"]["max_abs_logit_diff"] <= 1e-4 and run["resumed_from"] == 0
    forget, retain = _samples(FORGET_FACTS, "forget"), _samples(RETAIN_FACTS, "retain")
    lp0, ok0 = hf_scores(tiny["model"], forget)
    lp1, ok1 = hf_scores(out, forget, like=tiny["model"])
    assert float(ok0.float().mean()) == 1.0 and float(ok1.float().mean()) < 1.0  # forget accuracy dropped
    assert float(lp1.mean()) < float(lp0.mean()) - 1.0  # the forget answers' log-prob fell
    r0, _ = hf_scores(tiny["model"], retain)
    r1, _ = hf_scores(out, retain, like=tiny["model"])
    assert float(r0.mean() - r1.mean()) < float(lp0.mean() - lp1.mean())  # retain fell less than forget
    assert run["after"]["forget"]["accuracy"] == pytest.approx(float(ok1.float().mean()))
    log = json.loads((out / "unlearning.json").read_text())
    assert log["method"] == "npo" and len(log["trajectory"]) == 31 and len(log["trajectory"][0]) == len(forget)
    # the workbench loads it too, with the same logits as transformers
    from transformers import AutoModelForCausalLM

    from analysis.models import load_model
    from analysis.scoring import make_batch

    handle = load_model(out, device="cpu", dtype=torch.float32)
    batch = make_batch(handle, [s.prompt for s in forget], [s.answer for s in forget])
    with quiet_progress(), torch.no_grad():
        hf = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
        diff = (handle.model(batch.tokens, return_type="logits") - hf(input_ids=batch.tokens).logits).abs()
    assert float(diff.max()) <= 1e-4


def test_a_bad_export_is_refused(tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The reload check compares logits for real: an export that gets one tensor wrong is an error."""
    import analysis.models.export as export

    real = export.tl_to_hf_state_dict

    def off_by_a_bit(model: torch.nn.Module, hf_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        state, changes = real(model, hf_dir)
        state = dict(state)
        state["model.norm.weight"] = state["model.norm.weight"] * 1.01
        return state, changes

    monkeypatch.setattr(export, "tl_to_hf_state_dict", off_by_a_bit)
    code, err = run_cli(unlearn_argv(tiny, tmp_path / "bad", "npo", *FAST, "--steps", "2"), capsys)
    assert code == 2 and "does not reproduce the trained model" in err
    assert not (tmp_path / "bad" / "unlearn_run.json").exists()


def test_interrupted_unlearn_resumes_to_the_same_weights(tiny: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.unlearn.options import UnlearnRunOptions
    from analysis.unlearn.runner import unlearn_checkpoint

    args = [*FAST, "--steps", "12", "--checkpoint-every", "4", "--seed", "3"]
    code, whole = run_cli(unlearn_argv(tiny, tmp_path / "whole", "grad_diff", *args), capsys)
    assert code == 0, whole
    out = tmp_path / "cut"
    opts = UnlearnRunOptions(method="grad_diff", lr=1e-3, batch_size=2, steps=12, checkpoint_every=4, seed=3)
    with pytest.raises(KeyboardInterrupt):
        unlearn_checkpoint(tiny["model"], tiny["forget"], tiny["retain"], out, opts, progress=_interrupt_at(11))
    assert (out / ".partial" / "step-00000008").is_dir() and not (out / "config.json").exists()
    code, resumed = run_cli(unlearn_argv(tiny, out, "grad_diff", *args), capsys)
    assert code == 0, resumed
    assert resumed["resumed_from"] == 8 and whole["resumed_from"] == 0
    a, b = weights(tmp_path / "whole"), weights(out)
    assert max_diff(a, b) <= 1e-6
    traj = [np.array(json.loads((d / "unlearning.json").read_text())["trajectory"]) for d in (out, tmp_path / "whole")]
    assert traj[0].shape == traj[1].shape == (13, len(FORGET_FACTS)) and np.abs(traj[0] - traj[1]).max() <= 1e-9
    # a third run with the same arguments finds the run complete and computes nothing
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    code, again = run_cli(unlearn_argv(tiny, out, "grad_diff", *args), capsys)
    assert code == 0 and again["reused"] and (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_unlearn_refuses_an_out_that_is_not_its_own(tiny: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.unlearn.options import UnlearnRunOptions
    from analysis.unlearn.runner import unlearn_checkpoint

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    code, err = run_cli(unlearn_argv(tiny, busy, "npo", *FAST, "--steps", "2"), capsys)
    assert code == 2 and "is not empty" in err and err.count("\n") == 0
    out = tmp_path / "partial"
    opts = UnlearnRunOptions(method="npo", lr=1e-3, batch_size=2, steps=6, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        unlearn_checkpoint(tiny["model"], tiny["forget"], tiny["retain"], out, opts, progress=_interrupt_at(6))
    code, err = run_cli(unlearn_argv(tiny, out, "npo", *FAST, "--steps", "6", "--seed", "1"), capsys)
    assert code == 2 and "other arguments" in err and "config.seed" in err
    code, run = run_cli(unlearn_argv(tiny, out, "npo", *FAST, "--steps", "6", "--seed", "1", "--restart"), capsys)
    assert code == 0 and run["resumed_from"] == 0 and run["config"]["seed"] == 1
    code, err = run_cli(unlearn_argv(tiny, out, "npo", *FAST, "--steps", "7"), capsys)
    assert code == 2 and "another complete run" in err


@pytest.mark.parametrize("method", ["grad_ascent", "grad_diff", "npo", "simnpo", "rmu", "readout_suppression",
                                    "retrain", "depth_suppression"])
def test_every_method_runs_on_a_checkpoint(tiny: dict[str, Path], tmp_path: Path, method: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Two steps of each method (retrain from a seeded random init): a checkpoint transformers loads, whose
    saved weights differ from the source's exactly where the method trains."""
    extra = {"retrain": ["--base", "scratch"], "depth_suppression": ["--layer", "1"], "rmu": ["--layer", "1"]}
    code, run = run_cli(unlearn_argv(tiny, tmp_path / method, method, *FAST, "--steps", "2",
                                     *extra.get(method, [])), capsys)
    assert code == 0, run
    assert run["verification"]["max_abs_logit_diff"] <= 1e-4
    before, after = weights(tiny["model"]), weights(tmp_path / method)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if method == "readout_suppression":
        assert changed == {"lm_head.weight"}
    elif method == "depth_suppression":  # blocks >= 1 and the readout; embeddings and block 0 kept
        assert changed and all(k.startswith(("model.layers.1.", "model.norm.", "lm_head.")) for k in changed)
    elif method == "rmu":  # MLPs of layers l-2..l (here 0 and 1)
        assert changed and all(".mlp." in k for k in changed)
    else:
        assert "model.embed_tokens.weight" in changed
    assert run["role"] == ("control" if method in ("readout_suppression", "retrain", "depth_suppression")
                           else "unlearned")


def test_readout_suppression_unties_tied_embeddings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint with tied input/output embeddings: the readout control changes the unembedding alone, so the
    saved checkpoint unties them (config) and keeps the input embedding the original's."""
    model = memorised_checkpoint(tmp_path / "tiny-llama-tied", overrides={"tie_word_embeddings": True})
    forget, retain = tmp_path / "f.jsonl", tmp_path / "r.jsonl"
    write_jsonl(_samples(FORGET_FACTS, "forget"), forget)
    write_jsonl(_samples(RETAIN_FACTS, "retain"), retain)
    out = tmp_path / "readout"
    code, run = run_cli(["unlearn", str(model), "--method", "readout_suppression", "--forget", str(forget),
                         "--retain", str(retain), "--out", str(out), *FAST, "--steps", "3"], capsys)
    assert code == 0, run
    assert json.loads((model / "config.json").read_text()).get("tie_word_embeddings") is True
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    saved = weights(out)
    emb = weights(model)["model.embed_tokens.weight"]
    assert torch.equal(saved["model.embed_tokens.weight"], emb)
    assert not torch.equal(saved["lm_head.weight"], emb)
    assert run["verification"]["max_abs_logit_diff"] <= 1e-4


def test_retrain_from_a_base_checkpoint(tiny: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The retrain control from a base that never saw the facts (a tiny Llama of another seed, same tokenizer):
    fine-tuned on the retain set only, its retain log-prob rises and it is recorded as a control."""
    base = make_tiny_checkpoint("llama", tmp_path / "tiny-llama-base", seed=7)
    out = tmp_path / "retrain"
    code, run = run_cli(unlearn_argv(tiny, out, "retrain", "--base", str(base), *FAST, "--steps", "20"), capsys)
    assert code == 0, run
    assert run["role"] == "control" and run["base"] == str(base.resolve())
    assert run["after"]["retain"]["logprob"] > run["before"]["retain"]["logprob"] + 0.5
    assert run["before"]["forget"]["accuracy"] == 0.0  # the base never knew the forget facts
    other_tok = make_tiny_checkpoint("llama", tmp_path / "tiny-llama-othertok", tokenizer_variant=1)
    code, err = run_cli(unlearn_argv(tiny, tmp_path / "r2", "retrain", "--base", str(other_tok), "--steps", "1"),
                        capsys)
    assert code == 2 and "different tokenizer" in err and not (tmp_path / "r2").exists()  # refused before writing


def test_unlearn_reads_a_tofu_style_forget_file(tiny: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Sample files in the formats `erasure study create` reads: a TOFU-style question/answer file, wrapped in a
    prompt template, with our JSONL as the retain file."""
    tofu = tmp_path / "forget10.json"
    tofu.write_text("\n".join(json.dumps({"question": q, "answer": a}) for q, a in FORGET_FACTS) + "\n")
    out = tmp_path / "tofu"
    code, run = run_cli(["unlearn", str(tiny["model"]), "--method", "npo", "--forget", str(tofu), "--retain",
                         str(tiny["retain"]), "--out", str(out), "--prompt-template", "Q: {}\\nA:", *FAST,
                         "--steps", "2"], capsys)
    assert code == 0, run
    assert run["before"]["forget"]["n"] == len(FORGET_FACTS)
    log = json.loads((out / "unlearning.json").read_text())
    assert log["forget_ids"] == [f"forget-{i}" for i in range(len(FORGET_FACTS))]


# ---- `erasure study add` ---------------------------------------------------------------------------------------


def test_study_add_registers_the_unlearned_checkpoint(tiny: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.study import Study
    from analysis.unlearning.log import read_unlearning_log

    out = tmp_path / "npo"
    code, _ = run_cli(unlearn_argv(tiny, out, "npo", *FAST, "--steps", "5"), capsys)
    assert code == 0
    study_dir = tmp_path / "study"
    Study.create(study_dir, original=tiny["model"], unlearned={}, forget=tiny["forget"], retain=tiny["retain"])
    code, rec = run_cli(["study", "add", str(study_dir), f"my_npo={out}"], capsys)
    assert code == 0, rec
    assert (rec["role"], rec["method"], rec["reference"]) == ("unlearned", "npo", False)
    study = Study.open(study_dir)
    assert study.entry("my_npo").role == "unlearned" and "my_npo" in study.unlearned_names
    assert study.load("my_npo").n_layers == 2
    log = read_unlearning_log(study, "my_npo")
    assert log is not None and len(log["trajectory"]) == 6
    code, err = run_cli(["study", "add", str(study_dir), f"my_npo={out}"], capsys)
    assert code == 2 and "already has a model named 'my_npo'" in err
    # a control as the study's reference retrain
    code, rec = run_cli(["study", "add", str(study_dir), f"ref={out}", "--role", "control", "--reference"], capsys)
    assert code == 0 and rec["reference"] and Study.open(study_dir).manifest.retrain == "ref"
    other = make_tiny_checkpoint("llama", tmp_path / "tiny-llama-othertok", tokenizer_variant=1)
    code, err = run_cli(["study", "add", str(study_dir), f"odd={other}"], capsys)
    assert code == 2 and "different tokenizer" in err
    code, err = run_cli(["study", "add", str(study_dir), "no-equals-sign"], capsys)
    assert code == 2 and "NAME=DIR" in err


def test_unlearn_parser_is_light() -> None:
    """`erasure unlearn --help` builds without torch (the verb's module and options import no engine)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    cmd = ("import sys; from analysis.cli import main\n"
           "try:\n    main(['unlearn', '--help'])\nexcept SystemExit:\n    pass\n"
           "print('torch' in sys.modules, 'transformers' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", cmd], capture_output=True, text=True, cwd=root, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert res.stdout.strip().splitlines()[-1] == "False False", res.stderr
