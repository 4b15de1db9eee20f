"""The meta-evaluation's AUROC bootstrap: every resample's AUROC in one vectorised pair count
(``analysis.validation.auroc.auroc_pairs`` over [resamples, members]) vs the definition counted pair by pair
for each resample (``auroc_naive`` in a Python loop), on the same resampled members (identical numbers)."""

from __future__ import annotations

import numpy as np

from analysis.validation.auroc import auroc_naive, auroc_pairs
from benchmarks.common import BenchRow, timeit

N_RESAMPLES = 2000
N_PRESENT, N_ABSENT = 8, 8  # the size of a demo zoo, doubled


def resamples(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[N_RESAMPLES, nP] and [N_RESAMPLES, nN] members drawn with replacement (P and N separately)."""
    rng = np.random.default_rng(seed)
    p = rng.normal(0.7, 0.2, N_PRESENT).round(2)  # rounded: ties happen, as with accuracies
    n = rng.normal(0.4, 0.2, N_ABSENT).round(2)
    return (p[rng.integers(0, N_PRESENT, (N_RESAMPLES, N_PRESENT))],
            n[rng.integers(0, N_ABSENT, (N_RESAMPLES, N_ABSENT))])


def main() -> list[BenchRow]:
    p, n = resamples()
    t_ref, ref = timeit(lambda: np.array([auroc_naive(a.tolist(), b.tolist()) for a, b in zip(p, n, strict=True)]),
                        repeat=1)
    t_ours, ours = timeit(lambda: np.asarray(auroc_pairs(p, n)), repeat=3)
    row = BenchRow("validation: AUROC bootstrap", "pair-by-pair AUROC per resample (Python loop)", t_ref, t_ours,
                   "cpu", f"{N_PRESENT} P x {N_ABSENT} N members", float(np.abs(ours - ref).max()),
                   note=f"{N_RESAMPLES} resamples")
    print(row.line())
    return [row]


if __name__ == "__main__":
    main()
