"""Issue 18, numeric options: every numeric option of every verb is validated (a parse-time error naming the
``--option`` and what it expects, or the options dataclass's ``validated()`` naming the field), nothing is stored
or written for a refused value, no message is in Python's words, and JSON output never holds NaN or Infinity."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis import cli_common
from analysis.cli import main
from analysis.cli_common import dumps, emit, json_safe
from analysis.errors import AnalysisInputError
from analysis.study import Study

FORGET_ID = "p0002-birthplace"
PYTHON_WORDS = ("could not convert", "invalid literal", "invalid int value", "invalid float value", "Traceback")


@pytest.fixture(scope="module")
def root(small_study: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the small study (empty store): a refused option must leave it as it is."""
    out = tmp_path_factory.mktemp("options") / "study"
    shutil.copytree(small_study.root, out, ignore=shutil.ignore_patterns("results.sqlite*"))
    return out


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's parse-time errors (Parser.error: one line, exit 2)
        return int(e.code or 0)


def _rows(root: Path) -> dict[str, int]:
    return dict(Study.open(root).store.kinds())


def _files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


# (case, argv after the verb's study, store kind that must get no rows, what the one-line message must say)
S = "{study}"
CASES: list[tuple[str, list[str], str, tuple[str, ...]]] = [
    # tracing
    ("trace --scale inf", ["trace", S, "--sample", FORGET_ID, "--scale", "inf"], "trace", ("--scale", "finite")),
    ("trace --scale nan", ["trace", S, "--sample", FORGET_ID, "--scale", "nan"], "trace", ("--scale", "finite")),
    ("trace --scale -1", ["trace", S, "--sample", FORGET_ID, "--scale", "-1"], "trace", ("--scale", "> 0")),
    ("trace --samples 0", ["trace", S, "--sample", FORGET_ID, "--samples", "0"], "trace", ("--samples", ">= 1")),
    ("trace --samples abc", ["trace", S, "--all", "--samples", "abc"], "trace", ("--samples", "whole number")),
    ("trace --window 0", ["trace", S, "--sample", FORGET_ID, "--window", "0"], "trace", ("--window", ">= 1")),
    ("trace --seed -1", ["trace", S, "--all", "--seed", "-1"], "trace", ("--seed", "in [0, 4294967295]")),
    # SAE restoration
    ("restore --alphas=-1,nan", ["restore", S, "--model", "npo", "--alphas=-1,nan"], "sae_restoration",
     ("--alphas", "'-1'", "> 0")),
    ("restore --alphas=2,nan", ["restore", S, "--model", "npo", "--alphas=2,nan"], "sae_restoration",
     ("--alphas", "'nan'", "finite")),
    ("restore --alphas empty", ["restore", S, "--model", "npo", "--alphas="], "sae_restoration",
     ("--alphas", "comma-separated numbers")),
    ("restore --alphas=1,x", ["restore", S, "--model", "npo", "--alphas=1,x"], "sae_restoration",
     ("--alphas", "'x'", "not a number")),
    ("restore --alphas=1,,2", ["restore", S, "--model", "npo", "--alphas=1,,2"], "sae_restoration",
     ("--alphas", "empty value")),
    ("restore --alphas duplicate", ["restore", S, "--model", "npo", "--alphas=1,2,1"], "sae_restoration",
     ("--alphas", "'1' twice")),
    ("restore --k 0", ["restore", S, "--model", "npo", "--k", "0"], "sae_restoration", ("--k", ">= 1")),
    ("restore --layer -1", ["restore", S, "--model", "npo", "--layer", "-1"], "sae_restoration",
     ("--layer", ">= 0")),
    # circuits
    ("score --top 0", ["score", S, "--top", "0"], "eap_ig", ("--top", ">= 1")),
    ("score --folds 1", ["score", S, "--folds", "1"], "eap_ig", ("--folds", ">= 2")),
    ("score --quantile nan", ["score", S, "--quantile", "nan"], "eap_ig", ("--quantile", "(0, 0.5]")),
    ("score --quantile 0.7", ["score", S, "--quantile", "0.7"], "eap_ig", ("--quantile", "(0, 0.5]")),
    ("score --steps 0", ["score", S, "--steps", "0"], "eap_ig", ("--steps", ">= 1")),
    ("circuit --top 0", ["circuit", S, "--sample", FORGET_ID, "--top", "0"], "eap_ig", ("--top", ">= 1")),
    ("circuit --steps 0", ["circuit", S, "--sample", FORGET_ID, "--steps", "0"], "eap_ig", ("--steps", ">= 1")),
    ("circuit --steps 2.5", ["circuit", S, "--sample", FORGET_ID, "--steps", "2.5"], "eap_ig",
     ("--steps", "whole number")),
    # attribution and recovery
    ("attribute --ig-steps 0", ["attribute", S, "--sample", FORGET_ID, "--method", "ig", "--ig-steps", "0"],
     "attribution", ("--ig-steps", ">= 1")),
    ("attribute --alpha nan", ["attribute", S, "--sample", FORGET_ID, "--alpha", "nan"], "attribution",
     ("--alpha", "[0, 1)")),
    ("attribute --alpha 1", ["attribute", S, "--sample", FORGET_ID, "--alpha", "1"], "attribution",
     ("--alpha", "[0, 1)")),
    ("attribute --beta 0", ["attribute", S, "--sample", FORGET_ID, "--beta", "0"], "attribution",
     ("--beta", ">= 1")),
    ("recover --factor inf", ["recover", S, "--model", "npo", "--factor", "inf"], "recovery", ("--factor", "finite")),
    ("recover --factor 0", ["recover", S, "--model", "npo", "--factor", "0"], "recovery", ("--factor", "> 0")),
    ("recover --copies 0", ["recover", S, "--model", "npo", "--copies", "0"], "recovery", ("--copies", ">= 1")),
    ("recover --layers 0,-1", ["recover", S, "--model", "npo", "--layers", "0,-1"], "recovery",
     ("--layers", "'-1'")),
    ("recover --top-k keywords (--beta) 0", ["recover", S, "--model", "npo", "--beta", "0"], "recovery",
     ("--beta", ">= 1")),
    # diagnosis
    ("report --noise-samples 0", ["report", S, "--model", "npo", "--out", "{tmp}/r.html", "--noise-samples", "0"],
     "diagnosis", ("--noise-samples", ">= 1")),
    # SAE training (nothing under the study's sae/ either)
    ("sae train --k 0", ["sae", "train", S, "--k", "0", "--steps", "5"], "sae", ("--k", ">= 1")),
    ("sae train --k larger than d_sae", ["sae", "train", S, "--k", "100000", "--steps", "5"], "sae",
     ("k (active features per token) must be at most the SAE's width d_sae = 512", "got 100000")),
    ("sae train --layer -1", ["sae", "train", S, "--layer", "-1", "--steps", "5"], "sae", ("--layer", ">= 0")),
    ("sae train --layer outside the model", ["sae", "train", S, "--layer", "4", "--steps", "5"], "sae",
     ("layer 4 is out of range", "0..3")),
    ("sae train --expansion 0", ["sae", "train", S, "--expansion", "0", "--steps", "5"], "sae",
     ("--expansion", ">= 1")),
    ("sae train --steps 0", ["sae", "train", S, "--steps", "0"], "sae", ("--steps", ">= 1")),
    # organism / model / demo / app (nothing written at --out)
    ("organism train --steps 0", ["organism", "train", "--out", "{tmp}/o", "--people", "10", "--steps", "0"],
     "out", ("--steps", ">= 1")),
    ("organism train --people 0", ["organism", "train", "--out", "{tmp}/o", "--people", "0", "--steps", "1"],
     "out", ("--people", ">= 10")),
    ("organism train --people -5", ["organism", "train", "--out", "{tmp}/o", "--people", "-5", "--steps", "1"],
     "out", ("--people", ">= 10")),
    ("organism train --seed x", ["organism", "train", "--out", "{tmp}/o", "--seed", "x"], "out",
     ("--seed", "whole number")),
    ("model info --n-devices 0", ["model", "info", S + "/models/original", "--n-devices", "0"], "out",
     ("--n-devices", ">= 1")),
    ("demo --seed -3", ["demo", "--out", "{tmp}/o", "--seed", "-3"], "out", ("--seed", "in [0, 4294967295]")),
    ("app --port 0", ["app", "--study", S, "--port", "0"], "out", ("--port", "[1, 65535]")),
]


