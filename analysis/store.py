"""The results store: SQLite in WAL mode, one row per (analysis kind, model fingerprints, sample, options).

WAL lets the app read while a CLI job writes. Each chunk of a batch job is written in one transaction,
so a job that is killed loses at most the chunks in flight, and a rerun skips everything stored.

A batch job's per-chunk work is a :class:`ChunkJob`: a recipe (a module-level factory and picklable
arguments) that builds ``compute(chunk) -> {id: value}``. The same recipe runs here
(:class:`LocalExecutor`) or in worker processes (``analysis.distributed.RayExecutor``), so there is one
implementation of every analysis whichever way it is run; the driver always does the storing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from analysis.study import Study

DATASET = ""  # sample_id of dataset-level results

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    kind TEXT NOT NULL,
    models TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    options_hash TEXT NOT NULL,
    options TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (kind, models, sample_id, options_hash)
);
"""

ProgressFn = Callable[[float, str], None]
ChunkResults = Generator[tuple[list[str], dict[str, Any]], None, None]
Compute = Callable[[list[str]], dict[str, Any]]


def options_hash(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]


def models_key(fingerprints: str | Sequence[str]) -> str:
    """Fingerprints in the order given (order matters: e.g. (unlearned, original) for a comparison)."""
    return fingerprints if isinstance(fingerprints, str) else ",".join(fingerprints)


class ResultStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per operation: safe across Streamlit's script threads and across processes.
        con = sqlite3.connect(self.path, timeout=60)
        try:
            con.execute("PRAGMA busy_timeout=60000")
            with con:  # one transaction: committed on success, rolled back on any exception
                yield con
        finally:
            con.close()

    def get(self, kind: str, models: str | Sequence[str], options: dict[str, Any],
            sample_id: str = DATASET) -> Any | None:
        with self._connect() as con:
            row = con.execute("SELECT value FROM results WHERE kind=? AND models=? AND sample_id=? AND options_hash=?",
                              (kind, models_key(models), sample_id, options_hash(options))).fetchone()
        return json.loads(row[0]) if row else None

    def get_many(self, kind: str, models: str | Sequence[str], options: dict[str, Any],
                 sample_ids: Sequence[str] | None = None) -> dict[str, Any]:
        with self._connect() as con:
            rows = con.execute("SELECT sample_id, value FROM results WHERE kind=? AND models=? AND options_hash=?",
                               (kind, models_key(models), options_hash(options))).fetchall()
        wanted = None if sample_ids is None else set(sample_ids)
        return {sid: json.loads(v) for sid, v in rows if wanted is None or sid in wanted}

    def put(self, kind: str, models: str | Sequence[str], options: dict[str, Any], value: Any,
            sample_id: str = DATASET) -> None:
        self.put_many(kind, models, options, {sample_id: value})

    def put_many(self, kind: str, models: str | Sequence[str], options: dict[str, Any],
                 values: dict[str, Any]) -> None:
        """All rows in one transaction: either every value of the chunk is stored or none is."""
        key, oh, opts, now = models_key(models), options_hash(options), json.dumps(options, sort_keys=True,
                                                                                    default=str), time.time()
        encoded = [(kind, key, sid, oh, opts, json.dumps(v), now) for sid, v in values.items()]
        with self._connect() as con:
            con.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?)", encoded)

    def kinds(self) -> list[tuple[str, int]]:
        with self._connect() as con:
            return con.execute("SELECT kind, COUNT(*) FROM results GROUP BY kind ORDER BY kind").fetchall()

    def delete(self, kind: str, models: str | Sequence[str] | None = None) -> int:
        with self._connect() as con:
            if models is None:
                return con.execute("DELETE FROM results WHERE kind=?", (kind,)).rowcount
            return con.execute("DELETE FROM results WHERE kind=? AND models=?", (kind, models_key(models))).rowcount


