"""The results store: SQLite in WAL mode, one row per (analysis kind, model fingerprints, sample, options).

Results are keyed by what they were computed from. The models column holds the models' fingerprints (a
study rechecks them against the files, see ``Study.fingerprint``). A study's store also knows the study's
samples (:class:`ContentKeys`): a per-sample row is stored under the sample's id plus a digest of its
content, and a dataset-level row (``sample_id`` :data:`DATASET`) has a digest of every sample of the study in
its options, so a sample edited in place is recomputed and never served from an old row. Callers pass plain
sample ids; the translation happens here, once.

A damaged or foreign store file is a :class:`~analysis.errors.StudyError` in one line saying what is wrong
and how to recover (move the file aside; the study recomputes what it needs): the first operation of a
``ResultStore`` checks the file (``PRAGMA quick_check``, the ``results`` table's columns) before using it.

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
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tqdm.auto import tqdm

from analysis.errors import StudyError

if TYPE_CHECKING:
    from analysis.study import Study

DATASET = ""  # sample_id of dataset-level results
COLUMNS: tuple[str, ...] = ("kind", "models", "sample_id", "options_hash", "options", "value", "created")
SAMPLES_OPTION = "study_samples"  # the options field of a dataset-level row: the digest of the study's samples
BUSY_TIMEOUT_S = 60.0  # how long an operation waits for another process's write lock

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


class ContentKeys(Protocol):
    """What a study tells its store so that stored results follow the samples' content (``Study`` is one)."""

    def sample_keys(self) -> Mapping[str, str]:
        """Every sample id of the study -> the key its rows are stored under (the id plus a content digest)."""
        ...

    def samples_digest(self) -> str:
        """A digest of every sample of the study (dataset-level results depend on all of them)."""
        ...


def _decode(value: str) -> Any | None:
    """A stored value; None (recomputed, then replaced) for a row that is not valid JSON."""
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


