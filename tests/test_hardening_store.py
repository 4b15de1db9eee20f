"""Issue 18, part "no stale results, a damaged store is a clear error": results follow the model files and the
sample text they were computed from (a swapped weights file and a sample edited in place are recomputed),
a damaged or foreign results store is one line of StudyError saying how to recover (never a traceback), and a
manifest ``fingerprint`` is only a validated cache."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import analysis.store as store_mod
from analysis.attribution import runner as attribution_runner
from analysis.attribution.options import AttributionOptions
from analysis.attribution.runner import attribute_dataset, attribute_sample
from analysis.cli import main
from analysis.errors import StudyError
from analysis.evaluation import model_scores
from analysis.models.handle import fingerprint_dir
from analysis.store import ResultStore
from analysis.study import FINGERPRINTS, MANIFEST, Study
from analysis.tracing import runner as tracing_runner
from analysis.tracing.options import STORE_KIND as TRACE_KIND
from analysis.tracing.options import TraceOptions

pytestmark = pytest.mark.usefixtures("one_thread")

TRACE = TraceOptions(kinds=("resid",), n_samples=2)
RECOVER = "move it aside (with its -wal and -shm files, if any); the study recomputes what it needs"


@pytest.fixture
def study_copy(small_study, tmp_path) -> Study:
    """A copy of the small study with an empty store, free to be damaged."""
    root = tmp_path / "demo"
    shutil.copytree(small_study.root, root, ignore=shutil.ignore_patterns("results.sqlite*", "sae"))
    return Study.open(root)


def _forget_rows(study: Study) -> tuple[Path, list[dict]]:
    path = study.root / study.manifest.samples["forget"]
    return path, [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- 1. results follow what they were computed from --------------------------------------------------------
def test_swapped_weights_file_gives_new_numbers(study_copy, capsys):
    st = study_copy
    sid = st.forget[0].id
    old_fp = st.fingerprint("grad_ascent")
    before = model_scores(st, "grad_ascent")
    before_attr = attribute_sample(st, "grad_ascent", sid)
    retrain = model_scores(st, "retrain")
    retrain_attr = attribute_sample(st, "retrain", sid)
    assert before["metrics"] != retrain["metrics"]
    assert before_attr.contributions != retrain_attr.contributions
    handle = st.load("grad_ascent")

    # grad_ascent's weights file replaced by retrain's (its config stays: another fingerprint than retrain's)
    shutil.copyfile(st.model_path("retrain") / "model.safetensors",
                    st.model_path("grad_ascent") / "model.safetensors")
    new_fp = fingerprint_dir(st.model_path("grad_ascent"))
    assert new_fp != old_fp
    for s in (st, Study.open(st.root)):  # the open study (cached handle) and a fresh one (the next command)
        assert s.fingerprint("grad_ascent") == new_fp
        assert s.load("grad_ascent") is not handle and s.load("grad_ascent").fingerprint == new_fp
        assert model_scores(s, "grad_ascent")["metrics"] == retrain["metrics"]
        after_attr = attribute_sample(s, "grad_ascent", sid)
        assert after_attr.contributions == pytest.approx(retrain_attr.contributions, abs=1e-5)
        assert after_attr.model == new_fp
    # the manifest's cached fingerprint is rewritten (atomically, only that field)
    manifest = json.loads((st.root / MANIFEST).read_text())
    assert manifest["models"]["grad_ascent"]["fingerprint"] == new_fp
    assert manifest["models"]["retrain"]["fingerprint"] == st.fingerprint("retrain")
    # and the CLI's eval prints the new numbers
    assert main(["eval", str(st.root), "--model", "grad_ascent", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["models"]["grad_ascent"]
    assert out["forget_acc"] == pytest.approx(retrain["metrics"]["forget_acc"])


def test_unchanged_files_are_not_hashed_again(study_copy, monkeypatch):
    st = study_copy
    fp = st.fingerprint("npo")
    assert json.loads((st.root / FINGERPRINTS).read_text())["models"]["npo"]["fingerprint"] == fp
    calls = []
    monkeypatch.setattr("analysis.study.fingerprint_dir", lambda p: calls.append(p) or "0" * 16)
    again = Study.open(st.root)  # a new process: the stats recorded in fingerprints.json are enough
    assert again.fingerprint("npo") == fp and st.fingerprint("npo") == fp
    assert calls == []


def test_edited_sample_is_recomputed_and_the_rest_served(study_copy, monkeypatch):
    st = study_copy
    edited, kept = st.forget[0], st.forget[1]
    n_layers = st.load("original").n_layers
    t_edited = tracing_runner.trace_sample(st, "original", edited.id, TRACE)
    tracing_runner.trace_sample(st, "original", kept.id, TRACE)
    attr = attribute_dataset(st, "original", AttributionOptions(), split="forget")
    scores = model_scores(st, "original")

    # the edited prompt: a paraphrase of the same fact (known words, the subject still inside)
    path, rows = _forget_rows(st)
    new_prompt = next(p for p in edited.paraphrases if edited.subject in p)
    rows[0]["prompt"] = new_prompt
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # in place

    fp = st.fingerprint("original")
    stored = st.store.get_many(TRACE_KIND, [fp], tracing_runner.store_key(st, TRACE.validated(n_layers)),
                               [edited.id, kept.id])
    assert set(stored) == {kept.id}  # the edited sample's old trace is never served

    traced = []
    real_trace = tracing_runner.trace
    monkeypatch.setattr(tracing_runner, "trace", lambda h, s, *a: traced.append(s.id) or real_trace(h, s, *a))
    t_new = tracing_runner.trace_sample(st, "original", edited.id, TRACE)
    assert t_new.tokens != t_edited.tokens and "".join(t_new.tokens).strip().endswith(new_prompt.split()[-1])
    tracing_runner.trace_sample(st, "original", kept.id, TRACE)
    assert traced == [edited.id]  # the untouched sample came from the store

    attributed = []
    real_samples = attribution_runner.attribute_samples
    monkeypatch.setattr(attribution_runner, "attribute_samples",
                        lambda h, ss, o: attributed.extend(s.id for s in ss) or real_samples(h, ss, o))
    again = Study.open(st.root)  # a fresh study sees the edit too
    attr2 = attribute_dataset(again, "original", AttributionOptions(), split="forget")
    assert attributed == [edited.id]
    assert attr2.results[edited.id].prompt == new_prompt and attr2.results[edited.id].tokens != \
        attr.results[edited.id].tokens
    assert attr2.results[kept.id].contributions == attr.results[kept.id].contributions

    # a dataset-level result (the scoreboard row) follows every sample too
    n_eval = dict(st.store.kinds())["eval"]
    rescored = model_scores(again, "original")
    assert dict(st.store.kinds())["eval"] == n_eval + 1
    assert rescored["per_sample"]["ids"] == scores["per_sample"]["ids"]


def test_changed_subject_pool_recomputes_traces_only(study_copy, monkeypatch):
    """Traces read every subject of the study (noise scale, replacement subjects): dropping a retain sample
    recomputes them; attributions, which read only their own sample, are still served."""
    st = study_copy
    sid = st.forget[0].id
    tracing_runner.trace_sample(st, "original", sid, TRACE)
    attribute_sample(st, "original", sid)
    path = st.root / st.manifest.samples["retain"]
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[1:]))
    calls = []
    real_trace, real_attr = tracing_runner.trace, attribution_runner.attribute
    monkeypatch.setattr(tracing_runner, "trace", lambda *a: calls.append("trace") or real_trace(*a))
    monkeypatch.setattr(attribution_runner, "attribute", lambda *a: calls.append("attribute") or real_attr(*a))
    tracing_runner.trace_sample(st, "original", sid, TRACE)
    attribute_sample(st, "original", sid)
    assert calls == ["trace"]


# ---- 2. a damaged or foreign store is one line saying how to recover ------------------------------------
def _real_store(path: Path, rows: int = 400) -> None:
    st = ResultStore(path)
    st.put_many("k", ["m"], {}, {f"s{i}": list(range(100)) for i in range(rows)})
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _truncated(path: Path) -> None:
    _real_store(path)
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(8192))


def _corrupt_page(path: Path) -> None:
    _real_store(path)
    data = bytearray(path.read_bytes())
    data[3 * 4096: 4 * 4096] = random.Random(1).randbytes(4096)
    path.write_bytes(bytes(data))


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE songs (title TEXT, artist TEXT)")
        con.execute("INSERT INTO songs VALUES ('a', 'b')")


def _wrong_results_table(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, payload TEXT)")


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "x").write_text("x")


DAMAGED: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncated, "is damaged"),
    "random bytes": (_random_bytes, "is not an SQLite database"),
    "corrupt page": (_corrupt_page, "is damaged"),
    "foreign database": (_foreign, "of something else (tables: songs)"),
    "wrong results table": (_wrong_results_table, "columns (id, payload)"),
    "directory": (_directory, "is a directory"),
}


def _one_line(msg: str, path: Path) -> None:
    assert "\n" not in msg and str(path) in msg and "Traceback" not in msg


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_store_is_one_clear_error(study_copy, case, capsys):
    make, what = DAMAGED[case]
    path = study_copy.root / "results.sqlite"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    study = Study.open(study_copy.root)
    with pytest.raises(StudyError) as err:
        study.store.get("eval", ["x"], {})
    msg = str(err.value)
    _one_line(msg, path)
    assert what in msg and RECOVER in msg
    assert main(["eval", str(study_copy.root)]) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("erasure: error: results store") and what in lines[0]
    assert cap.out == ""
    if before is not None:  # nothing was written into a foreign or damaged file
        assert path.read_bytes() == before
    # the recovery the message names works
    path.rename(path.with_name("results.sqlite.damaged"))
    assert Study.open(study_copy.root).store.get("eval", ["x"], {}) is None


def test_locked_store_is_one_clear_error(study_copy, monkeypatch, capsys):
    path = study_copy.root / "results.sqlite"
    with sqlite3.connect(path) as con:  # a store in rollback-journal mode, so a writer's lock blocks readers
        con.execute(store_mod._SCHEMA)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.2)
    try:
        with pytest.raises(StudyError, match="is locked by another process") as err:
            Study.open(study_copy.root).store.get("eval", ["x"], {})
        _one_line(str(err.value), path)
        assert main(["eval", str(study_copy.root)]) == 2
        assert "is locked by another process" in capsys.readouterr().err
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert Study.open(study_copy.root).store.get("eval", ["x"], {}) is None  # usable once the lock is gone


def _permissions_enforced(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.write_text("")
    probe.chmod(0o444)
    try:
        with probe.open("a"):
            return False  # root (with CAP_DAC_OVERRIDE) writes anyway
    except PermissionError:
        return True
    finally:
        probe.chmod(0o644)


def test_read_only_store_is_one_clear_error(study_copy, tmp_path):
    if os.name != "posix" or not _permissions_enforced(tmp_path):
        pytest.skip("file permissions are not enforced for this user (root)")
    path = study_copy.root / "results.sqlite"
    _real_store(path, rows=2)
    path.chmod(0o444)
    study_copy.root.chmod(0o555)  # no -wal / -shm beside it either
    try:
        with pytest.raises(StudyError, match="results store") as err:
            st = Study.open(study_copy.root).store
            st.get("k", ["m"], {}, "s0")
            st.put("k", ["m"], {}, 1, "s9")
        _one_line(str(err.value), path)
        assert "move it aside" in str(err.value)
    finally:
        study_copy.root.chmod(0o755)
        path.chmod(0o644)


def test_empty_store_file_is_a_new_store(study_copy):
    path = study_copy.root / "results.sqlite"
    path.write_bytes(b"")
    st = Study.open(study_copy.root).store
    assert st.get("k", ["m"], {}) is None
    st.put("k", ["m"], {}, {"v": 1})
    assert Study.open(study_copy.root).store.get("k", ["m"], {}) == {"v": 1}


def test_undecodable_row_is_recomputed(tmp_path):
    st = ResultStore(tmp_path / "r.sqlite")
    st.put("k", ["m"], {}, 1, "s1")
    with sqlite3.connect(tmp_path / "r.sqlite") as con:
        con.execute("UPDATE results SET value='{not json'")
    assert st.get("k", ["m"], {}, "s1") is None and st.get_many("k", ["m"], {}) == {}
    st.put("k", ["m"], {}, 2, "s1")
    assert st.get("k", ["m"], {}, "s1") == 2


# ---- 3. the manifest's fingerprint is a validated cache ----------------------------------------------------
@pytest.mark.parametrize("bad", ["x/../../../elsewhere", 123, "ABCDEF0123456789", "deadbeef", None, ["a"],
                                 "0000000000000000"])
def test_bad_manifest_fingerprint_is_recomputed(study_copy, bad):
    mf = study_copy.root / MANIFEST
    data = json.loads(mf.read_text())
    data["models"]["original"]["fingerprint"] = bad
    mf.write_text(json.dumps(data))
    (study_copy.root / FINGERPRINTS).unlink(missing_ok=True)
    study = Study.open(study_copy.root)
    real = fingerprint_dir(study.model_path("original"))
    # a malformed value is dropped on read; a well-formed but wrong one is only a cache, rechecked on use
    assert study.entry("original").fingerprint == ("" if bad != "0000000000000000" else bad)
    assert study.fingerprint("original") == real
    assert json.loads(mf.read_text())["models"]["original"]["fingerprint"] == real
    study.store.put("k", [study.fingerprint("original")], {}, 1)
    with sqlite3.connect(study.store.path) as con:
        assert con.execute("SELECT models FROM results").fetchall() == [(real,)]


def test_bad_fingerprint_cache_file_is_ignored(study_copy):
    (study_copy.root / FINGERPRINTS).write_text(json.dumps(
        {"models": {"original": {"path": "x", "fingerprint": "../../x", "checked_ns": 0, "files": 5}, "npo": 3}}))
    study = Study.open(study_copy.root)
    assert study.fingerprint("original") == fingerprint_dir(study.model_path("original"))
    (study_copy.root / FINGERPRINTS).write_text("[1, 2")
    assert Study.open(study_copy.root).fingerprint("npo") == fingerprint_dir(study.model_path("npo"))


def test_missing_model_directory_is_a_study_error(study_copy):
    shutil.rmtree(study_copy.model_path("npo"))
    with pytest.raises(StudyError, match="model 'npo': model directory not found"):
        study_copy.fingerprint("npo")
