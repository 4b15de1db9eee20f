"""Output-level metrics per model: forget / paraphrase / retain accuracy, answer probability, utility,
and forget quality against the retrain control.

Forget quality follows TOFU (Maini et al. 2024) as open-unlearning computes it: the p-value of a
two-sample Kolmogorov-Smirnov test between the truth-ratio distributions on the forget set of the
evaluated model and of the retrain model. Truth ratio of a sample = mean over perturbed (wrong) answers
of the length-normalised answer probability, divided by that of the true answer. Perturbed answers are
other values of the same relation among the study's samples (up to 5, chosen deterministically).
High p-value (near 1) = indistinguishable from a model that never learned the forget set.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from analysis.data.schema import Sample
from analysis.models.handle import ModelHandle
from analysis.scoring import score_answers
from analysis.store import ProgressFn

if TYPE_CHECKING:
    from analysis.study import Study

# version 2: answer probabilities are length-normalised, exp(mean log p over the answer tokens), as every other
# analysis reads a multi-token answer (version 1 stored the joint probability, exp(sum), ~1e-90 for a TOFU-length
# answer; identical for one-token answers such as the organism's)
EVAL_OPTIONS: dict[str, Any] = {"version": 2, "n_perturbed": 5}


@dataclass
class ModelEval:
    forget_acc: float
    forget_prob: float
    paraphrase_acc: float | None
    retain_acc: float
    retain_prob: float
    utility: float | None
    forget_quality: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def perturbed_answers(samples: list[Sample], pool: list[Sample], k: int) -> list[list[str]]:
    """Up to k wrong answers per sample: other answers of the same relation, deterministic per sample id."""
    by_rel: dict[str, set[str]] = defaultdict(set)
    for s in pool:
        by_rel[s.relation].add(s.answer)
    out = []
    for s in samples:
        cands = sorted(by_rel[s.relation] - {s.answer})
        cands.sort(key=lambda a: hashlib.sha256(f"{s.id}|{a}".encode()).hexdigest())
        out.append(cands[:k])
    return out


def score_model(handle: ModelHandle, forget: list[Sample], retain: list[Sample], utility: list[Sample],
                pool: list[Sample], n_perturbed: int = 5) -> dict[str, Any]:
    """Every prompt of the evaluation in one batched scoring pass; returns metrics + per-sample values."""
    prompts: list[str] = []
    answers: list[str] = []
    spans: dict[str, slice] = {}

    def add(key: str, ps: list[str], ans: list[str]) -> None:
        spans[key] = slice(len(prompts), len(prompts) + len(ps))
        prompts.extend(ps)
        answers.extend(ans)

    add("forget", [s.prompt for s in forget], [s.answer for s in forget])
    add("retain", [s.prompt for s in retain], [s.answer for s in retain])
    add("utility", [s.prompt for s in utility], [s.answer for s in utility])
    para = [(p, s.answer) for s in forget for p in s.paraphrases]
    add("paraphrase", [p for p, _ in para], [a for _, a in para])
    wrong = perturbed_answers(forget, pool, n_perturbed)
    flat = [(s.prompt, a, i) for i, (s, ws) in enumerate(zip(forget, wrong, strict=True)) for a in ws]
    add("perturbed", [p for p, _, _ in flat], [a for _, a, _ in flat])
    sc = score_answers(handle, prompts, answers)

    def part(key: str, attr: str) -> np.ndarray:
        return getattr(sc, attr)[spans[key]]

    f_norm = part("forget", "norm_prob")
    pert = part("perturbed", "norm_prob")
    owner = np.array([i for _, _, i in flat], dtype=int)
    pert_mean = np.array([pert[owner == i].mean() if (owner == i).any() else np.nan for i in range(len(forget))])
    truth_ratio = pert_mean / np.maximum(f_norm, 1e-30)

    def mean(x: np.ndarray) -> float | None:
        return float(np.mean(x)) if len(x) else None

    return {
        "metrics": {"forget_acc": mean(part("forget", "correct")), "forget_prob": mean(f_norm),
                    "paraphrase_acc": mean(part("paraphrase", "correct")),
                    "retain_acc": mean(part("retain", "correct")), "retain_prob": mean(part("retain", "norm_prob")),
                    "utility": mean(part("utility", "correct"))},
        "per_sample": {
            "ids": [s.id for s in forget] + [s.id for s in retain],
            "prob": np.concatenate([f_norm, part("retain", "norm_prob")]).tolist(),
            "correct": np.concatenate([part("forget", "correct"), part("retain", "correct")]).astype(bool).tolist(),
        },
        "truth_ratio": truth_ratio.tolist(),
    }


def forget_quality(truth_ratio: list[float], retrain_truth_ratio: list[float]) -> float | None:
    a = np.asarray(truth_ratio, dtype=float)
    b = np.asarray(retrain_truth_ratio, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return None
    return float(stats.ks_2samp(a, b).pvalue)


def model_scores(study: Study, name: str) -> dict[str, Any]:
    """Scores of one model, cached in the study store under its fingerprint."""
    fp = study.fingerprint(name)
    cached = study.store.get("eval", [fp], EVAL_OPTIONS)
    if cached is not None:
        return cached
    handle = study.load(name)
    utility = study.samples("utility") if "utility" in study.manifest.samples else []
    result = score_model(handle, study.forget, study.retain, utility, study.forget + study.retain,
                         EVAL_OPTIONS["n_perturbed"])
    study.store.put("eval", [fp], EVAL_OPTIONS, result)
    return result


def evaluate_study(study: Study, names: list[str] | None = None,
                   progress: ProgressFn | None = None) -> dict[str, ModelEval]:
    """The scoreboard: ModelEval per model; forget quality against the study's retrain model (None for
    the retrain model itself and for studies without one)."""
    names = names or study.model_names
    retrain = study.manifest.retrain
    scores: dict[str, dict[str, Any]] = {}
    for i, n in enumerate(names):
        scores[n] = model_scores(study, n)
        if progress:
            progress((i + 1) / len(names), f"evaluated {n}")
    ref = None
    if retrain:
        ref = scores[retrain] if retrain in scores else model_scores(study, retrain)
    out: dict[str, ModelEval] = {}
    for n, sc in scores.items():
        fq = forget_quality(sc["truth_ratio"], ref["truth_ratio"]) if ref is not None and n != retrain else None
        out[n] = ModelEval(**sc["metrics"], forget_quality=fq)
    return out
