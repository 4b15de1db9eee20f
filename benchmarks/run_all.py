"""`make bench`: run every benchmarks/bench_*.py and write benchmarks/RESULTS.md (one table, then the scaling
curves of the benchmarks that return markdown with their rows)."""

from __future__ import annotations

import importlib
import inspect
import platform
import sys
import time

import torch

from benchmarks.common import BENCH_DIR, BenchRow

SEPARATE = ("bench_real",)


def main(argv: list[str] | None = None) -> int:
    # bench_real (the real SmolLM2, ~10 min) has its own target, `make bench-real`, and its own results file
    names = argv if argv else sorted(p.stem for p in BENCH_DIR.glob("bench_*.py") if p.stem not in SEPARATE)
    rows: list[BenchRow] = []
    sections: list[str] = []  # markdown after the table, from benchmarks returning (rows, markdown)
    for name in names:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        mod = importlib.import_module(f"benchmarks.{name}")
        # Benchmarks with their own options take argv; run them with their defaults here.
        takes_argv = bool(inspect.signature(mod.main).parameters)
        out = mod.main([]) if takes_argv else mod.main()
        if isinstance(out, tuple):
            out, section = out
            sections.append(section)
        rows.extend(out)
        print(f"   ({time.perf_counter() - t0:.1f}s)", flush=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)"
    lines = ["# Benchmark results", "", f"Written by `make bench` on {time.strftime('%Y-%m-%d')}; {device}; "
             f"torch {torch.__version__}.", "",
             "| analysis | naive reference | reference (s) | ours (s) | ratio | device | model | max abs diff | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.analysis} | {r.reference} | {r.reference_s:.3f} | {r.ours_s:.3f} | **{r.ratio:.1f}x** | "
                     f"{r.device} | {r.model} | {r.max_abs_diff:.1e} | {r.note} |")
    (BENCH_DIR / "RESULTS.md").write_text("\n".join([*lines, "", *sections]).rstrip() + "\n")
    print(f"wrote {BENCH_DIR / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
