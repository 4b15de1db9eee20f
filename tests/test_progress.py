"""Issue 19, item 3: real progress. SAE training reports every step with the fraction step / (steps + 1) (the
last unit is the health measurement), strictly increasing, ending at 1.0, and reporting does not change the SAE;
restoration reports by model (each model's signals counted once, the retrain control's first) and, within a
model, by probe fit and sample batch; a stored result is one call at 1.0. The CLI draws one tqdm bar on stderr
(``ERASURE_PROGRESS=always`` where stderr is not a terminal, as under capsys), so --json stdout stays one JSON
object.

The study is a private copy of the small study (its own SAE cache and store): the tiny SAEs trained here are
never picked up by the other test modules' ``load_sae(layer, k)``."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from analysis.cli import main
from analysis.cli_common import PROGRESS_ENV, ProgressBar, progress_disabled
from analysis.sae import RestoreOptions, SAEOptions, restore_all, train_sae
from analysis.sae.runner import positive_control
from analysis.study import Study

STEPS = 6
TINY = SAEOptions(k=16, expansion=2, steps=STEPS, batch_tokens=256)  # k=16: the diagnosis's SAE in this copy
FEW = RestoreOptions(alphas=(2.0,), probe_layers=(0, 1))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def study(small_study, tmp_path_factory: pytest.TempPathFactory) -> Study:
    root = tmp_path_factory.mktemp("progress") / "study"
    shutil.copytree(small_study.root, root, ignore=shutil.ignore_patterns("results.sqlite*", "sae"))
    return Study.open(root)


@pytest.fixture(scope="module")
def trained_calls(study):
    calls: list[tuple[float, str]] = []
    trained = train_sae(study, TINY, progress=lambda f, m: calls.append((f, m)))
    return trained, calls


def _increasing(fracs: list[float]) -> bool:
    return all(b >= a for a, b in zip(fracs, fracs[1:], strict=False))


# ---- SAE training --------------------------------------------------------------------------------------------
def test_sae_training_reports_every_step(study, trained_calls):
    trained, calls = trained_calls
    fracs = [f for f, _ in calls]
    # 0 before the first step, step i of 6 at i / 7, 1.0 once the SAE is saved (health measured)
    assert fracs == pytest.approx([0.0, *[i / (STEPS + 1) for i in range(1, STEPS + 1)], 1.0])
    assert all(b > a for a, b in zip(fracs, fracs[1:], strict=False))  # strictly increasing
    steps = [m for _, m in calls if "step " in m]
    assert [m.split("step ")[1].split(";")[0] for m in steps] == [f"{i}/{STEPS}" for i in range(1, STEPS + 1)]
    assert "health" in calls[-2][1] and "saved" in calls[-1][1]
    # the cached SAE: one call, 1.0
    again: list[tuple[float, str]] = []
    assert train_sae(study, TINY, progress=lambda f, m: again.append((f, m))).path == trained.path
    assert len(again) == 1 and again[0][0] == 1.0 and "cache" in again[0][1]


def test_reporting_progress_does_not_change_the_sae(study, trained_calls):
    trained, _ = trained_calls
    quiet = train_sae(study, TINY, force=True)  # the same seed, retrained without a progress callback
    assert torch.equal(quiet.sae.W_dec, trained.sae.W_dec) and torch.equal(quiet.sae.W_enc, trained.sae.W_enc)


# ---- restoration ---------------------------------------------------------------------------------------------
def test_restoration_reports_by_model_and_batch(study, trained_calls):
    trained, _ = trained_calls
    calls: list[tuple[float, str]] = []
    restore_all(study, ["npo", "rmu"], FEW, trained=trained, progress=lambda f, m: calls.append((f, m)))
    fracs = [f for f, _ in calls]
    assert _increasing(fracs) and fracs[0] == 0.0 and fracs[-1] == pytest.approx(1.0)
    done = [m for _, m in calls if m.startswith("signals of ") and " done " in m]
    assert [m.split()[2] for m in done] == ["retrain", "npo", "rmu"]  # once per model, the reference first
    n_fit = math.ceil((len(study.forget) + len(study.retain)) / 64)  # model_fit's batches of 64 samples
    relations = sorted({s.relation for s in study.forget})
    for i, name in enumerate(["retrain", "npo", "rmu"], start=1):
        mine = [m for _, m in calls if m.startswith(f"model {i}/3 {name}")]
        assert sum("the SAE's fit: " in m for m in mine) == n_fit
        for rel in relations:  # one report per (relation, layer) probe fit
            assert sum(f"probe: {rel}, layer " in m for m in mine) == len(FEW.probe_layers), (name, rel)
    # every report stored: one call, 1.0
    again: list[tuple[float, str]] = []
    restore_all(study, ["npo", "rmu"], FEW, trained=trained, progress=lambda f, m: again.append((f, m)))
    assert again == [(1.0, "2 restoration report(s) loaded from the study store")]


def test_positive_control_reports_progress(study, trained_calls):
    trained, _ = trained_calls
    calls: list[tuple[float, str]] = []
    positive_control(study, FEW, trained=trained, progress=lambda f, m: calls.append((f, m)))
    fracs = [f for f, _ in calls]
    assert _increasing(fracs) and fracs[-1] == pytest.approx(1.0)
    assert any(m.startswith("positive_control: probe: ") for _, m in calls)
    assert any(m.startswith("retrain: the SAE's fit: ") for _, m in calls)


# ---- the CLI -------------------------------------------------------------------------------------------------
def test_progress_env(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "always")
    assert progress_disabled() is False
    monkeypatch.setenv(PROGRESS_ENV, "never")
    assert progress_disabled() is True
    monkeypatch.delenv(PROGRESS_ENV)
    assert progress_disabled() is None  # tqdm's rule: a bar only on a terminal


def test_progress_bar_draws_the_fraction(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "always")
    with ProgressBar("job") as bar:
        bar(0.25, "a quarter")
        bar.part(1, 2, "second: ")(0.5, "half of it")  # (1 + 0.5) / 2 of the bar
    out, err = capsys.readouterr()
    assert out == ""
    assert "job:  25%|" in err and "a quarter" in err
    assert "job:  75%|" in err and "second: half of it" in err
    assert "remaining" not in err and "<" not in err  # measured time only: no extrapolated estimate


def test_cli_restore_and_report_draw_a_bar_on_stderr(study, trained_calls, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(PROGRESS_ENV, "always")
    root = str(study.root)
    assert main(["restore", root, "--model", "npo", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["model"] == "npo"  # stdout: one JSON object, the bar is not in it
    assert "restore npo:" in err and "%|" in err and "model 2/2 npo" in err
    assert "100%|" in err

    html = tmp_path / "r.html"
    assert main(["report", root, "--model", "npo", "--out", str(html), "--noise-samples", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["diagnosis"]["model"] == "npo" and html.is_file()
    assert "diagnose npo:" in err and "%|" in err
    for stage in ("outputs", "sae", "emphasis", "trace", "cud"):
        assert f"{stage} done" in err, stage

    # without ERASURE_PROGRESS and with stderr not a terminal (capsys): no bar, as tqdm does for logs and pipes
    monkeypatch.delenv(PROGRESS_ENV)
    assert main(["restore", root, "--model", "npo", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["model"] == "npo" and "%|" not in err


def test_cli_sae_train_draws_steps(study, monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "always")
    assert main(["sae", "train", str(study.root), "--k", "4", "--expansion", "1", "--steps", "3", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["k"] == 4
    assert "sae train:" in err and "step 3/3" in err
