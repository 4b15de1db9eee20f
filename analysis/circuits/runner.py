"""Study-level entry points of the circuits analysis: per-sample EAP-IG edge scores (stored per sample under
:data:`~analysis.circuits.options.STORE_KIND`, resumable, here or on an executor such as Ray), one sample's
circuit with its faithfulness and statistics (``circuit_for_sample``; a typed prompt: ``circuit_typed``), and
the CUD difficulty scores of the forget set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from analysis.circuits.cud import (
    AnchorFn,
    DifficultyLabels,
    auroc,
    circuit_vectors,
    cross_validate,
    difficulty_labels,
    mean_anchor,
    spearman,
    top_n_anchor,
)
from analysis.circuits.eap import BASELINES, baseline_outputs, edge_scores, faithfulness
from analysis.circuits.graph import Graph
from analysis.circuits.options import (
    CIRCUIT_DEFAULTS,
    DEFAULT_TOP_N,
    LABEL_KIND_LABELS,
    STORE_KIND,
    CUDOptions,
    DistanceName,
    EAPOptions,
)
from analysis.circuits.result import CircuitResult, CUDReport
from analysis.circuits.selection import circuit_stats, edge_mask, greedy_circuit
from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError, StudyError
from analysis.models.device import memory_budget
from analysis.models.handle import ModelHandle
from analysis.scoring import PairBatch, default_batch_size, encode_pair, make_batch, score_answers
from analysis.store import ChunkJob, Compute, Executor, ProgressFn, options_hash, run_batch
from analysis.subjects import REPLACEMENT_RULE, SubjectPool, pick_replacement, subject_input
from analysis.typed import slot, typed_input

if TYPE_CHECKING:
    from analysis.study import Study

MAX_BATCH = 32  # samples per EAP-IG batch (and per stored chunk) when memory allows


def one_device(handle: ModelHandle) -> ModelHandle:
    """EAP-IG stacks every layer's node outputs in one tensor: a model split over GPUs cannot run it."""
    if int(handle.model.cfg.n_devices) > 1:
        raise AnalysisInputError(f"EAP-IG needs {handle.name!r} on one device; it is split over "
                                 f"{handle.model.cfg.n_devices} (--n-devices 1)")
    return handle


