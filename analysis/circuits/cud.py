"""CUD: circuit-guided unlearning difficulty (Cheng et al. 2026), scored before unlearning.

Calibration labels (:func:`difficulty_labels`): for every model of the study with role ``unlearned`` whose
``unlearning.json`` carries ``difficulty.auc`` (higher = harder; aligned with ``forget_ids``), the forget
samples in the top ``quantile`` (default 30%) of that method's ``auc`` are *hard* for it, those in the
bottom ``quantile`` *easy*. A sample is labelled hard (easy) when a strict majority of the methods call it
hard (easy); otherwise it is unlabelled. Controls (retrain, readout suppression) are not used.
``observed`` difficulty = the mean ``auc`` across those methods.

Circuit vectors: ``binary`` = the 0/1 mask of the sample's top-n greedy circuit over all edges;
``weighted`` = |score| x mask (registered in :data:`VECTORS`). Anchors: the mean vector of the easy (hard)
calibration samples.
Distances ``d(v, a)``: ``cosine`` = max(0, 1 - cos(v, a)); ``jaccard`` = 1 - sum(min(v, a)) / sum(max(v, a))
(weighted Jaccard: the set Jaccard distance on 0/1 vectors); ``hamming`` = mean |v - a| (the normalised
Hamming distance on 0/1 vectors, its expectation against a fractional anchor); registered in
:data:`DISTANCES`.
``CUD = d_E / (d_E + d_H)`` in [0, 1], 0.5 when both are 0; higher = closer to the hard anchor = harder.

Validation (:func:`cross_validate`): k seeded folds over the forget samples; anchors are built from the
labelled samples outside a fold and score the samples inside it, so every score is out-of-fold. Spearman
rho against observed difficulty (all forget samples) and AUROC = P(score of a hard sample > score of an
easy one) = Mann-Whitney U / (n_hard n_easy), for CUD and for baselines (given as "higher = harder").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import mannwhitneyu, spearmanr

from analysis.circuits.options import DISTANCE_LABELS, VECTOR_LABELS
from analysis.errors import AnalysisInputError, StudyError
from analysis.registry import Registry

if TYPE_CHECKING:
    from analysis.study import Study

DistanceFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (rows [N, E], anchor [1, E]) -> [N]
DISTANCES: Registry[DistanceFn] = Registry("distance")
VectorFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (scores [N, E], 0/1 circuit masks [N, E]) -> [N, E]
VECTORS: Registry[VectorFn] = Registry("circuit vector kind")


@dataclass
class DifficultyLabels:
    ids: list[str]
    observed: np.ndarray  # mean auc across methods, higher = harder
    labels: np.ndarray  # +1 hard, -1 easy, 0 unlabelled
    methods: list[str]
    per_method: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ids": self.ids, "observed": self.observed.tolist(), "labels": self.labels.tolist(),
                "methods": self.methods, "per_method": self.per_method}


def labels_from_auc(per_method: dict[str, np.ndarray], quantile: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(observed, labels) from {method: auc per sample}; see the module docstring."""
    if not 0 < quantile <= 0.5:
        raise AnalysisInputError(f"quantile must be in (0, 0.5], got {quantile}")
    if not per_method:
        raise StudyError("no unlearning method with observed difficulty")
    aucs = np.stack([np.asarray(v, dtype=float) for v in per_method.values()])
    hard_votes = np.zeros(aucs.shape[1])
    easy_votes = np.zeros(aucs.shape[1])
    for row in aucs:
        hi, lo = np.quantile(row, 1 - quantile), np.quantile(row, quantile)
        hard_votes += row >= hi
        easy_votes += row <= lo
    need = aucs.shape[0] / 2
    labels = np.where(hard_votes > need, 1, np.where(easy_votes > need, -1, 0))
    labels[(hard_votes > need) & (easy_votes > need)] = 0  # constant auc: no information
    return aucs.mean(0), labels.astype(int)


