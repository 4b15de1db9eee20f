"""The results store: SQLite in WAL mode, one row per (analysis kind, model fingerprints, sample, options).

WAL lets the app read while a CLI job writes. Each chunk of a batch job is written in one transaction,
so a job that is killed loses at most the chunk in flight, and a rerun skips everything stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

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


def run_batch(store: ResultStore, kind: str, models: str | Sequence[str], options: dict[str, Any],
              sample_ids: Sequence[str], compute: Callable[[list[str]], dict[str, Any]], chunk_size: int = 32,
              progress: ProgressFn | None = None, desc: str | None = None) -> dict[str, Any]:
    """Compute ``compute(chunk) -> {id: value}`` for every id not yet stored, chunk by chunk, storing each
    chunk atomically; return the values of all ``sample_ids``. Rerunning after an interruption redoes only
    the chunk that was in flight. Progress goes to tqdm (CLI) and to ``progress`` (the app's bar)."""
    done = store.get_many(kind, models, options, sample_ids)
    todo = [s for s in dict.fromkeys(sample_ids) if s not in done]
    bar = tqdm(total=len(sample_ids), initial=len(sample_ids) - len(todo), desc=desc or kind, unit="sample",
               disable=None, leave=False)
    try:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start: start + chunk_size]
            values = compute(chunk)
            missing = set(chunk) - set(values)
            if missing:
                raise RuntimeError(f"{kind}: compute returned no value for {sorted(missing)[:3]}")
            store.put_many(kind, models, options, {s: values[s] for s in chunk})
            done.update({s: values[s] for s in chunk})
            bar.update(len(chunk))
            if progress:
                progress(len(done) / max(1, len(sample_ids)), f"{desc or kind}: {len(done)}/{len(sample_ids)}")
    finally:
        bar.close()
    return {s: done[s] for s in sample_ids}
