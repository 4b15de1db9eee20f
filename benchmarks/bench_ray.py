"""Ray speed-up of a batch verb: `erasure trace --all` (grouped AIE over the forget set) on a local Ray instance
with 1 and 2 workers against the single-process run, on a private copy of the demo study. The stored traces
must be identical. Times are steady state: the pool is started and each worker has loaded the model before
the clock starts (the start-up is printed separately).

    python -m benchmarks.bench_ray                  # 1 and 2 workers
    python -m benchmarks.bench_ray --workers 1,2,4 --noise 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.distributed import RayExecutor
from analysis.study import Study
from analysis.tracing import TraceOptions, trace_dataset
from analysis.tracing.options import STORE_KIND
from benchmarks.bench_sae import bench_study
from benchmarks.common import BenchRow, model_label


def _stored(study: Study) -> dict[str, Any]:
    with study.store._connect() as con:
        rows = con.execute("SELECT sample_id, value FROM results WHERE kind=?", (STORE_KIND,)).fetchall()
    return {sid: json.loads(v) for sid, v in rows}


def _max_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest |difference| between the traces' scores (inf if the samples differ)."""
    if a.keys() != b.keys():
        return float("inf")
    diff = 0.0
    for sid, va in a.items():
        vb = b[sid]
        for kind, rows in va.get("scores", {}).items():
            x = np.array(rows, dtype=float)
            y = np.array(vb["scores"][kind], dtype=float)
            diff = max(diff, float(np.nanmax(np.abs(x - y))) if x.size else 0.0)
    return diff


def timed(study: Study, opts: TraceOptions, executor: RayExecutor | None) -> tuple[float, dict[str, Any]]:
    study.store.delete(STORE_KIND)
    t0 = time.perf_counter()
    trace_dataset(study, "original", opts, executor=executor)
    return time.perf_counter() - t0, _stored(study)


def main(argv: Sequence[str] | None = None) -> list[BenchRow]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", default="1,2", help="comma-separated pool sizes (default 1,2)")
    ap.add_argument("--noise", type=int, default=10, help="noise samples per trace (default 10)")
    args = ap.parse_args(argv)
    opts = TraceOptions(n_samples=args.noise)
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory() as tmp:
        study = bench_study(Path(tmp))
        handle = study.load("original")
        ids = [s.id for s in study.forget]
        base_s, base = timed(study, opts, None)
        threads = torch.get_num_threads()
        print(f"single process: {base_s:.2f}s for {len(ids)} forget samples ({threads} torch threads)", flush=True)
        for n in [int(w) for w in args.workers.split(",") if w.strip()]:
            with RayExecutor(workers=n) as ex:  # a local Ray instance with n CPUs, shut down at the end
                t0 = time.perf_counter()
                # start Ray and the pool, and load the model in every worker (one chunk each), off the clock
                study.store.delete(STORE_KIND)
                trace_dataset(study, "original", opts, sample_ids=ids[:n], chunk_size=1, executor=ex)
                start_s = time.perf_counter() - t0
                ray_s, got = timed(study, opts, ex)
            diff = _max_diff(base, got)
            same = got == base
            print(f"Ray, {n} worker(s): {ray_s:.2f}s ({base_s / ray_s:.2f}x the single process; pool start "
                  f"{start_s:.1f}s not counted); stored traces identical: {same}", flush=True)
            rows.append(BenchRow(f"trace --all on Ray, {n} worker{'s' if n > 1 else ''}", "single process", base_s,
                                 ray_s, str(handle.device), model_label(handle), diff,
                                 note=f"{len(ids)} forget samples x {args.noise} noise, chunks of 4; 1 torch thread "
                                      f"per worker vs {threads} single-process; pool start {start_s:.0f}s not "
                                      f"counted; identical: {same}"))
    return rows


if __name__ == "__main__":
    main()