class ResultStore:
    """The results store at ``path``. ``content`` (the study) makes rows follow the samples' content; without
    it sample ids are stored as given. The file is checked once, on the first operation."""

    def __init__(self, path: str | os.PathLike[str], content: ContentKeys | None = None) -> None:
        self.path = Path(path)
        self.content = content
        self._checked = False
        self.path.parent.mkdir(parents=True, exist_ok=True)

    # ---- the file ---------------------------------------------------------------------------------------
    def _error(self, problem: str) -> StudyError:
        return StudyError(f"results store {self.path} {problem}: move it aside (with its -wal and -shm files, if "
                          "any); the study recomputes what it needs")

    def _sqlite_error(self, e: sqlite3.Error) -> StudyError:
        name = getattr(e, "sqlite_errorname", "")
        msg = str(e)
        if self.path.is_dir():
            return self._error("is a directory, not an SQLite file")
        if name == "SQLITE_BUSY" or "locked" in msg:
            return StudyError(f"results store {self.path} is locked by another process ({msg} after waiting "
                              f"{BUSY_TIMEOUT_S:g} s): let the other job finish and retry, or move it aside; the "
                              "study recomputes what it needs")
        if name == "SQLITE_READONLY" or "readonly" in msg:
            return StudyError(f"results store {self.path} is read-only ({msg}): make it (and its directory) "
                              "writable, or move it aside; the study recomputes what it needs")
        if name == "SQLITE_FULL" or "full" in msg:
            return StudyError(f"results store {self.path} could not be written ({msg}): free some disk space")
        if name == "SQLITE_NOTADB" or "not a database" in msg:
            return self._error("is not an SQLite database (damaged or foreign)")
        if name == "SQLITE_CORRUPT" or "malformed" in msg:
            return self._error(f"is damaged ({msg})")
        if name == "SQLITE_CANTOPEN" or "unable to open" in msg:
            return StudyError(f"results store {self.path} cannot be opened ({msg}): check that it and its "
                              "directory are readable and writable, or move it aside; the study recomputes what "
                              "it needs")
        return self._error(f"cannot be used ({msg})")

    def _check(self, con: sqlite3.Connection) -> None:
        """Refuse a foreign or damaged file before anything is written to it; then WAL mode and the table."""
        tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "results" in tables:
            cols = tuple(r[1] for r in con.execute("PRAGMA table_info(results)"))
            if cols != COLUMNS:
                raise self._error(f"has a 'results' table with columns ({', '.join(cols)}), not this workbench's "
                                  f"({', '.join(COLUMNS)})")
        elif tables:
            raise self._error(f"is an SQLite database of something else (tables: {', '.join(sorted(tables))})")
        problems = [str(r[0]) for r in con.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise self._error(f"is damaged (quick_check: {problems[0]})")
        con.execute("PRAGMA journal_mode=WAL")
        with con:
            con.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per operation: safe across Streamlit's script threads and across processes.
        # Any SQLite failure (damaged, foreign, locked, read-only file) becomes one StudyError line.
        try:
            if self.path.is_dir():
                raise self._error("is a directory, not an SQLite file")
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
            try:
                con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
                if not self._checked:
                    self._check(con)
                    self._checked = True
                with con:  # one transaction: committed on success, rolled back on any exception
                    yield con
            finally:
                con.close()
        except sqlite3.Error as e:
            raise self._sqlite_error(e) from None

    # ---- keys: plain sample ids in, content keys in the file ---------------------------------------------
    def _row_keys(self, sample_ids: Sequence[str]) -> dict[str, str]:
        """sample id -> the sample_id column of its rows (the id plus its content digest in a study's store)."""
        keys = self.content.sample_keys() if self.content is not None else {}
        return {s: keys.get(s, s) for s in sample_ids}

    def _options(self, options: dict[str, Any], sample_id: str) -> dict[str, Any]:
        """The options a row is stored under: a dataset-level row of a study's store also names the samples."""
        if sample_id != DATASET or self.content is None:
            return options
        return {**options, SAMPLES_OPTION: self.content.samples_digest()}

    def get(self, kind: str, models: str | Sequence[str], options: dict[str, Any],
            sample_id: str = DATASET) -> Any | None:
        row_id = self._row_keys([sample_id])[sample_id]
        oh = options_hash(self._options(options, sample_id))
        with self._connect() as con:
            row = con.execute("SELECT value FROM results WHERE kind=? AND models=? AND sample_id=? AND options_hash=?",
                              (kind, models_key(models), row_id, oh)).fetchone()
        return _decode(row[0]) if row else None

    def get_many(self, kind: str, models: str | Sequence[str], options: dict[str, Any],
                 sample_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """Stored per-sample values of ``sample_ids`` (default: every sample with a row for the sample's
        current content), by sample id; absent ids are missing."""
        with self._connect() as con:
            rows = con.execute("SELECT sample_id, value FROM results WHERE kind=? AND models=? AND options_hash=?",
                               (kind, models_key(models), options_hash(options))).fetchall()
        if sample_ids is None:
            keys = self.content.sample_keys() if self.content is not None else {}
            current = set(keys.values())
            back = {k: s for s, k in keys.items()}
            # rows of known samples under their current key, other ids as stored; rows of a sample's earlier
            # content (its id, or its id and another digest) are left out
            wanted = {row_id: back.get(row_id, row_id) for row_id, _ in rows
                      if row_id in current or (row_id not in keys and row_id.rpartition("#")[0] not in keys)}
        else:
            wanted = {k: s for s, k in self._row_keys(sample_ids).items()}
        out = {wanted[row_id]: _decode(v) for row_id, v in rows if row_id in wanted}
        return {s: v for s, v in out.items() if v is not None}

    def put(self, kind: str, models: str | Sequence[str], options: dict[str, Any], value: Any,
            sample_id: str = DATASET) -> None:
        self.put_many(kind, models, options, {sample_id: value})

    def put_many(self, kind: str, models: str | Sequence[str], options: dict[str, Any],
                 values: dict[str, Any]) -> None:
        """All rows in one transaction: either every value of the chunk is stored or none is."""
        key, now = models_key(models), time.time()
        row_keys = self._row_keys(list(values))
        encoded = []
        for sid, v in values.items():
            opts = self._options(options, sid)
            encoded.append((kind, key, row_keys[sid], options_hash(opts), json.dumps(opts, sort_keys=True, default=str),
                            json.dumps(v), now))
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