def eap_batch_size(handle: ModelHandle, seq_len: int, cap: int = MAX_BATCH) -> int:
    """Samples per EAP-IG batch: at most ``cap``, fewer when a batch's node outputs and gradients
    ([T, nodes, d_model] per sample, several copies) and its forward/backward activations would not fit the
    memory budget (half the free memory of a GPU, 1 GiB on the CPU: analysis.models.device.memory_budget)."""
    g = Graph.of(handle.model)
    budget = memory_budget(handle.device)
    node_bytes = seq_len * int(handle.model.cfg.d_model) * 4 * (4 * len(g.upstream) + 2 * len(g.downstream))
    by_nodes = (budget // 2) // max(node_bytes, 1)
    by_activations = default_batch_size(handle, seq_len=seq_len, budget_bytes=budget // 2) // 3
    return int(max(1, min(cap, by_nodes, by_activations)))


def _todo_batch_size(handle: ModelHandle, todo: Sequence[Sample]) -> int:
    """:func:`eap_batch_size` for the longest prompt + answer still to score."""
    longest = max(sum(map(len, encode_pair(handle.tokenizer, s.prompt, s.answer, handle.prepend_bos)))
                  for s in todo)
    return eap_batch_size(handle, longest)


def subject_replaced(handle: ModelHandle, samples: Sequence[Sample], batch: PairBatch, pool: SubjectPool,
                     seed: int) -> torch.Tensor:
    """The corrupted baseline input: ``batch.tokens`` with each sample's subject replaced by another subject
    of the study with as many tokens whose answer to the sample's relation differs (symmetric token
    replacement, the same choice causal tracing makes for this seed), so positions and padding are unchanged."""
    tokens = batch.tokens.clone()
    for row, s in enumerate(samples):
        inp = subject_input(handle, s, purpose="the corrupted EAP-IG baseline")
        if tuple(tokens[row, :len(inp.ids)].tolist()) != inp.ids:
            raise RuntimeError(f"sample {s.id!r}: batch tokens and trace tokens disagree")
        s0, s1 = inp.subject_range
        repl = pick_replacement(inp.subject_ids, pool, seed, relation=inp.relation, answer=inp.answer)
        tokens[row, s0:s1] = tokens.new_tensor(repl)
    return tokens


def reference_samples(study: Study) -> list[Sample]:
    """The samples the mean baseline averages the input embeddings over: 64 retain samples, else forget."""
    return study.retain[:64] or study.forget[:64]


def mean_reference(study: Study, model: str) -> PairBatch:
    """The reference batch the mean baseline averages the input embeddings over (:func:`reference_samples`),
    tokenised for ``model``."""
    ref = reference_samples(study)
    return make_batch(study.load(model), [s.prompt for s in ref], [s.answer for s in ref])


def store_key(study: Study, options: EAPOptions) -> dict[str, Any]:
    """Where per-sample edge scores are stored: the options, and what the baseline reads of the rest of the
    study (for the corrupted baseline the subject pool with what each subject answers, and the version of the
    replacement rule; the reference samples for the mean one), so an edited sample elsewhere recomputes the
    scores it changes."""
    key = options.key()
    run = BASELINES.get(options.baseline)
    if run.needs_corrupted:
        key = {**key, "subjects": study.subjects_digest(answers=True), "replacement_rule": REPLACEMENT_RULE}
    if run.needs_reference:
        keys = study.sample_keys()
        key = {**key, "reference": options_hash({"samples": [keys[s.id] for s in reference_samples(study)]})}
    return key


def _corrupted(study: Study, handle: ModelHandle, samples: Sequence[Sample], batch: PairBatch,
               options: EAPOptions) -> torch.Tensor | None:
    """The corrupted baseline's input tokens when ``options``' baseline needs them (else None)."""
    if not BASELINES.get(options.baseline).needs_corrupted:
        return None
    return subject_replaced(handle, samples, batch, study.subject_pool(), options.seed)


def _reference(study: Study, model: str, options: EAPOptions) -> PairBatch | None:
    """The mean baseline's reference batch when ``options``' baseline needs one (else None)."""
    return mean_reference(study, model) if BASELINES.get(options.baseline).needs_reference else None


def make_edge_scores_compute(study: Study, model: str, options: EAPOptions) -> Compute:
    """The per-chunk work of ``sample_edge_scores``: one EAP-IG batch per chunk, scores rounded to 6
    significant digits for the store. Built here or in a Ray worker from the same arguments."""
    by_id = {s.id: s for s in study.samples()}
    state: dict[str, Any] = {}

    def compute(chunk: list[str]) -> dict[str, Any]:
        if "handle" not in state:  # load the model only when something is left to compute
            state["handle"] = one_device(study.load(model))
            state["reference"] = _reference(study, model, options)
        rows = _edge_score_rows(study, state["handle"], [by_id[i] for i in chunk], options, state["reference"])
        return dict(zip(chunk, rows, strict=True))

    return compute


def _edge_score_rows(study: Study, handle: ModelHandle, samples: Sequence[Sample], options: EAPOptions,
                     reference: PairBatch | None) -> list[list[float]]:
    """One EAP-IG batch of ``samples`` (study samples or typed ones), each row rounded to 6 significant digits
    as stored."""
    batch = make_batch(handle, [s.prompt for s in samples], [s.answer for s in samples])
    scores = edge_scores(handle.model, batch, options, corrupted=_corrupted(study, handle, samples, batch, options),
                         reference=reference)
    return [[float(f"{x:.6g}") for x in row] for row in scores]


def sample_edge_scores(study: Study, model: str, sample_ids: Sequence[str], options: EAPOptions | None = None,
                       batch_size: int | None = None, progress: ProgressFn | None = None,
                       executor: Executor | None = None) -> dict[str, np.ndarray]:
    """{id: [E] EAP-IG scores} on ``model``, computed in batches of ``batch_size`` samples (default:
    :func:`eap_batch_size`) and stored per sample (resumable), here or on ``executor`` (e.g. Ray)."""
    opts = options or EAPOptions()
    if batch_size is not None and batch_size < 1:
        raise AnalysisInputError(f"batch size must be at least 1, got {batch_size}")
    by_id = {s.id: s for s in study.samples()}
    for sid in sample_ids:
        if sid not in by_id:
            raise AnalysisInputError(f"unknown sample id {sid!r}")
    key = store_key(study, opts)
    fp = study.fingerprint(model)
    if batch_size is None:
        stored = study.store.get_many(STORE_KIND, fp, key, sample_ids)
        todo = [by_id[i] for i in sample_ids if i not in stored]
        # the memory rule needs the model: only load it when something is left to compute
        batch_size = _todo_batch_size(study.load(model), todo) if todo else MAX_BATCH
    job = ChunkJob(make_edge_scores_compute, study, (model, opts))
    got = run_batch(study.store, STORE_KIND, fp, key, list(sample_ids), job, chunk_size=batch_size, progress=progress,
                    desc=f"EAP-IG {model}", executor=executor)
    return {k: np.asarray(v, dtype=float) for k, v in got.items()}


def _circuit(study: Study, model: str, sample: Sample, scores: np.ndarray, top_n: int,
             opts: EAPOptions) -> CircuitResult:
    """The one "by Sample" core of ``circuit_for_sample`` and ``circuit_typed``: the greedy top-n circuit of
    ``scores`` (``sample``'s edge scores on ``model``), its faithfulness and statistics."""
    handle = one_device(study.load(model))
    g = Graph.of(handle.model)
    circuit = greedy_circuit(g, scores, top_n)
    batch = make_batch(handle, [sample.prompt], [sample.answer])
    base = baseline_outputs(handle.model, g, batch, opts.baseline, _corrupted(study, handle, [sample], batch, opts),
                            _reference(study, model, opts))
    f = faithfulness(handle.model, batch, edge_mask(g, circuit)[None], opts.metric, base)
    faith = {"faithfulness": f.faithfulness[0], "metric_full": f.full[0], "metric_circuit": f.circuit[0],
             "metric_empty": f.empty[0], "metric": opts.metric, "note": f.notes[0],
             "definition": "(metric_circuit - metric_empty) / (metric_full - metric_empty)"}
    edges = g.edge_dicts(scores)
    return CircuitResult(model, sample.id, g.nodes, edges, circuit, faith, circuit_stats(g, scores, circuit),
                         {**opts.to_dict(), "top_n": top_n})


def _check_top_n(top_n: int) -> None:
    if top_n < 1:
        raise AnalysisInputError(f"--top must be >= 1, got {top_n}")


def circuit_for_sample(study: Study, model: str, sample_id: str, top_n: int = DEFAULT_TOP_N,
                       options: EAPOptions | None = None) -> CircuitResult:
    """EAP-IG edge scores of one sample on ``model`` (default options: CIRCUIT_DEFAULTS, which give faithful
    circuits), its greedy top-n circuit, the circuit's faithfulness and statistics."""
    opts = options or CIRCUIT_DEFAULTS
    _check_top_n(top_n)
    sample = study.sample(sample_id)
    scores = sample_edge_scores(study, model, [sample_id], opts)[sample_id]
    return _circuit(study, model, sample, scores, top_n, opts)


def circuit_typed(study: Study, model: str, sample: Sample, top_n: int = DEFAULT_TOP_N,
                  options: EAPOptions | None = None, use_store: bool = True) -> CircuitResult:
    """:func:`circuit_for_sample` of a typed prompt (``analysis.typed.typed_sample``): the same edge scores,
    circuit, faithfulness and statistics a sample of the study with that text gets. A subject is needed only
    by the corrupted baseline (the default; the zero and mean baselines need none). AnalysisInputError: no
    subject under the corrupted baseline, a hand-made sample, a word the model's tokenizer cannot encode, no
    other subject of as many tokens to replace it with, too long for the model. The edge scores are stored
    under the typed sample's own slot (analysis.typed)."""
    opts = options or CIRCUIT_DEFAULTS
    _check_top_n(top_n)
    needs = ("the corrupted EAP-IG baseline (it replaces the subject; the zero and mean baselines need none)"
             if BASELINES.get(opts.baseline).needs_corrupted else "")
    typed = typed_input(study, model, sample, needs_subject=needs)
    key = store_key(study, opts)
    where = slot(study, STORE_KIND, [study.fingerprint(model)], typed)
    row = where.get(key) if use_store else None
    if row is None:
        handle = one_device(study.load(model))
        row = _edge_score_rows(study, handle, [typed], opts, _reference(study, model, opts))[0]
        if use_store:
            where.put(key, row)
    return _circuit(study, model, typed, np.asarray(row, dtype=float), top_n, opts)


SIGNATURE_KEYS = ("mean_edge_layer", "mean_path_length", "longest_path", "last_third_share")


def score_study(study: Study, options: CUDOptions | None = None, *, distance: DistanceName | None = None,
                top_n: int | None = None, folds: int | None = None, progress: ProgressFn | None = None,
                executor: Executor | None = None, batch_size: int | None = None) -> CUDReport:
    """Cross-validated CUD of every forget sample on the original model, with baselines and the
    depth / path-length signature of easy vs hard circuits (see :mod:`analysis.circuits.cud`). ``distance``,
    ``top_n`` and ``folds``, when given, replace those of ``options`` (default CUDOptions()). The per-sample
    edge scores run here or on ``executor`` (e.g. analysis.distributed.RayExecutor), ``batch_size`` samples
    per chunk (default: the memory budget's). The report's ``label_comparison`` scores the same circuits
    against every label kind (the old ``auc``, the default ``auc_after``, the reference's ``final_loss``)."""
    if options is not None and not isinstance(options, CUDOptions):
        raise AnalysisInputError(f"score_study takes CUDOptions (the edge-score options are CUDOptions.eap), "
                                 f"got {type(options).__name__}")
    given = {"distance": distance, "top_n": top_n, "folds": folds}
    opts = replace(options or CUDOptions(), **{k: v for k, v in given.items() if v is not None}).validated()
    lab = difficulty_labels(study, opts.quantile, opts.label_kind)
    scores_by_id = sample_edge_scores(study, "original", lab.ids, opts.scoring_eap, batch_size=batch_size,
                                      progress=progress, executor=executor)
    g = Graph.of(study.load("original").model)
    scores = np.stack([scores_by_id[i] for i in lab.ids])
    circuits = [greedy_circuit(g, s, opts.top_n) for s in scores]
    vecs = circuit_vectors(scores, circuits, opts.vector)

    def top_n_of_set(rows: np.ndarray) -> np.ndarray:  # the reference's binary top-n anchor circuit
        return top_n_anchor(scores[rows], lambda s: greedy_circuit(g, s, opts.top_n), opts.vector)

    def mean_of_set(rows: np.ndarray) -> np.ndarray:  # ours: the mean circuit vector
        return mean_anchor(vecs[rows])

    anchor: AnchorFn = top_n_of_set if opts.anchor_kind == "top_n" else mean_of_set
    n_folds = min(opts.folds, len(lab.ids))
    score = cross_validate(vecs, lab.labels, opts.distance, folds=n_folds, seed=opts.seed, anchor=anchor)
    forget = {s.id: s for s in study.forget}
    handle = study.load("original")
    ans = score_answers(handle, [forget[i].prompt for i in lab.ids], [forget[i].answer for i in lab.ids])
    # as predictors, higher = harder: lower original loss (better known) = harder; more exposures = harder
    predictors = {"original_loss": ans.logprob.astype(float),
                  "exposures": np.array([float(forget[i].metadata.get("exposures", np.nan)) for i in lab.ids])}

    def evaluate(x: np.ndarray, against: DifficultyLabels = lab) -> dict[str, float | None]:
        ok = np.isfinite(x)
        return {"spearman": spearman(x[ok], against.observed[ok]), "auroc": auroc(x[ok], against.labels[ok])}

    baselines = {name: evaluate(x) for name, x in predictors.items()}
    stats = [circuit_stats(g, s, c) for s, c in zip(scores, circuits, strict=True)]
    signature: dict[str, Any] = {}
    for name, code in (("easy", -1), ("hard", 1), ("all", None)):
        members = [st for st, lb in zip(stats, lab.labels, strict=True) if code is None or lb == code]
        signature[name] = {"n": len(members), **{
            k: (float(np.mean([m[k] for m in members if m[k] is not None]))
                if any(m[k] is not None for m in members) else None) for k in SIGNATURE_KEYS}}
    validation = {**evaluate(score), "n": len(lab.ids), "n_hard": int((lab.labels == 1).sum()),
                  "n_easy": int((lab.labels == -1).sum()), "folds": n_folds, "seed": opts.seed,
                  "methods": lab.methods, "labels": lab.kind, "baselines": baselines,
                  "note": "CUD is out-of-fold; baselines need no fitting. original_loss predicts harder for "
                          "lower loss; exposures predicts harder for more exposures."}
    comparison: dict[str, Any] = {}
    for kind in LABEL_KIND_LABELS:
        try:
            other = lab if kind == lab.kind else difficulty_labels(study, opts.quantile, kind)
        except StudyError as err:
            comparison[kind] = {"error": str(err)}
            continue
        oof = score if other is lab else cross_validate(vecs, other.labels, opts.distance, folds=n_folds,
                                                        seed=opts.seed, anchor=anchor)
        comparison[kind] = {"definition": LABEL_KIND_LABELS[kind], "cud": evaluate(oof, other),
                            "baselines": {name: evaluate(x, other) for name, x in predictors.items()},
                            "n_hard": int((other.labels == 1).sum()), "n_easy": int((other.labels == -1).sum()),
                            "methods": other.methods}
    anchors = {name: [float(f"{x:.6g}") for x in anchor(np.flatnonzero(lab.labels == code))]
               for name, code in (("easy", -1), ("hard", 1)) if (lab.labels == code).any()}
    return CUDReport(lab.ids, score.tolist(), lab.observed.tolist(), lab.labels.tolist(), opts.distance, validation,
                     signature, opts.report_options(), anchors, comparison)