@pytest.mark.parametrize(("argv", "kind", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_numeric_option_is_one_line_and_stores_nothing(root: Path, tmp_path: Path, capsys: Any,
                                                           argv: list[str], kind: str, says: tuple[str, ...]) -> None:
    argv = [a.format(study=root, tmp=tmp_path) for a in argv]
    rows, sae = _rows(root), _files(root / "sae")
    code = _run(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code != 0, captured
    assert err.startswith("erasure: error: ") and "\n" not in err, err
    for s in says:
        assert s in err, err
    assert not any(w in err for w in PYTHON_WORDS), err
    assert captured.out == ""
    # nothing stored: no rows of any kind, no SAE, nothing at --out
    assert _rows(root) == rows and rows.get(kind, 0) == 0
    assert _files(root / "sae") == sae
    assert not (tmp_path / "o").exists() and not (tmp_path / "r.html").exists()


# ---- the options dataclasses say the same to the app and the Python API ------------------------------------
def _api_cases() -> list[tuple[str, Any, str]]:
    from analysis.attribution.emphasis import EmphasisParams
    from analysis.attribution.options import AttributionOptions, RecoveryOptions
    from analysis.circuits.options import CUDOptions, EAPOptions
    from analysis.diagnosis.options import DiagnosisOptions
    from analysis.organism import OrganismConfig
    from analysis.sae.options import RestoreOptions, SAEOptions
    from analysis.tracing.options import TraceOptions

    nan, inf = float("nan"), float("inf")
    return [
        ("trace noise_scale inf", lambda: TraceOptions(noise_scale=inf).validated(4), "noise scale must be a finite"),
        ("trace noise_scale nan (str)", lambda: TraceOptions(corruption="str", noise_scale=nan).validated(4),
         "noise scale must be a finite"),
        ("trace n_samples 2.5", lambda: TraceOptions(n_samples=2.5).validated(4), "n_samples"),  # type: ignore
        ("trace window 0", lambda: TraceOptions(window=0).validated(4), "window"),
        ("trace seed -1", lambda: TraceOptions(seed=-1).validated(4), "seed"),
        ("restore alpha -1", lambda: RestoreOptions(alphas=(-1.0, 2.0)).validated(), "alpha must be a finite number > 0"),
        ("restore alpha 0", lambda: RestoreOptions(alphas=(0.0,)).validated(), "alpha must be a finite number > 0"),
        ("restore alpha inf", lambda: RestoreOptions(alphas=(inf,)).validated(), "finite"),
        ("restore duplicate alphas", lambda: RestoreOptions(alphas=(2.0, 2)).validated(), "given once"),
        ("restore layer -1", lambda: RestoreOptions(layer=-1).validated(), "layer"),
        ("sae k 0", lambda: SAEOptions(k=0).validated(), "k (active features per token)"),
        ("sae lr nan", lambda: SAEOptions(lr=nan).validated(), "lr (learning rate)"),
        ("sae seed -1", lambda: SAEOptions(seed=-1).validated(), "seed"),
        ("cud top_n 0", lambda: CUDOptions(top_n=0).validated(), "top_n"),
        ("cud folds 1", lambda: CUDOptions(folds=1).validated(), "folds"),
        ("cud quantile nan", lambda: CUDOptions(quantile=nan).validated(), "quantile"),
        ("eap steps 0", lambda: EAPOptions(steps=0), "steps"),
        ("eap steps True", lambda: EAPOptions(steps=True), "steps"),  # type: ignore[arg-type]
        ("attribution ig_steps 0", lambda: AttributionOptions(ig_steps=0).validated(), "ig_steps"),
        ("attribution alpha inf", lambda: AttributionOptions(alpha=inf).validated(), "alpha"),
        ("attribution beta 0", lambda: AttributionOptions(beta=0).validated(), "beta"),
        ("recovery factor inf", lambda: RecoveryOptions(params=EmphasisParams(factor=inf)).validated(), "factor"),
        ("recovery factor nan", lambda: RecoveryOptions(params=EmphasisParams(factor=nan)).validated(), "factor"),
        ("recovery copies 0", lambda: RecoveryOptions(params=EmphasisParams(copies=0)).validated(), "copies"),
        ("recovery layers ()", lambda: RecoveryOptions(params=EmphasisParams(layers=())).validated(), "layer"),
        ("diagnosis sae k 0", lambda: DiagnosisOptions(sae=SAEOptions(k=0)).validated(4), "k (active"),
        ("diagnosis cud_top_n 0", lambda: DiagnosisOptions(cud_top_n=0).validated(4), "cud_top_n"),
        ("organism steps 0", lambda: OrganismConfig(steps=0).validated(), "steps (training steps)"),
        ("organism n_people 0", lambda: OrganismConfig(n_people=0).validated(), "n_people"),
        ("organism lr inf", lambda: OrganismConfig(lr=inf).validated(), "lr (learning rate)"),
        ("organism n_heads 3", lambda: OrganismConfig(n_heads=3).validated(), "multiple of n_heads"),
    ]


@pytest.mark.parametrize("case", range(len(_api_cases())), ids=[c[0] for c in _api_cases()])
def test_options_dataclasses_refuse_bad_numbers(case: int) -> None:
    _, make, match = _api_cases()[case]
    with pytest.raises(AnalysisInputError) as err:
        make()
    assert match in str(err.value) and "\n" not in str(err.value)


def test_organism_train_refuses_before_writing(tmp_path: Path) -> None:
    from analysis.organism import OrganismConfig, train_organism

    with pytest.raises(AnalysisInputError, match="steps"):
        train_organism(OrganismConfig(n_people=10, steps=0), out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_good_values_still_parse() -> None:
    from analysis.cli import build_parser
    from analysis.sae.options import RestoreOptions

    p = build_parser()
    args = p.parse_args(["restore", "s", "--model", "npo", "--alphas", "1, 2.5,10"])
    assert args.alphas == (1.0, 2.5, 10.0)
    assert RestoreOptions(alphas=args.alphas).validated().alphas == (1.0, 2.5, 10.0)
    args = p.parse_args(["trace", "s", "--all", "--scale", "1e-1", "--samples", " 3 "])
    assert args.scale == 0.1 and args.samples == 3
    args = p.parse_args(["recover", "s", "--model", "npo", "--layers", "0, 2"])
    assert args.layers == (0, 2)
    assert p.parse_args(["recover", "s", "--model", "npo", "--layers", "all"]).layers is None


# ---- JSON: never NaN or Infinity --------------------------------------------------------------------------
def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name} in {text[:200]}")

    return json.loads(text, parse_constant=refuse)


def test_emit_writes_strict_json_with_notes(capsys: Any) -> None:
    obj = {"recall": float("nan"), "gain": float("inf"), "loss": float("-inf"), "ok": 0.5, "n": 3,
           "scores": [[1.0, float("nan")], [np.float32("nan"), 2.0]], "per_alpha": {"1": float("nan"), "2": 0.25},
           "arr": np.array([1.0, np.inf]), "nested": {"x": np.float64("nan"), "x_note": "kept"}, "t": (1, 2)}
    emit(argparse.Namespace(json=True), obj, "text")
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    d = _strict(out)
    assert d["recall"] is None and "NaN" in d["recall_note"]
    assert d["gain"] is None and d["gain_note"] == "null: the value was +Infinity"
    assert d["loss"] is None and "-Infinity" in d["loss_note"]
    assert d["ok"] == 0.5 and d["n"] == 3 and "ok_note" not in d and "n_note" not in d
    assert d["scores"] == [[1.0, None], [None, 2.0]]
    assert d["scores_note"] == "2 value(s) are null, they were NaN (not a number: undefined): scores[0][1], scores[1][0]"
    assert d["per_alpha"] == {"1": None, "2": 0.25} and d["per_alpha_note"].endswith("per_alpha.1")  # keys untouched
    assert d["arr"] == [1.0, None] and d["arr_note"].endswith("+Infinity: arr[1]")
    assert d["nested"] == {"x": None, "x_note": "kept"} and d["nested_note"].endswith("nested.x")
    assert d["t"] == [1, 2]
    emit(argparse.Namespace(json=False), obj, "text")
    assert capsys.readouterr().out == "text\n"


def test_dumps_is_strict_and_leaves_finite_values_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    obj = {"a": [1, 2.5, None, "x"], "b": {"c": True}}
    assert json.loads(dumps(obj)) == obj and json_safe(obj) == obj
    assert _strict(dumps([float("nan"), {"v": float("inf")}], indent=1)) == [None, {"v": None}]  # not a record
    assert _strict(dumps({"x": math.nan, "y": -math.inf}))["x"] is None
    monkeypatch.setattr(cli_common, "json_safe", lambda obj: obj)  # a value that slipped past the sanitiser
    with pytest.raises(ValueError, match="not JSON compliant"):  # fails loudly, never prints a bare NaN
        cli_common.dumps({"x": math.nan})


def test_a_stored_nan_trace_prints_as_strict_json(root: Path, capsys: Any) -> None:
    """A stored trace holding NaN / inf (as a run with an infinite noise scale stored before) prints as null and
    a note, never as a bare NaN."""
    import sqlite3

    argv = ["trace", str(root), "--sample", FORGET_ID, "--kind", "resid", "--samples", "1", "--json"]
    try:
        assert main(argv) == 0  # computed and stored
        d = _strict(capsys.readouterr().out)
        assert math.isfinite(d["clean"]) and "clean_note" not in d
        con = sqlite3.connect(root / "results.sqlite")
        try:
            with con:  # the stored row, made non-finite in place
                (value,) = con.execute("SELECT value FROM results WHERE kind='trace'").fetchone()
                stored = json.loads(value)
                stored["clean"], stored["scores"]["resid"][0][0] = float("nan"), float("inf")
                con.execute("UPDATE results SET value=? WHERE kind='trace'", (json.dumps(stored),))
        finally:
            con.close()
        assert main(argv) == 0  # read back from the store
        d = _strict(capsys.readouterr().out)
        assert d["clean"] is None and d["clean_note"] == "null: the value was NaN (not a number: undefined)"
        assert d["scores"]["resid"][0][0] is None and d["scores_note"].endswith("+Infinity: scores.resid[0][0]")
    finally:
        Study.open(root).store.delete("trace")
