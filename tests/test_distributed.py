"""Ray for the batch verbs: a local Ray instance with 2 workers must store exactly what a single-process run
stores (score, trace --all, recover, restore), retry the chunk of a worker that died, and skip finished
chunks after an interruption."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from analysis.distributed import RAY_MISSING, RayExecutor, check_address
from analysis.errors import AnalysisInputError, WorkbenchError
from analysis.store import ChunkJob, ChunkResults, Compute, run_batch
from analysis.study import Study
from analysis.tracing import TraceOptions, trace_dataset
from analysis.tracing.options import STORE_KIND

TRACE_OPTS = TraceOptions(n_samples=2)  # small: the point is equality, not the science

# Ray workers run one torch thread each (ChunkWorker); the in-process reference runs with one thread too, so
# that both sum in the same order and the stored floats are bitwise equal (with 2 threads they differ ~1e-7).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def executor(ray_instance) -> Iterator[RayExecutor]:
    with RayExecutor(workers=2) as ex:
        yield ex


@pytest.fixture(scope="module")
def study(small_study, tmp_path_factory) -> Study:
    """A copy of the small study with an empty store (workers open it from disk)."""
    root = tmp_path_factory.mktemp("ray") / "demo"
    shutil.copytree(small_study.root, root, ignore=shutil.ignore_patterns("results.sqlite*"))
    return Study.open(root)


def _stored(study: Study, kind: str) -> dict[tuple[str, str, str], Any]:
    with study.store._connect() as con:
        rows = con.execute("SELECT models, sample_id, options_hash, value FROM results WHERE kind=?",
                           (kind,)).fetchall()
    return {(m, s, o): json.loads(v) for m, s, o, v in rows}


def _local_then_ray(study: Study, kinds: Sequence[str], run: Any, executor: RayExecutor) -> tuple[Any, Any]:
    """``run(executor)`` in this process, then on Ray from an empty store: the stored rows must be equal."""
    for kind in kinds:
        study.store.delete(kind)
    local = run(None)
    stored = {k: _stored(study, k) for k in kinds}
    assert all(stored.values())
    for kind in kinds:
        study.store.delete(kind)
    remote = run(executor)
    assert {k: _stored(study, k) for k in kinds} == stored
    return local, remote


class _Recording:
    """An executor that records the chunks it is given."""

    def __init__(self, inner: RayExecutor) -> None:
        self.inner, self.chunks = inner, []

    def map(self, job: ChunkJob, chunks: Sequence[list[str]]) -> ChunkResults:
        self.chunks += [list(c) for c in chunks]
        yield from self.inner.map(job, chunks)


def test_trace_all_on_ray_equals_single_process_after_an_interruption(study, executor):
    """Interrupted after its first chunk is stored (the other worker still busy), the rerun sends only the
    chunks not stored; what is stored in the end equals the single-process run."""
    study.store.delete(STORE_KIND)
    expected = trace_dataset(study, "original", TRACE_OPTS)
    stored = _stored(study, STORE_KIND)
    study.store.delete(STORE_KIND)

    def interrupt(frac: float, msg: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trace_dataset(study, "original", TRACE_OPTS, progress=interrupt, executor=executor)
    finished = _stored(study, STORE_KIND)
    assert len(finished) == 4  # one chunk of 4 (trace_dataset's chunk size)
    rec = _Recording(executor)
    again = trace_dataset(study, "original", TRACE_OPTS, executor=rec)
    assert len(rec.chunks) == 3 and all(len(c) == 4 for c in rec.chunks)
    assert sorted(s for c in rec.chunks for s in c) == sorted(sid.split("#")[0] for _, sid, _ in stored.keys() - finished.keys())  # rows: id#content-digest
    assert _stored(study, STORE_KIND) == stored
    assert again.to_dict() == expected.to_dict()
    rec.chunks.clear()
    trace_dataset(study, "original", TRACE_OPTS, executor=rec)
    assert rec.chunks == []  # all stored: nothing is sent to the workers


def test_score_on_ray_equals_single_process(study, executor):
    from analysis.circuits.options import STORE_KIND as KIND
    from analysis.circuits.runner import score_study

    # batch_size 4: four chunks of the 16 forget samples, so both workers get some
    local, remote = _local_then_ray(study, [KIND], lambda ex: score_study(study, executor=ex, batch_size=4), executor)
    assert remote.cud == local.cud and remote.validation == local.validation


def test_recover_on_ray_equals_single_process(study, executor):
    from analysis.attribution import RecoveryOptions, recover
    from analysis.attribution.options import ATTRIBUTION_STORE_KIND as ATTRIBUTION_KIND
    from analysis.attribution.options import RECOVERY_STORE_KIND as RECOVERY_KIND

    opts = RecoveryOptions(strategies=("prefix", "attn_scores"))
    local, remote = _local_then_ray(study, [ATTRIBUTION_KIND, RECOVERY_KIND],
                                    lambda ex: recover(study, "npo", opts, executor=ex), executor)
    assert remote.table() == local.table()


def test_restore_on_ray_equals_single_process(study, executor):
    from analysis.sae import SAEOptions, restore, train_sae
    from analysis.sae.options import STORE_KIND as KIND

    train_sae(study, SAEOptions(steps=30))
    local, remote = _local_then_ray(study, [KIND], lambda ex: restore(study, "npo", executor=ex), executor)
    assert remote.to_dict() == local.to_dict()


# ---- failures and interruptions --------------------------------------------------------------------------------
def make_dying_compute(study: Any, marker_dir: str, doomed: str) -> Compute:  # noqa: ARG001
    """Kills its worker process on the chunk starting at ``doomed``: once, or always when ``doomed`` is
    "always"."""

    def compute(chunk: list[str]) -> dict[str, Any]:
        marker = Path(marker_dir) / chunk[0]
        if doomed == "always" or (chunk[0] == doomed and not marker.exists()):
            marker.touch()
            os._exit(1)
        return {s: f"v{s}" for s in chunk}

    return compute


def test_a_dead_workers_chunk_is_retried_on_a_fresh_worker(study, executor, tmp_path):
    ids = [f"s{i}" for i in range(6)]
    job = ChunkJob(make_dying_compute, study, (str(tmp_path), "s2"))
    before = executor.retried
    got = run_batch(study.store, "dying", ["m"], {}, ids, job, chunk_size=2, executor=executor)
    assert got == {s: f"v{s}" for s in ids} == study.store.get_many("dying", ["m"], {})
    assert executor.retried - before == 1  # chunk s2 killed its worker, then ran on a fresh one
    assert [p.name for p in tmp_path.iterdir()] == ["s2"]


def test_an_analysis_error_in_a_worker_is_raised_as_itself(study, executor):
    job = ChunkJob(make_failing_compute, study)
    with pytest.raises(AnalysisInputError, match="^bad sample s1$"):
        run_batch(study.store, "failing", ["m"], {}, ["s0", "s1"], job, chunk_size=1, executor=executor)


def make_failing_compute(study: Any) -> Compute:  # noqa: ARG001
    def compute(chunk: list[str]) -> dict[str, Any]:
        if "s1" in chunk:
            raise AnalysisInputError("bad sample s1")
        return {s: s for s in chunk}

    return compute


def test_a_chunk_that_keeps_killing_workers_fails_after_the_retries(study, executor, tmp_path):
    job = ChunkJob(make_dying_compute, study, (str(tmp_path), "always"))
    executor.max_retries = 0  # each death costs a worker start; the retry itself is tested above
    try:
        with pytest.raises(WorkbenchError, match="the chunk starting at sample 's0' failed: its Ray worker died "
                                                 "on all 1 attempts"):
            run_batch(study.store, "doomed", ["m"], {}, ["s0"], job, chunk_size=1, executor=executor)
    finally:
        executor.max_retries = 2
    assert study.store.get_many("doomed", ["m"], {}) == {}


# ---- errors without a cluster ----------------------------------------------------------------------------------
def test_ray_missing_is_one_clear_line(monkeypatch, capsys, small_study):
    from analysis.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["score", str(small_study.root), "--ray"]) == 2
    assert capsys.readouterr().err.strip() == f"erasure: error: {RAY_MISSING}"


@pytest.mark.parametrize("argv, message", [
    (["trace", "{study}", "--sample", "f0", "--ray"], "--ray runs batch jobs (e.g. --all), not one sample"),
    (["trace", "{study}", "--all", "--workers", "2"], "--workers needs --ray"),
    (["restore", "{study}", "--model", "npo", "--ray", "nohost"], "--ray expects host:port"),
    (["recover", "{study}", "--model", "npo", "--ray", "--workers", "0"], "--workers must be at least 1"),
    (["trace", "{study}", "--all", "--n-devices", "0"], "--n-devices must be at least 1"),
])
def test_bad_ray_arguments_are_one_line_errors(argv, message, capsys, small_study):
    from analysis.cli import main

    assert main([a.format(study=small_study.root) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"erasure: error: {message}") and "\n" not in err


def test_an_address_nothing_listens_at_fails_fast():
    import socket

    with socket.socket() as s:  # a free port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WorkbenchError, match=f"cannot reach a Ray cluster at 127.0.0.1:{port}"):
        check_address(f"127.0.0.1:{port}")


# ---- large models ----------------------------------------------------------------------------------------------
def test_splitting_over_more_gpus_than_the_machine_has_is_a_load_error(organism_dir):
    from analysis.errors import ModelLoadError
    from analysis.models import load_model

    with pytest.raises(ModelLoadError, match="splitting the model over 2 GPUs .* needs 2 CUDA devices; this "
                                             "machine has 0"):
        load_model(organism_dir, device="cpu", n_devices=2)


def test_batch_sizes_follow_the_memory_budget(organism, monkeypatch):
    from analysis.circuits import runner as api
    from analysis.scoring import default_batch_size

    assert api.eap_batch_size(organism, 12) == api.MAX_BATCH  # the organism fits 32 rows in 1 GiB
    full = default_batch_size(organism, seq_len=12)
    monkeypatch.setattr(api, "memory_budget", lambda device: 4 << 20)  # a nearly full GPU: 4 MiB left
    assert 1 <= api.eap_batch_size(organism, 12) < api.MAX_BATCH
    monkeypatch.setattr("analysis.scoring.memory_budget", lambda device: 4 << 20)
    assert 1 <= default_batch_size(organism, seq_len=12) < full


def test_eap_refuses_a_model_split_over_gpus():
    from types import SimpleNamespace

    from analysis.circuits.runner import one_device

    split = SimpleNamespace(name="big", model=SimpleNamespace(cfg=SimpleNamespace(n_devices=2)))
    with pytest.raises(AnalysisInputError, match="EAP-IG needs 'big' on one device"):
        one_device(split)


# ---- the CLI (last: it needs the module pool's CPUs, so it stops that pool first) -------------------------------
def test_cli_trace_all_on_ray(study, executor, capsys):
    from analysis.cli import main

    study.store.delete(STORE_KIND)
    local = trace_dataset(study, "original", TraceOptions(n_samples=2))
    stored = _stored(study, STORE_KIND)
    study.store.delete(STORE_KIND)
    executor.close()  # frees the instance's 2 CPUs for the CLI's own 2 workers
    assert main(["trace", str(study.root), "--model", "original", "--all", "--samples", "2", "--ray",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["aie"] == local.to_dict()["aie"] and out["n_samples"] == local.n_samples
    assert _stored(study, STORE_KIND) == stored