@dataclass
class ChunkJob:
    """The per-chunk work of a batch job as a recipe any process can rebuild: ``factory(study, *args,
    **local)`` returns ``compute(chunk) -> {id: value}``.

    ``factory`` is a module-level function and ``args`` are picklable. ``study`` is the live Study here;
    pickled for a worker, only its root travels (the worker opens the study and loads the models it needs
    itself) and ``local`` (keyword arguments for this process only, e.g. models already loaded) is dropped.
    """

    factory: Callable[..., Compute]
    study: Study | str | Path  # the live Study, or (pickled for a worker) its root
    args: tuple[Any, ...] = ()
    local: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return str(self.study if isinstance(self.study, str | Path) else self.study.root)

    def build(self, study: Study | None = None) -> Compute:
        """The compute function, on ``study`` (a worker's) or on the job's own study."""
        if study is None and isinstance(self.study, str | Path):
            raise RuntimeError("a pickled ChunkJob needs the worker's study to build")
        local = self.local if study is None else {}
        return self.factory(self.study if study is None else study, *self.args, **local)

    def __getstate__(self) -> dict[str, Any]:
        return {"factory": self.factory, "study": self.root, "args": self.args, "local": {}}


class Executor(Protocol):
    """Runs a job's chunks: yields ``(chunk, compute(chunk))`` for every chunk, in any order, each as soon as
    it is done (the caller stores it before asking for the next)."""

    def map(self, job: ChunkJob, chunks: Sequence[list[str]]) -> ChunkResults: ...


class LocalExecutor:
    """Every chunk in this process, in order; the compute is built once, and only if there is a chunk."""

    def map(self, job: ChunkJob, chunks: Sequence[list[str]]) -> ChunkResults:
        compute: Compute | None = None
        for chunk in chunks:
            compute = compute or job.build()
            yield chunk, compute(chunk)


def map_chunks(job: ChunkJob, chunks: Sequence[list[str]], executor: Executor | None = None) -> ChunkResults:
    """``executor.map`` (this process when ``executor`` is None)."""
    return (executor or LocalExecutor()).map(job, chunks)


def run_batch(store: ResultStore, kind: str, models: str | Sequence[str], options: dict[str, Any],
              sample_ids: Sequence[str], compute: Compute | ChunkJob, chunk_size: int = 32,
              progress: ProgressFn | None = None, desc: str | None = None,
              executor: Executor | None = None) -> dict[str, Any]:
    """Compute ``{id: value}`` for every id not yet stored, chunk by chunk, storing each chunk atomically as it
    finishes; return the values of all ``sample_ids``. ``compute`` is ``compute(chunk) -> {id: value}`` or a
    :class:`ChunkJob`; a job runs on ``executor`` (e.g. a Ray actor pool) when one is given, with exactly
    the chunks a local run would use. Rerunning after an interruption redoes only the chunks that were in
    flight. Progress goes to tqdm (CLI) and to ``progress`` (the app's bar)."""
    done = store.get_many(kind, models, options, sample_ids)
    todo = [s for s in dict.fromkeys(sample_ids) if s not in done]
    chunks = [todo[start: start + chunk_size] for start in range(0, len(todo), chunk_size)]
    if isinstance(compute, ChunkJob):
        results = map_chunks(compute, chunks, executor)
    elif executor is not None:
        raise TypeError(f"{kind}: only a ChunkJob can run on an executor, not a plain function")
    else:
        fn = compute
        results = ((chunk, fn(chunk)) for chunk in chunks)
    bar = tqdm(total=len(sample_ids), initial=len(sample_ids) - len(todo), desc=desc or kind, unit="sample",
               disable=None, leave=False)
    try:
        for chunk, values in results:
            missing = set(chunk) - set(values)
            if missing:
                raise RuntimeError(f"{kind}: compute returned no value for {sorted(missing)[:3]}")
            store.put_many(kind, models, options, {s: values[s] for s in chunk})
            done.update({s: values[s] for s in chunk})
            bar.update(len(chunk))
            if progress:
                progress(len(done) / max(1, len(sample_ids)), f"{desc or kind}: {len(done)}/{len(sample_ids)}")
    finally:
        results.close()
        bar.close()
    return {s: done[s] for s in sample_ids}
