"""AUROC of a signal's scores on knowledge-present (P) members against knowledge-absent (N) members, with a
bootstrap confidence interval over members.

AUROC = P(score of a random P member > score of a random N member), ties counting 1/2: the Mann-Whitney U
statistic of P against N divided by |P| |N| (``scipy.stats.mannwhitneyu`` computes U with mid-ranks, which is
exactly this count). 1 = every P member above every N member, 0 = the reverse, 0.5 = no separation.

The interval: ``scipy.stats.bootstrap`` over the two samples with ``paired=False``, which resamples the P
members and the N members separately (with replacement, each sample keeping its size), seeded; percentile
method. A resample is scored by :func:`auroc_pairs`, vectorised over resamples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.signals import CI_LEVEL


def _clean(values: Sequence[float | None]) -> np.ndarray:
    return np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)


def auroc_pairs(present: np.ndarray, absent: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """AUROC over the last axis of ``present`` [..., nP] and ``absent`` [..., nN] by counting pairs
    (ties 1/2); leading axes (bootstrap resamples) broadcast."""
    p = np.moveaxis(np.asarray(present, dtype=np.float64), axis, -1)
    n = np.moveaxis(np.asarray(absent, dtype=np.float64), axis, -1)
    diff = p[..., :, None] - n[..., None, :]
    return ((diff > 0).mean(axis=(-2, -1)) + 0.5 * (diff == 0).mean(axis=(-2, -1)))


def auroc(present: Sequence[float | None], absent: Sequence[float | None]) -> float | None:
    """AUROC of P against N (None and NaN dropped); None when either side has no defined score."""
    from scipy.stats import mannwhitneyu

    p, n = _clean(present), _clean(absent)
    if not len(p) or not len(n):
        return None
    if np.ptp(np.concatenate([p, n])) == 0:
        return 0.5  # every score tied (scipy's U is undefined-variance here, the count is not)
    u = mannwhitneyu(p, n, alternative="two-sided", method="asymptotic").statistic
    return float(u) / (len(p) * len(n))


def auroc_naive(present: Sequence[float | None], absent: Sequence[float | None]) -> float | None:
    """The definition, one pair at a time (the reference of the tests and the benchmark)."""
    p, n = _clean(present), _clean(absent)
    if not len(p) or not len(n):
        return None
    total = 0.0
    for a in p:
        for b in n:
            total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (len(p) * len(n))


@dataclass(frozen=True)
class AUROC:
    auroc: float | None
    ci_low: float | None
    ci_high: float | None
    n_present: int
    n_absent: int


def auroc_ci(present: Sequence[float | None], absent: Sequence[float | None], n_resamples: int = 1000,
             seed: int = 0, level: float = CI_LEVEL) -> AUROC:
    """AUROC of P against N with its percentile bootstrap interval (P and N resampled separately, seeded).
    The interval is None with fewer than 2 members on either side; degenerate (a, a) when every resample
    gives the same AUROC (e.g. perfect separation)."""
    from scipy.stats import bootstrap

    p, n = _clean(present), _clean(absent)
    point = auroc(p.tolist(), n.tolist())
    if point is None or len(p) < 2 or len(n) < 2:
        return AUROC(point, None, None, len(p), len(n))
    rng = np.random.default_rng(seed)
    res = bootstrap((p, n), auroc_pairs, n_resamples=n_resamples, confidence_level=level, method="percentile",
                    paired=False, vectorized=True, random_state=rng)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # every resample equal: scipy returns NaN
        dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
        lo = hi = float(dist.flat[0]) if dist.size else point
    return AUROC(point, lo, hi, len(p), len(n))
