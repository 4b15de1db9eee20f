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
