"""EAP-IG: batched per-sample edge scores vs a batch-of-one loop (how the CUD authors' code scores samples)."""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.circuits.eap import edge_scores
from analysis.circuits.options import EAPOptions
from analysis.data.corpus import build_corpus
from analysis.scoring import make_batch
from benchmarks.common import BenchRow, bench_organism, model_label, timeit

N_SAMPLES = 64


def one_by_one(handle: Any, prompts: list[str], answers: list[str], opts: EAPOptions) -> np.ndarray:
    """Reference, like the CUD authors' code: one sample at a time, one forward/backward per IG step."""
    return np.stack([edge_scores(handle.model, make_batch(handle, [p], [a]), opts, max_rows=1)[0]
                     for p, a in zip(prompts, answers, strict=True)])


def batched(handle: Any, prompts: list[str], answers: list[str], opts: EAPOptions, bs: int = 64) -> np.ndarray:
    return np.concatenate([edge_scores(handle.model, make_batch(handle, prompts[i:i + bs], answers[i:i + bs]), opts)
                           for i in range(0, len(prompts), bs)])


def main() -> list[BenchRow]:
    handle = bench_organism()
    samples = [s for s in build_corpus(seed=0).samples if s.split == "forget"][:N_SAMPLES]
    prompts, answers = [s.prompt for s in samples], [s.answer for s in samples]
    opts = EAPOptions()  # CUD's setting: 5 steps, zero baseline, length-normalised probability
    t_ref, ref = timeit(lambda: one_by_one(handle, prompts, answers, opts), repeat=1)
    t_ours, ours = timeit(lambda: batched(handle, prompts, answers, opts), repeat=3)
    diff = float(np.abs(ours - ref).max())
    row = BenchRow("EAP-IG per-sample edge scores", "batch-of-one loop", t_ref, t_ours, str(handle.device),
                   model_label(handle), diff,
                   note=f"{len(samples)} samples, {opts.steps} IG steps; max |score| {np.abs(ref).max():.2e}")
    print(row.line())
    return [row]


if __name__ == "__main__":
    main()
