import json
import subprocess
import sys

from analysis.cli import main


def test_eval_json(small_study, capsys):
    assert main(["eval", str(small_study.root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["models"]) == set(small_study.model_names)
    keys = {"forget_acc", "forget_prob", "paraphrase_acc", "retain_acc", "utility", "forget_quality"}
    for name, row in out["models"].items():
        assert keys <= set(row), name
    assert out["models"]["retrain"]["forget_quality"] is None


def test_model_info_json(organism_dir, capsys):
    assert main(["model", "info", str(organism_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "organism" and len(info["fingerprint"]) == 16


def test_organism_train_json(tmp_path, capsys):
    assert main(["organism", "train", "--out", str(tmp_path / "o"), "--people", "10", "--steps", "3", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"recall", "seconds"} <= set(d) and (tmp_path / "o" / "model.safetensors").is_file()


def test_errors_are_one_line_nonzero(tmp_path, small_study, capsys):
    assert main(["eval", str(tmp_path / "nope"), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "study directory not found" in err
    assert main(["eval", str(small_study.root), "--model", "ghost"]) == 2
    assert "unknown model 'ghost'" in capsys.readouterr().err
    assert main(["study", "create", "--out", str(tmp_path / "s"), "--original", str(tmp_path / "x"),
                 "--forget", "f.jsonl", "--retain", "r.jsonl", "--unlearned", "oops"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    r = subprocess.run([sys.executable, "-m", "analysis.cli", "model", "info"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0


def test_app_refuses_a_missing_study_in_one_line(tmp_path, capsys):
    """`erasure app --study DIR` for a directory that holds no study (and is not the default demo location)
    says so in one line and exits non-zero, before any server starts."""
    missing = tmp_path / "nowhere"
    assert main(["app", "--study", str(missing), "--port", "8599"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no study at" in err and "erasure demo --out" in err
    assert not missing.exists()


def test_prepare_study_leaves_a_complete_study_alone(small_study, tmp_path):
    """`erasure app` builds or resumes only a demo study that is missing or incomplete: a complete one is
    served as it is (no model rebuilt, manifest unchanged)."""
    from analysis.cli import prepare_study
    from analysis.demo import demo_complete
    from analysis.study import MANIFEST

    assert demo_complete(small_study)
    before = (small_study.root / MANIFEST).read_text()
    prepare_study(small_study.root, default=str(tmp_path / "default"))
    assert (small_study.root / MANIFEST).read_text() == before
