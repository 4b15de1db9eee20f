"""Study-level entry points: per-sample edge scores (resumable, stored), one sample's circuit, CUD scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from analysis.circuits.cud import (
    DISTANCES,
    CUDReport,
    auroc,
    circuit_vectors,
    cross_validate,
    difficulty_labels,
    spearman,
)
from analysis.circuits.eap import EAPOptions, baseline_outputs, edge_scores, faithfulness
from analysis.circuits.graph import Graph
from analysis.circuits.selection import circuit_stats, edge_mask, greedy_circuit
from analysis.errors import AnalysisInputError
from analysis.scoring import make_batch, score_answers
from analysis.store import ProgressFn, run_batch

KIND = "eap_ig"
VERSION = 1


def sample_edge_scores(study: Any, model: str, sample_ids: Sequence[str], options: EAPOptions | None = None,
                       batch_size: int = 32, progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
    """{id: [E] EAP-IG scores} on ``model``, computed in batches and stored per sample (resumable)."""
    opts = options or EAPOptions()
    if opts.baseline == "corrupted":
        raise AnalysisInputError("the study-level scorer supports the zero and mean baselines")
    handle = study.load(model)
    by_id = {s.id: s for s in study.samples()}
    for sid in sample_ids:
        if sid not in by_id:
            raise AnalysisInputError(f"unknown sample id {sid!r}")
    reference = None
    if opts.baseline == "mean":
        ref = study.retain[:64] or study.forget[:64]
        reference = make_batch(handle, [s.prompt for s in ref], [s.answer for s in ref])

    def compute(chunk: list[str]) -> dict[str, Any]:
        ss = [by_id[i] for i in chunk]
        batch = make_batch(handle, [s.prompt for s in ss], [s.answer for s in ss])
        scores = edge_scores(handle.model, batch, opts, reference=reference)
        return {i: [float(f"{x:.6g}") for x in row] for i, row in zip(chunk, scores, strict=True)}

    got = run_batch(study.store, KIND, study.fingerprint(model), {**opts.to_dict(), "version": VERSION},
                    list(sample_ids), compute, chunk_size=batch_size, progress=progress, desc=f"EAP-IG {model}")
    return {k: np.asarray(v, dtype=float) for k, v in got.items()}


@dataclass
class CircuitResult:
    model: str
    sample_id: str
    nodes: list[str]
    edges: list[dict[str, Any]]  # {"src", "dst", "score"} for every edge of the graph
    circuit: list[int]
    faithfulness: dict[str, Any]
    stats: dict[str, Any]
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def circuit_for_sample(study: Any, model: str, sample_id: str, top_n: int = 75,
                       options: EAPOptions | None = None) -> CircuitResult:
    opts = options or EAPOptions()
    if top_n < 1:
        raise AnalysisInputError(f"--top must be >= 1, got {top_n}")
    sample = study.sample(sample_id)
    handle = study.load(model)
    g = Graph.of(handle.model)
    scores = sample_edge_scores(study, model, [sample_id], opts)[sample_id]
    circuit = greedy_circuit(g, scores, top_n)
    batch = make_batch(handle, [sample.prompt], [sample.answer])
    base = baseline_outputs(handle.model, g, batch, "zero") if opts.baseline == "zero" else None
    if opts.baseline == "mean":
        ref = study.retain[:64] or study.forget[:64]
        base = baseline_outputs(handle.model, g, batch, "mean",
                                reference=make_batch(handle, [s.prompt for s in ref], [s.answer for s in ref]))
    f = faithfulness(handle.model, batch, edge_mask(g, circuit)[None], opts.metric, base)
    faith = {"faithfulness": f.faithfulness[0], "metric_full": f.full[0], "metric_circuit": f.circuit[0],
             "metric_empty": f.empty[0], "metric": opts.metric,
             "definition": "(metric_circuit - metric_empty) / (metric_full - metric_empty)"}
    edges = [{"src": e.src, "dst": e.dst, "score": float(s)} for e, s in zip(g.edges, scores, strict=True)]
    return CircuitResult(model, sample_id, g.nodes, edges, circuit, faith, circuit_stats(g, scores, circuit),
                         {**opts.to_dict(), "top_n": top_n})


SIGNATURE_KEYS = ("mean_edge_layer", "mean_path_length", "longest_path", "last_third_share")


def score_study(study: Any, distance: str = "cosine", top_n: int = 75, options: EAPOptions | None = None,
                vector: str = "binary", quantile: float = 0.3, folds: int = 5, seed: int = 0,
                progress: ProgressFn | None = None) -> CUDReport:
    """Cross-validated CUD of every forget sample on the original model, with baselines and the
    depth / path-length signature of easy vs hard circuits (see :mod:`analysis.circuits.cud`)."""
    if distance not in DISTANCES:
        raise AnalysisInputError(f"unknown distance {distance!r} (expected one of {', '.join(DISTANCES)})")
    opts = options or EAPOptions()
    lab = difficulty_labels(study, quantile)
    scores_by_id = sample_edge_scores(study, "original", lab.ids, opts, progress=progress)
    g = Graph.of(study.load("original").model)
    scores = np.stack([scores_by_id[i] for i in lab.ids])
    circuits = [greedy_circuit(g, s, top_n) for s in scores]
    vecs = circuit_vectors(scores, circuits, vector)
    score = cross_validate(vecs, lab.labels, distance, folds=min(folds, len(lab.ids)), seed=seed)
    forget = {s.id: s for s in study.forget}
    handle = study.load("original")
    ans = score_answers(handle, [forget[i].prompt for i in lab.ids], [forget[i].answer for i in lab.ids])
    baselines_raw = {"original_loss": -ans.logprob,  # as a predictor: lower loss (better known) = harder
                     "exposures": np.array([float(forget[i].metadata.get("exposures", np.nan)) for i in lab.ids])}

    def evaluate(x: np.ndarray) -> dict[str, float | None]:
        ok = np.isfinite(x)
        return {"spearman": spearman(x[ok], lab.observed[ok]), "auroc": auroc(x[ok], lab.labels[ok])}

    baselines = {"original_loss": evaluate(-baselines_raw["original_loss"]),
                 "exposures": evaluate(baselines_raw["exposures"])}
    stats = [circuit_stats(g, s, c) for s, c in zip(scores, circuits, strict=True)]
    signature: dict[str, Any] = {}
    for name, code in (("easy", -1), ("hard", 1), ("all", None)):
        members = [st for st, lb in zip(stats, lab.labels, strict=True) if code is None or lb == code]
        signature[name] = {"n": len(members), **{
            k: (float(np.mean([m[k] for m in members if m[k] is not None]))
                if any(m[k] is not None for m in members) else None) for k in SIGNATURE_KEYS}}
    validation = {**evaluate(score), "n": len(lab.ids), "n_hard": int((lab.labels == 1).sum()),
                  "n_easy": int((lab.labels == -1).sum()), "folds": min(folds, len(lab.ids)), "seed": seed,
                  "methods": lab.methods, "baselines": baselines,
                  "note": "CUD is out-of-fold; baselines need no fitting. original_loss predicts harder for "
                          "lower loss; exposures predicts harder for more exposures."}
    return CUDReport(lab.ids, score.tolist(), lab.observed.tolist(), lab.labels.tolist(), distance, validation,
                     signature, {**opts.to_dict(), "top_n": top_n, "vector": vector, "quantile": quantile})
