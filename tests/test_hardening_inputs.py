"""Issue 18, bad inputs: every manifest, sample and organism-config field is validated on read with a message
naming the file and the field, and no path built from a manifest value leaves the study."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from analysis.cli import main
from analysis.data import read_jsonl
from analysis.data.schema import MAX_PROMPT_CHARS
from analysis.errors import ModelLoadError, SampleError, StudyError
from analysis.models import load_model
from analysis.names import is_safe_name
from analysis.study import Study

GOOD = {"id": "a", "prompt": "Ann Lee was born in", "answer": "Paris", "subject": "Ann Lee"}


def _line(**kw: Any) -> str:
    return json.dumps({**GOOD, "id": "b", **kw})


def _deep(n: int) -> str:
    return '{"id": "b", "prompt": "p", "answer": "a", "metadata": {"x": ' + "[" * n + "]" * n + "}}"


# (case, the second line of the file, what the message must name besides the file and line 2)
SAMPLE_CASES = [
    ("prompt null", _line(prompt=None), "'prompt'"),
    ("prompt a number", _line(prompt=5), "'prompt'"),
    ("answer a list", _line(answer=["Paris"]), "'answer'"),
    ("subject a number", _line(subject=3), "'subject'"),
    ("id a number", _line(id=7), "'id'"),
    ("id null", _line(id=None), "'id'"),
    ("relation an object", _line(relation={"r": 1}), "'relation'"),
    ("split a number", _line(split=3), "'split'"),
    ("paraphrases a number", _line(paraphrases=3), "'paraphrases'"),
    ("paraphrases with a non-string", _line(paraphrases=["Ann Lee comes from", 5]), "'paraphrases[1]'"),
    ("metadata a list", _line(metadata=[["exposures", 3]]), "'metadata'"),
    ("exposures a string", _line(exposures="many"), "'exposures'"),
    ("exposures a float", _line(metadata={"exposures": 2.5}), "'exposures'"),
    ("exposures negative", _line(exposures=-1), "'exposures'"),
    ("train_prompts a string list with a number", _line(metadata={"train_prompts": ["x", 1]}),
     "'train_prompts[1]'"),
    ("metadata nested too deep", _deep(100), "'metadata'"),
    ("very deeply nested line", _deep(100_000), "nested too deeply"),
    ("metadata with NaN", '{"id": "b", "prompt": "p", "answer": "a", "metadata": {"x": NaN}}', "NaN"),
    ("line not an object", "[1, 2, 3]", "expected a JSON object"),
    ("line a string", '"hello"', "expected a JSON object"),
    ("empty prompt", _line(prompt="   "), "'prompt'"),
    ("empty answer", _line(answer=""), "'answer'"),
    ("prompt of 20,000 characters", _line(prompt="x " * 10_000, subject=""), "'prompt'"),
    ("duplicate id", _line(id="a"), "'id'"),
]


@pytest.mark.parametrize("line, field", [c[1:] for c in SAMPLE_CASES], ids=[c[0] for c in SAMPLE_CASES])
def test_bad_sample_line(tmp_path: Path, line: str, field: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    with pytest.raises(SampleError) as e:
        read_jsonl(f)
    msg = str(e.value)
    assert "bad.jsonl:2" in msg and field in msg and "\n" not in msg, msg
    assert "expected" in msg or "invalid JSON" in msg, msg


def test_max_prompt_chars_is_sane() -> None:
    assert 1_000 <= MAX_PROMPT_CHARS < 20_000


def test_non_utf8_sample_file(tmp_path: Path) -> None:
    f = tmp_path / "latin.jsonl"
    f.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"id": "b", "prompt": "caf\xe9", "answer": "x"}\n')
    with pytest.raises(SampleError, match="latin.jsonl.*UTF-8"):
        read_jsonl(f)


# ---- study.json --------------------------------------------------------------------------------------------
def _light_copy(study: Study, dest: Path) -> Path:
    """study.json and the samples (no models: Study.open never loads one)."""
    dest.mkdir()
    shutil.copy(study.root / "study.json", dest / "study.json")
    shutil.copytree(study.root / "samples", dest / "samples")
    return dest


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def edit(d: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[p]
        node[last] = value
        return d
    return edit


def _rename_model(new: str) -> Callable[[dict[str, Any]], Any]:
    def edit(d: dict[str, Any]) -> Any:
        d["models"][new] = d["models"].pop("npo")
        return d
    return edit


# (case, edit of the manifest dict (returns the new JSON value), what the message must name)
MANIFEST_CASES = [
    ("not an object", lambda d: list(d), "expected a JSON object"),
    ("models not an object", _set("models", ["original"]), "'models'"),
    ("a model entry not an object", _set("models.npo", "models/npo"), "'models.npo'"),
    ("path a number", _set("models.npo.path", 5), "'models.npo.path'"),
    ("path escaping the study", _set("models.npo.path", "../../elsewhere"), "'models.npo.path'"),
    ("role a list", _set("models.npo.role", ["unlearned"]), "'models.npo.role'"),
    ("unknown role", _set("models.npo.role", "boss"), "'models.npo.role'"),
    ("method a number", _set("models.npo.method", 3), "'models.npo.method'"),
    ("model name with a slash", _rename_model("a/b"), "'models'"),
    ("model name ..", _rename_model(".."), "'models'"),
    ("model name starting with a dot", _rename_model(".hidden"), "'models'"),
    ("model name with ../", _rename_model("../../x"), "'models'"),
    ("samples a list", _set("samples", ["samples/forget.jsonl"]), "'samples'"),
    ("samples an unknown split", _set("samples.train", "samples/forget.jsonl"), "'samples'"),
    ("sample path a number", _set("samples.forget", 3), "'samples.forget'"),
    ("sample path absolute", _set("samples.forget", "/etc/hostname"), "'samples.forget'"),
    ("sample path with ..", _set("samples.forget", "../outside.jsonl"), "'samples.forget'"),
    ("retrain an unknown model", _set("retrain", "ghost"), "'retrain'"),
    ("retrain a number", _set("retrain", 1), "'retrain'"),
    ("seed a string", _set("seed", "0"), "'seed'"),
    ("extra a list", _set("extra", []), "'extra'"),
    ("name a number", _set("name", 5), "'name'"),
]


@pytest.mark.parametrize("edit, field", [c[1:] for c in MANIFEST_CASES], ids=[c[0] for c in MANIFEST_CASES])
def test_bad_manifest(small_study: Study, tmp_path: Path, edit: Callable[[dict[str, Any]], Any],
                      field: str) -> None:
    root = _light_copy(small_study, tmp_path / "s")
    (root / "study.json").write_text(json.dumps(edit(json.loads((root / "study.json").read_text()))))
    with pytest.raises(StudyError) as e:
        Study.open(root)
    msg = str(e.value)
    assert "study.json" in msg and field in msg and "expected" in msg and "\n" not in msg, msg


def test_bad_manifest_through_the_cli(small_study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    root = _light_copy(small_study, tmp_path / "s")
    (root / "study.json").write_text(json.dumps(_set("models.npo.role", "boss")(
        json.loads((root / "study.json").read_text()))))
    assert main(["eval", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "study.json" in err and "'models.npo.role'" in err, err


def test_manifest_deeply_nested_or_not_utf8(small_study: Study, tmp_path: Path) -> None:
    root = _light_copy(small_study, tmp_path / "s")
    (root / "study.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(StudyError, match="study.json"):
        Study.open(root)
    (root / "study.json").write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(StudyError, match="study.json"):
        Study.open(root)


def test_sample_file_symlinked_out_of_the_study(small_study: Study, tmp_path: Path) -> None:
    root = _light_copy(small_study, tmp_path / "s")
    outside = tmp_path / "outside.jsonl"
    shutil.move(root / "samples" / "forget.jsonl", outside)
    (root / "samples" / "forget.jsonl").symlink_to(outside)
    with pytest.raises(StudyError, match="samples.forget.*outside the study"):
        Study.open(root)


def test_bad_sample_in_a_study_names_the_file(small_study: Study, tmp_path: Path) -> None:
    root = _light_copy(small_study, tmp_path / "s")
    f = root / "samples" / "retain.jsonl"
    lines = f.read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), "paraphrases": 3})
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(SampleError, match=r"retain\.jsonl:3: field 'paraphrases'"):
        Study.open(root).samples()


@pytest.mark.parametrize("fingerprint", [12345, "x/../../../elsewhere", "../..", None, ["a"], "ABCDEF0123456789"])
def test_invalid_fingerprint_is_treated_as_missing(small_study: Study, tmp_path: Path, fingerprint: Any) -> None:
    root = _light_copy(small_study, tmp_path / "s")
    mf = root / "study.json"
    d = json.loads(mf.read_text())
    d["models"]["original"]["fingerprint"] = fingerprint
    mf.write_text(json.dumps(d))
    study = Study.open(root)
    assert study.entry("original").fingerprint == ""  # recomputed from the files when asked, never used as is


def test_valid_names() -> None:
    assert all(is_safe_name(n) for n in ("original", "npo", "grad_ascent", "a.b-c", "R2", "x" * 64))
    assert not any(is_safe_name(n) for n in ("", ".", "..", ".x", "a/b", "a\\b", "-x", "_x", "a..b", "x" * 65,
                                             "a b", 5, None))


# ---- paths built from manifest values stay in the study ---------------------------------------------------
def _full_copy(study: Study, dest: Path) -> Path:
    shutil.copytree(study.root, dest, ignore=shutil.ignore_patterns("results.sqlite*", "sae"))
    return dest


def test_sae_dir_refuses_a_path_like_fingerprint(small_study: Study) -> None:
    from analysis.sae.options import SAEOptions
    from analysis.sae.train import sae_dir

    opts = SAEOptions(layer=1, k=4, expansion=1)
    assert sae_dir(small_study, opts, 128, small_study.fingerprint("original")).parent == small_study.root / "sae"
    for fp in ("x/../../../elsewhere", "../..", "", "12345"):
        with pytest.raises(StudyError, match="fingerprint"):
            sae_dir(small_study, opts, 128, fp)


def test_sae_dir_symlinked_out_of_the_study(small_study: Study, tmp_path: Path) -> None:
    from analysis.sae.options import SAEOptions
    from analysis.sae.train import sae_dir

    root = _light_copy(small_study, tmp_path / "s")
    (tmp_path / "elsewhere").mkdir()
    (root / "sae").symlink_to(tmp_path / "elsewhere")
    study = Study.open(root)
    with pytest.raises(StudyError, match="outside the study"):
        sae_dir(study, SAEOptions(layer=1, k=4, expansion=1), 128, small_study.fingerprint("original"))


def test_sae_train_with_a_path_like_fingerprint_writes_inside_the_study(small_study: Study, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]
                                                                         ) -> None:
    root = _full_copy(small_study, tmp_path / "deep" / "er" / "study")
    mf = root / "study.json"
    d = json.loads(mf.read_text())
    d["models"]["original"]["fingerprint"] = "x/../../../elsewhere"
    mf.write_text(json.dumps(d))
    assert main(["sae", "train", str(root), "--k", "4", "--expansion", "1", "--steps", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert Path(out["path"]).resolve().is_relative_to(root.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]  # nothing written beside the study
    assert not (tmp_path / "elsewhere").exists()


# ---- study create --------------------------------------------------------------------------------------------
def _create_args(study: Study, out: Path, *extra: str) -> list[str]:
    return ["study", "create", "--out", str(out), "--original", str(study.model_path("original")),
            "--forget", str(study.root / "samples" / "forget.jsonl"),
            "--retain", str(study.root / "samples" / "retain.jsonl"), *extra]


def test_create_out_naming_a_file(small_study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    for out in (f, f / "sub"):
        assert main(_create_args(small_study, out)) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "--out" in err and "afile" in err and "is an existing file" in err, err
    assert f.read_text() == "x"


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "../../x", "x" * 70])
def test_create_refuses_unsafe_model_names(small_study: Study, tmp_path: Path, name: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    args = _create_args(small_study, tmp_path / "s", "--unlearned", f"{name}={small_study.model_path('npo')}")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a safe name" in err, err
    assert not (tmp_path / "s").exists()


def test_create_names_a_bad_sample_line(small_study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    bad = tmp_path / "forget_bad.jsonl"
    bad.write_text(json.dumps(GOOD) + "\n" + _line(prompt=None) + "\n")
    args = _create_args(small_study, tmp_path / "s")
    args[args.index("--forget") + 1] = str(bad)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "forget_bad.jsonl:2" in err and "'prompt'" in err, err


def test_create_refuses_samples_longer_than_the_context(small_study: Study, tmp_path: Path) -> None:
    rows = [json.loads(x) for x in (small_study.root / "samples" / "retain.jsonl").read_text().splitlines()]
    n_ctx = small_study.load("original").model.cfg.n_ctx
    long = {**rows[1], "prompt": rows[1]["prompt"] + " and" * n_ctx}  # well under MAX_PROMPT_CHARS
    retain = tmp_path / "retain_long.jsonl"
    retain.write_text("\n".join(json.dumps(r) for r in [rows[0], long, *rows[2:]]) + "\n")
    with pytest.raises(StudyError) as e:
        Study.create(tmp_path / "s", original=small_study.model_path("original"), unlearned={},
                     forget=small_study.root / "samples" / "forget.jsonl", retain=retain)
    msg = str(e.value)
    assert "retain_long.jsonl:2" in msg and repr(rows[1]["id"]) in msg and "retain" in msg, msg
    assert f"({n_ctx} tokens)" in msg and "'prompt'" in msg, msg
    para = {**rows[1], "paraphrases": ["x " * (2 * n_ctx)]}
    retain.write_text("\n".join(json.dumps(r) for r in [rows[0], para, *rows[2:]]) + "\n")
    with pytest.raises(StudyError, match=r"field 'paraphrases\[0\]'"):
        Study.create(tmp_path / "s", original=small_study.model_path("original"), unlearned={},
                     forget=small_study.root / "samples" / "forget.jsonl", retain=retain)
    assert not (tmp_path / "s").exists()


# ---- organism.json -----------------------------------------------------------------------------------------
def _arch(field: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    return _set(f"architecture.{field}", value)


def _arch_many(**kw: Any) -> Callable[[dict[str, Any]], Any]:
    def edit(d: dict[str, Any]) -> Any:
        d["architecture"].update(kw)
        return d
    return edit


ORGANISM_CASES = [
    ("a JSON array", lambda d: [d], "expected a JSON object"),
    ("architecture missing", lambda d: {k: v for k, v in d.items() if k != "architecture"}, "'architecture'"),
    ("architecture a list", _set("architecture", [1]), "'architecture'"),
    ("d_model a string", _arch("d_model", "128"), "'architecture.d_model'"),
    ("d_model a float", _arch("d_model", 128.0), "'architecture.d_model'"),
    ("d_model inconsistent with the weights", _arch_many(d_model=64, d_head=16), "'architecture.d_model'"),
    ("d_mlp inconsistent with the weights", _arch("d_mlp", 256), "'architecture.d_mlp'"),
    ("n_layers inconsistent with the weights", _arch("n_layers", 3), "'architecture.n_layers'"),
    ("n_ctx inconsistent with the weights", _arch("n_ctx", 64), "'architecture.n_ctx'"),
    ("d_vocab inconsistent with the weights", _arch("d_vocab", 500), "'architecture.d_vocab'"),
    ("d_model huge", _arch("d_model", 10**9), "'architecture.d_model'"),
    ("unknown architecture key", _arch("n_experts", 4), "'architecture.n_experts'"),
    ("unknown top-level key", _set("weights", "other.safetensors"), "'weights'"),
    ("n_heads 0", _arch("n_heads", 0), "'architecture.n_heads'"),
    ("d_model not divisible by n_heads", _arch("n_heads", 3), "'architecture.n_heads'"),
    ("d_head inconsistent", _arch("d_head", 16), "'architecture.d_head'"),
    ("act_fn unknown", _arch("act_fn", "swishy"), "'architecture.act_fn'"),
    ("attn_only a string", _arch("attn_only", "no"), "'architecture.attn_only'"),
    ("format foreign", _set("format", "other"), "'format'"),
    ("meta a list", _set("meta", []), "'meta'"),
]


@pytest.mark.parametrize("edit, field", [c[1:] for c in ORGANISM_CASES], ids=[c[0] for c in ORGANISM_CASES])
def test_bad_organism_json(organism_dir: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], Any],
                           field: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(organism_dir, bad)
    cfg = bad / "organism.json"
    cfg.write_text(json.dumps(edit(json.loads(cfg.read_text()))))
    with pytest.raises(ModelLoadError) as e:
        load_model(bad, device="cpu")
    msg = str(e.value)
    assert "organism.json" in msg and field in msg and "expected" in msg and "\n" not in msg, msg


def test_bad_organism_json_through_the_cli(organism_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(organism_dir, bad)
    cfg = bad / "organism.json"
    cfg.write_text(json.dumps(_arch("n_heads", 0)(json.loads(cfg.read_text()))))
    assert main(["model", "info", str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "organism.json" in err and "'architecture.n_heads'" in err, err


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_create_checks_the_context_of_a_hugging_face_checkpoint(tmp_path: Path, arch: str) -> None:
    """n_ctx is read from config.json (n_positions / max_position_embeddings) without loading the weights."""
    from tests.hf_fixtures import N_CTX, make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(arch, tmp_path / f"tiny-{arch}")
    ok = {"id": "f1", "prompt": "The sky is", "answer": "blue"}
    long = {"id": "r2", "prompt": "y" * (N_CTX + 5), "answer": "z"}  # one token a character (no merges)
    forget, retain = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"
    forget.write_text(json.dumps(ok) + "\n")
    retain.write_text(json.dumps({**ok, "id": "r1"}) + "\n" + json.dumps(long) + "\n")
    with pytest.raises(StudyError) as e:
        Study.create(tmp_path / "s", original=ckpt, unlearned={}, forget=forget, retain=retain)
    msg = str(e.value)
    assert "retain.jsonl:2" in msg and "'r2'" in msg and f"({N_CTX} tokens)" in msg, msg
    retain.write_text(json.dumps({**ok, "id": "r1"}) + "\n")
    assert Study.create(tmp_path / "s", original=ckpt, unlearned={}, forget=forget, retain=retain).model_names == [
        "original"]
