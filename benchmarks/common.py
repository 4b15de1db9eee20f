"""Shared benchmark helpers: timing, a benchmark model, and the result row format of RESULTS.md."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

BENCH_DIR = Path(__file__).resolve().parent
CACHE = BENCH_DIR / "out"


@dataclass
class BenchRow:
    analysis: str
    reference: str  # the named naive reference
    reference_s: float
    ours_s: float
    device: str
    model: str
    max_abs_diff: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.reference_s / max(self.ours_s, 1e-12)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}

    def line(self) -> str:
        return (f"{self.analysis}: ours {self.ours_s:.3f}s vs {self.reference} {self.reference_s:.3f}s -> "
                f"{self.ratio:.1f}x on {self.device} ({self.model}); max |diff| {self.max_abs_diff:.2e}")


def timeit(fn: Callable[[], Any], repeat: int = 3, warmup: bool = True) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs (after one warm-up run unless ``warmup`` is False) and the last
    result."""
    out = fn() if warmup else None
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_organism() -> Any:
    """The demo study's original model if built, else a quickly trained organism cached under benchmarks/out."""
    from analysis.models import load_model
    from analysis.organism import OrganismConfig, train_organism

    demo = Path("studies/demo/models/original")
    if (demo / "organism.json").is_file():
        return load_model(demo, device="cpu")
    cached = CACHE / "organism"
    if not (cached / "organism.json").is_file():
        train_organism(OrganismConfig(seed=0), out=cached)
    return load_model(cached, device="cpu")


def model_label(handle: Any) -> str:
    n = sum(p.numel() for p in handle.model.parameters())
    return f"{handle.name}, {n / 1e6:.2f}M params"
