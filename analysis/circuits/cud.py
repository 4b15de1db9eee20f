"""CUD: circuit-guided unlearning difficulty (Cheng et al. 2026), scored before unlearning.

Calibration labels (:func:`difficulty_labels`): for every model of the study with role ``unlearned`` whose
``unlearning.json`` records its run (``difficulty``, ``trajectory``; aligned with ``forget_ids``), each
forget sample gets that method's difficulty of one kind (:data:`~analysis.circuits.options.LabelKind`,
read by :func:`method_difficulty`, oriented higher = harder and in [0, 1]):

* ``auc_after`` (the default): the mean answer probability over the unlearning steps, the original's row
  excluded (analysis.unlearning.base). It shares no term with the "original model's answer loss" baseline.
* ``auc`` (the labels before issue 15): the same mean with row 0, the original model's own probability,
  included: the very quantity of the answer-loss baseline, so that baseline agreed with it partly by
  construction. Kept for comparison (``CUDReport.label_comparison``).
* ``final_loss`` (the CUD reference's votes): the answer loss after unlearning, lower = harder; used as
  ``exp(-final_loss)``, the final answer probability (the same order, so the same votes).

The samples in the top ``quantile`` (default 30%) of a method's difficulty are *hard* for it, those in the
bottom ``quantile`` *easy*. A sample is labelled hard (easy) when a strict majority of the methods call it
hard (easy); otherwise it is unlabelled. Controls (retrain, readout suppression) are not used.
``observed`` difficulty = the mean of that difficulty across those methods.

Circuit vectors: ``binary`` = the 0/1 mask of the sample's top-n greedy circuit over all edges;
``weighted`` = |score| x mask (registered in :data:`VECTORS`). Anchors (:func:`mean_anchor`,
:func:`top_n_anchor`): ``mean`` (ours): the mean vector of the easy (hard) calibration samples, so a binary
anchor holds each edge's share of circuits; ``top_n`` (the reference's): the top-n greedy circuit of the
easy (hard) set's mean edge scores (EAP-IG over the set), as a circuit vector of the same kind (binary:
0/1).
Distances ``d(v, a)``: ``cosine`` = max(0, 1 - cos(v, a)); ``jaccard`` = 1 - sum(min(v, a)) / sum(max(v, a))
(weighted Jaccard: the set Jaccard distance on 0/1 vectors); ``hamming`` = mean |v - a| (the normalised
Hamming distance on 0/1 vectors, its expectation against a fractional anchor); registered in
:data:`DISTANCES`.
``CUD = d_E / (d_E + d_H)`` in [0, 1], 0.5 when both are 0; higher = closer to the hard anchor = harder.

Validation (:func:`cross_validate`): k seeded folds over the forget samples; anchors are built from the
labelled samples outside a fold and score the samples inside it, so every score is out-of-fold. Spearman
rho against observed difficulty (all forget samples) and AUROC = P(score of a hard sample > score of an
easy one) = Mann-Whitney U / (n_hard n_easy), for CUD and for baselines (given as "higher = harder").

Departures from the CUD reference code
--------------------------------------
Our setting (``CUDOptions.setting="ours"``, the default) departs from the authors' code in four ways; the
reference setting (``setting="reference"``, ``erasure score --reference-setting``, the Difficulty page's
toggle) restores each of them:

1. **IG over the input embeddings** (one IG run interpolates the embeddings and every node follows) instead
   of **IG over each node's activations** (node by node, that node's output interpolated alone).
   Reference: ``EAPOptions.ig_over="activations"``, one IG run per upstream node (21 on the organism, about
   12 times slower there).
2. **Midpoint interpolation points** ``(k + 1/2) / steps`` instead of the reference's ``k / steps``,
   k = 1..steps. Reference: ``EAPOptions.points="endpoint"``.
3. **Mean-of-binary anchors** (each edge's share of the easy / hard circuits) instead of a **binary top-n
   anchor circuit** (the greedy top-n circuit of the set's mean edge scores; n = ``top_n``, 75 by default,
   capped by the graph's edges). Reference: :func:`top_n_anchor`.
4. **Labels from the trajectory's area** (``auc_after``; before issue 15 ``auc``, which included the
   original's own probability) instead of **votes from the post-unlearning loss**. Reference:
   ``final_loss`` labels.

Still different in both settings: the reference labels the top / bottom 50 samples per method, we label a
``quantile`` share (a study's forget set may hold fewer than 100 samples); its loss may be the mean per-token
NLL where ours is the NLL of the whole answer (the same order for one-token answers, as on the organism);
and for IG over activations with the ``zero`` baseline, ``b_u`` is node ``u``'s output on all-zero input
embeddings (analysis.circuits.eap), which for every node but the input need not be zero.
The edge-score options of the reference setting have their own store key, so the two settings never
share stored edge scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import mannwhitneyu, spearmanr

from analysis.circuits.options import DISTANCE_LABELS, VECTOR_LABELS, LabelKind, check_choice
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
    observed: np.ndarray  # mean difficulty (of ``kind``) across methods, higher = harder
    labels: np.ndarray  # +1 hard, -1 easy, 0 unlabelled
    methods: list[str]
    per_method: dict[str, list[float]] = field(default_factory=dict)
    kind: str = "auc_after"

    def to_dict(self) -> dict[str, Any]:
        return {"ids": self.ids, "observed": self.observed.tolist(), "labels": self.labels.tolist(),
                "methods": self.methods, "per_method": self.per_method, "kind": self.kind}


def labels_from_scores(per_method: dict[str, np.ndarray],
                       quantile: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(observed, labels) from {method: difficulty per sample, higher = harder}: the per-method quantile
    votes and the strict majority of the module docstring; observed = the mean across methods."""
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
    labels[(hard_votes > need) & (easy_votes > need)] = 0  # constant difficulty: no information
    return aucs.mean(0), labels.astype(int)