def difficulty_labels(study: Study, quantile: float = 0.3) -> DifficultyLabels:
    ids = [s.id for s in study.forget]
    per_method: dict[str, np.ndarray] = {}
    for name in study.unlearned_names:
        if study.entry(name).role != "unlearned":
            continue
        log = study.read_model_json(name, "unlearning.json")
        if not log or "auc" not in log.get("difficulty", {}):
            continue
        by_id = dict(zip(log["forget_ids"], log["difficulty"]["auc"], strict=True))
        if not set(ids) <= set(by_id):
            continue
        per_method[name] = np.array([by_id[i] for i in ids], dtype=float)
    if not per_method:
        raise StudyError("this study has no unlearned model with observed per-sample difficulty "
                         "(difficulty.auc in unlearning.json)")
    observed, labels = labels_from_auc(per_method, quantile)
    return DifficultyLabels(ids, observed, labels, list(per_method), {k: v.tolist() for k, v in per_method.items()})


@VECTORS.register("binary", label=VECTOR_LABELS["binary"])
def binary_vector(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return mask


@VECTORS.register("weighted", label=VECTOR_LABELS["weighted"])
def weighted_vector(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return mask * np.abs(scores)


def circuit_vectors(scores: np.ndarray, circuits: list[list[int]], kind: str = "binary") -> np.ndarray:
    """[N, E] circuit vectors (``kind``: a name in :data:`VECTORS`) from edge scores [N, E] and each sample's
    circuit (edge indices)."""
    vector = VECTORS.get(kind)
    s = np.asarray(scores, dtype=float)
    v = np.zeros_like(s)
    for i, c in enumerate(circuits):
        v[i, c] = 1.0
    return vector(s, v)


@DISTANCES.register("cosine", label=DISTANCE_LABELS["cosine"])
def cosine_distance(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(a)
    cos = np.where(den > 0, (x * a).sum(1) / np.where(den > 0, den, 1), 0.0)
    return np.maximum(0.0, 1.0 - cos)


@DISTANCES.register("jaccard", label=DISTANCE_LABELS["jaccard"])
def jaccard_distance(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    mx = np.maximum(x, a).sum(1)
    return np.where(mx > 0, 1.0 - np.minimum(x, a).sum(1) / np.where(mx > 0, mx, 1), 0.0)


@DISTANCES.register("hamming", label=DISTANCE_LABELS["hamming"])
def hamming_distance(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.abs(x - a).mean(1)


def distance(v: np.ndarray, anchor: np.ndarray, kind: str = "cosine") -> np.ndarray:
    """Distances of each row of ``v`` ([N, E] or [E]) to ``anchor`` [E] (``kind``: a name in
    :data:`DISTANCES`)."""
    fn = DISTANCES.get(kind)
    return fn(np.atleast_2d(np.asarray(v, dtype=float)), np.asarray(anchor, dtype=float)[None])


def cud(v: np.ndarray, easy_anchor: np.ndarray, hard_anchor: np.ndarray, kind: str = "cosine") -> np.ndarray:
    d_e, d_h = distance(v, easy_anchor, kind), distance(v, hard_anchor, kind)
    tot = d_e + d_h
    return np.where(tot > 0, d_e / np.where(tot > 0, tot, 1), 0.5)


def auroc(score: np.ndarray, labels: np.ndarray) -> float | None:
    """P(score of a hard (+1) sample > score of an easy (-1) one), ties count one half."""
    hard, easy = score[labels == 1], score[labels == -1]
    if len(hard) == 0 or len(easy) == 0:
        return None
    return float(mannwhitneyu(hard, easy).statistic / (len(hard) * len(easy)))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def cross_validate(vectors: np.ndarray, labels: np.ndarray, kind: str = "cosine", folds: int = 5,
                   seed: int = 0) -> np.ndarray:
    """Out-of-fold CUD of every row of ``vectors``."""
    n = len(vectors)
    if folds < 2 or folds > n:
        raise AnalysisInputError(f"folds must be between 2 and the number of samples ({n}), got {folds}")
    order = np.random.default_rng(seed).permutation(n)
    out = np.full(n, np.nan)
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(np.arange(n), test)
        easy, hard = train[labels[train] == -1], train[labels[train] == 1]
        if len(easy) == 0 or len(hard) == 0:
            out[test] = 0.5  # no anchors in this fold: uninformative
            continue
        out[test] = cud(vectors[test], vectors[easy].mean(0), vectors[hard].mean(0), kind)
    return out
