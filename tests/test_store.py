import sqlite3
import subprocess
import sys
import time

import pytest

from analysis.store import ResultStore, options_hash, run_batch


def test_put_get_roundtrip_and_keys(tmp_path):
    st = ResultStore(tmp_path / "r.sqlite")
    st.put("trace", ["fpA"], {"k": 1}, {"x": [1, 2]}, sample_id="s1")
    assert st.get("trace", ["fpA"], {"k": 1}, "s1") == {"x": [1, 2]}
    assert st.get("trace", ["fpA"], {"k": 2}, "s1") is None  # other options
    assert st.get("trace", ["fpB"], {"k": 1}, "s1") is None  # other model
    assert st.get("trace", ["fpA", "fpB"], {"k": 1}, "s1") is None
    assert options_hash({"a": 1, "b": 2}) == options_hash({"b": 2, "a": 1})
    with sqlite3.connect(tmp_path / "r.sqlite") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_resume_after_exception_mid_job(tmp_path):
    st = ResultStore(tmp_path / "r.sqlite")
    ids = [f"s{i}" for i in range(10)]
    calls: list[list[str]] = []

    def failing(chunk):
        calls.append(chunk)
        if "s6" in chunk:
            raise RuntimeError("boom")
        return {s: int(s[1:]) ** 2 for s in chunk}

    with pytest.raises(RuntimeError):
        run_batch(st, "sq", ["m"], {}, ids, failing, chunk_size=3)
    assert sorted(st.get_many("sq", ["m"], {})) == ["s0", "s1", "s2", "s3", "s4", "s5"]  # the failed chunk left nothing
    calls.clear()
    out = run_batch(st, "sq", ["m"], {}, ids, lambda c: (calls.append(c), {s: int(s[1:]) ** 2 for s in c})[1],
                    chunk_size=3)
    assert out == {s: int(s[1:]) ** 2 for s in ids}
    assert [s for c in calls for s in c] == ["s6", "s7", "s8", "s9"]  # nothing finished is recomputed


# A batch job in its own interpreter (not multiprocessing's spawn, whose child re-imports the test module and
# started slowly late in the full suite): 20 chunks of 0.5 s once it has started.
SLOW_JOB = """
import sys, time
from analysis.store import ResultStore, run_batch

def compute(chunk):
    time.sleep(0.5)
    return {s: s for s in chunk}

run_batch(ResultStore(sys.argv[1]), "slow", ["m"], {}, [f"s{i}" for i in range(40)], compute, chunk_size=2)
"""


def test_killed_job_resumes_and_reads_during_write(tmp_path):
    path = str(tmp_path / "r.sqlite")
    ResultStore(path)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_JOB, path], stderr=subprocess.DEVNULL)
    reader = ResultStore(path)
    seen = [0]
    # Concurrent reads while the job writes: wait (generously: a loaded machine starts the spawned child
    # slowly) until three chunks have landed one after another, then kill the job mid-way.
    deadline = time.time() + 600
    while time.time() < deadline and len(seen) < 4 and proc.poll() is None:
        n = len(reader.get_many("slow", ["m"], {}))
        if n > seen[-1]:
            seen.append(n)
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup in the job
    proc.wait()
    stored = reader.get_many("slow", ["m"], {})
    assert 0 < len(stored) < 40 and len(stored) % 2 == 0  # whole chunks only
    assert seen == sorted(seen) and len(seen) >= 4
    recomputed = []
    run_batch(reader, "slow", ["m"], {}, [f"s{i}" for i in range(40)],
              lambda c: (recomputed.extend(c), {s: s for s in c})[1], chunk_size=2)
    assert len(recomputed) == 40 - len(stored)
    assert len(reader.get_many("slow", ["m"], {})) == 40


class _Content:
    """A stand-in for a Study: sample ids -> content keys, and a digest of all samples."""

    def __init__(self) -> None:
        self.keys = {"a": "a#1", "b": "b#1"}
        self.digest = "d1"

    def sample_keys(self):
        return self.keys

    def samples_digest(self):
        return self.digest


def test_rows_follow_the_samples_content(tmp_path):
    content = _Content()
    st = ResultStore(tmp_path / "r.sqlite", content=content)
    st.put_many("k", ["m"], {"o": 1}, {"a": 1, "b": 2, "x": 3})  # "x" is no sample of the study: kept as given
    st.put("k", ["m"], {"o": 1}, "whole")
    assert st.get_many("k", ["m"], {"o": 1}) == {"a": 1, "b": 2, "x": 3}
    with sqlite3.connect(tmp_path / "r.sqlite") as con:
        rows = dict(con.execute("SELECT sample_id, options FROM results").fetchall())
    assert set(rows) == {"a#1", "b#1", "x", ""} and '"study_samples": "d1"' in rows[""]

    content.keys = {"a": "a#2", "b": "b#1"}  # sample a edited
    content.digest = "d2"
    assert st.get("k", ["m"], {"o": 1}, "a") is None and st.get("k", ["m"], {"o": 1}, "b") == 2
    assert st.get_many("k", ["m"], {"o": 1}) == {"b": 2, "x": 3}  # the outdated row of a is not served
    assert st.get("k", ["m"], {"o": 1}) is None  # nor the dataset-level row
    computed = []
    out = run_batch(st, "k", ["m"], {"o": 1}, ["a", "b"], lambda c: (computed.extend(c), {s: 9 for s in c})[1])
    assert computed == ["a"] and out == {"a": 9, "b": 2}