labels_from_auc = labels_from_scores  # the name before issue 15 (the votes were on auc then)


def method_difficulty(log: dict[str, Any], kind: str = "auc_after") -> dict[str, float] | None:
    """{forget id: difficulty of ``kind``} of one unlearning run (its ``unlearning.json``), higher = harder,
    in [0, 1] (module docstring); None when the record holds neither that difficulty nor the trajectory it
    is computed from, or a value is not finite."""
    check_choice("label kind", kind, LabelKind)
    ids = log.get("forget_ids")
    recorded = log.get("difficulty", {}).get(kind)
    if recorded is None and log.get("trajectory") is not None:  # a record written before the kind existed
        traj = np.asarray(log["trajectory"], dtype=float)
        if traj.ndim == 2 and traj.shape[0] > 1:
            recorded = {"auc": traj.mean(0), "auc_after": traj[1:].mean(0),
                        "final_loss": -np.log(np.maximum(traj[-1], np.finfo(float).tiny))}[kind]
    if ids is None or recorded is None or len(recorded) != len(ids):
        return None
    values = np.asarray(recorded, dtype=float)
    if kind == "final_loss":
        values = np.exp(-values)  # the final answer probability: lower loss = higher = harder
    if not np.all(np.isfinite(values)):
        return None
    return {str(i): float(v) for i, v in zip(ids, values, strict=True)}


def difficulty_labels(study: Study, quantile: float = 0.3, kind: str = "auc_after") -> DifficultyLabels:
    """Calibration labels of the study's forget samples from its unlearned models' difficulty of ``kind``
    (module docstring)."""
    check_choice("label kind", kind, LabelKind)
    ids = [s.id for s in study.forget]
    per_method: dict[str, np.ndarray] = {}
    for name in study.unlearned_names:
        if study.entry(name).role != "unlearned":
            continue
        log = study.read_model_json(name, "unlearning.json")
        by_id = method_difficulty(log, kind) if log else None
        if not by_id or not set(ids) <= set(by_id):
            continue
        per_method[name] = np.array([by_id[i] for i in ids], dtype=float)
    if not per_method:
        raise StudyError(f"this study has no unlearned model with observed per-sample difficulty ({kind} from "
                         f"the difficulty or trajectory of unlearning.json)")
    observed, labels = labels_from_scores(per_method, quantile)
    return DifficultyLabels(ids, observed, labels, list(per_method), {k: v.tolist() for k, v in per_method.items()},
                            kind)


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


AnchorFn = Callable[[np.ndarray], np.ndarray]  # (row indices of the anchor set) -> anchor vector [E]


def mean_anchor(vectors: np.ndarray) -> np.ndarray:
    """Ours: the mean circuit vector of the anchor set (for binary vectors, each edge's share of circuits)."""
    return np.asarray(vectors, dtype=float).mean(0)


def top_n_anchor(scores: np.ndarray, select: Callable[[np.ndarray], list[int]], vector: str = "binary") -> np.ndarray:
    """The reference's anchor: the circuit that ``select`` (e.g. the greedy top-n of
    analysis.circuits.selection) picks from the anchor set's mean edge scores ([N, E] -> [E]: EAP-IG over the
    set), as a circuit vector of kind ``vector`` (binary: 0/1 on its edges; weighted: |mean score| there)."""
    mean = np.asarray(scores, dtype=float).mean(0)
    return circuit_vectors(mean[None], [select(mean)], vector)[0]


def cross_validate(vectors: np.ndarray, labels: np.ndarray, kind: str = "cosine", folds: int = 5,
                   seed: int = 0, anchor: AnchorFn | None = None) -> np.ndarray:
    """Out-of-fold CUD of every row of ``vectors``. ``anchor`` builds an anchor from the row indices of the
    easy (hard) training samples (default: :func:`mean_anchor` of their vectors)."""
    make = anchor or (lambda rows: mean_anchor(vectors[rows]))
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
        out[test] = cud(vectors[test], make(easy), make(hard), kind)
    return out
