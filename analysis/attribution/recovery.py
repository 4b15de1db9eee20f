"""Keyword-emphasis recovery (unPact): re-emphasise each forget prompt's keywords (analysis.attribution.emphasis)
and check whether the forgotten answer comes back, beside the retrain control (a model that never learned the
facts: what it "recovers" is the emphasis inventing answers) and the original model.

The engine (``emphasis_outcomes``: the answer outcomes of many prompts under one strategy in batched
forwards) and the study-level entry points (``recover``, ``recovery_cached``, ``stored_outcomes``): every
per-sample outcome lives in the study store (resumable batch jobs, here or on an executor)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from analysis.attribution.core import PairScores, PromptIds, prompt_ids, score_pairs
from analysis.attribution.emphasis import Emphasis, get_emphasis
from analysis.attribution.options import OPTIONS_VERSION, RECOVERY_STORE_KIND, RecoveryOptions
from analysis.attribution.result import (
    Outcome,
    RecoveryReport,
    StrategyRecovery,
    net_recovery,
    per_sample_recovery,
    strategy_recovery,
)
from analysis.attribution.runner import StageProgress, attribute_dataset
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.scoring import PairBatch
from analysis.store import ChunkJob, Compute, Executor, ProgressFn, run_batch

if TYPE_CHECKING:
    from analysis.study import Study


# ---- one model, no store ------------------------------------------------------------------------------------
def keyword_mask(keywords: Sequence[Sequence[int]], batch: PairBatch) -> torch.Tensor:
    """[B, T] bool: True at each row's keyword positions."""
    mask = torch.zeros(batch.tokens.shape, dtype=torch.bool, device=batch.tokens.device)
    for r, kws in enumerate(keywords):
        if kws:
            mask[r, list(kws)] = True
    return mask


def emphasis_outcomes(handle: ModelHandle, strategy: Emphasis, items: Sequence[PromptIds],
                      keywords: Sequence[Sequence[int]], batch_size: int | None = None) -> list[Outcome]:
    """Answer outcomes ({"correct", "prob", "logprob"}) of every item under ``strategy`` in batched forwards;
    an item whose emphasised prompt no longer fits the model's context gets {"error": ...}."""
    strategy.validate(handle)
    rewritten = [strategy.rewrite(it, kw, handle) for it, kw in zip(items, keywords, strict=True)]
    n_ctx = handle.model.cfg.n_ctx
    fits = [len(it.prompt) + len(it.answer) <= n_ctx for it, _ in rewritten]
    idx = [i for i, ok in enumerate(fits) if ok]
    out: list[Outcome] = [{"error": f"the emphasised prompt is longer than the model's context of {n_ctx}"}
                          for _ in items]
    if not idx:
        return out
    kws = [rewritten[i][1] for i in idx]

    def hooks_for(rows: Sequence[int], batch: PairBatch) -> list[tuple[str, Any]]:
        return strategy.hooks(handle, keyword_mask([kws[r] for r in rows], batch))

    scores: PairScores = score_pairs(handle, [rewritten[i][0].pair() for i in idx],
                                     hooks_for=hooks_for if strategy.level == "activation" else None)
    for k, i in enumerate(idx):
        out[i] = {"correct": bool(scores.correct[k]), "prob": float(scores.prob[k]),
                  "logprob": float(scores.logprob[k])}
    return out


# ---- the study store ---------------------------------------------------------------------------------------
def make_outcomes_compute(study: Study, model: str, strategy: Emphasis, keywords: dict[str, list[int]],
                          batch_size: int | None) -> Compute:
    """The per-chunk work of the recovery outcomes: the chunk's answers under ``strategy`` with each sample's
    ``keywords`` emphasised, in batched forwards. Built here or in a Ray worker; the model is loaded
    (``study.load``, cached) only when a chunk is computed."""
    by_id = {s.id: s for s in study.samples()}

    def compute(chunk: list[str]) -> dict[str, Any]:
        h = study.load(model)
        out: dict[str, Any] = {}
        items, kws, good = [], [], []
        for sid in chunk:
            s = by_id[sid]
            try:
                items.append(prompt_ids(h, s.prompt, s.answer, sid))
            except AnalysisInputError as e:
                out[sid] = {"error": str(e)}
                continue
            kws.append(keywords.get(sid, []))
            good.append(sid)
        if good:
            out.update(zip(good, emphasis_outcomes(h, strategy, items, kws, batch_size), strict=True))
        return out

    return compute


def outcome_key(study: Study, model: str, strategy: Emphasis, opts: RecoveryOptions) -> tuple[list[str], dict[str, Any]]:
    """Where one strategy's per-sample outcomes on ``model`` live in the study store: (model fingerprints,
    options key). Emphasis outcomes depend on the keywords, so they are keyed by the keyword source too."""
    fp = study.fingerprint(model)
    if strategy.baseline:
        return [fp], {"version": OPTIONS_VERSION, "strategy": strategy.key()}
    return [fp, study.fingerprint(opts.keyword_source(model))], {"version": OPTIONS_VERSION,
                                                                 "strategy": strategy.key(),
                                                                 "attribution": opts.attribution.key()}


def stored_outcomes(study: Study, model: str, strategy: Emphasis, options: RecoveryOptions,
                    ids: Sequence[str]) -> dict[str, Outcome]:
    """The stored per-sample outcomes of one strategy on ``model`` (read only; absent ids are missing)."""
    models, key = outcome_key(study, model, strategy, options)
    return study.store.get_many(RECOVERY_STORE_KIND, models, key, ids)


def _outcomes(study: Study, model: str, strategy: Emphasis, ids: list[str], keywords: dict[str, list[int]],
              opts: RecoveryOptions, progress: ProgressFn | None,
              executor: Executor | None = None) -> dict[str, Outcome]:
    """Per-sample outcomes of one strategy on one model, through the study store (resumable)."""
    job = ChunkJob(make_outcomes_compute, study, (model, strategy, keywords, opts.attribution.batch_size))
    models, key = outcome_key(study, model, strategy, opts)
    return run_batch(study.store, RECOVERY_STORE_KIND, models, key, ids, job, chunk_size=64, progress=progress,
                     desc=f"{strategy.name} on {model}", executor=executor)


def _model_outcomes(study: Study, model: str, opts: RecoveryOptions, ids: list[str], stages: StageProgress,
                    plain_cache: dict[str, dict[str, Outcome]], executor: Executor | None = None
                    ) -> dict[str, dict[str, Outcome]]:
    """Per strategy (the plain prompt under "none" first), the per-sample outcomes of ``model``, with the
    keywords of its keyword source's attribution emphasised."""
    source = opts.keyword_source(model)
    attr = attribute_dataset(study, source, opts.attribution, sample_ids=ids, progress=stages.next(),
                             executor=executor)
    keywords = {i: r.keywords for i, r in attr.results.items()}
    none = get_emphasis("none")
    if model not in plain_cache:
        plain_cache[model] = _outcomes(study, model, none, ids, keywords, opts, stages.next(), executor)
    else:
        stages.next()
    out = {none.name: plain_cache[model]}
    for strat in opts.emphases():
        out[strat.name] = _outcomes(study, model, strat, ids, keywords, opts, stages.next(), executor)
    return out


def recovery_cached(study: Study, model: str, options: RecoveryOptions | None = None) -> bool:
    """True when every outcome the recovery report of ``model`` needs is in the study store (cheap check:
    the plain-prompt outcomes and the last strategy's outcomes of the model, the retrain control and the
    original)."""
    opts = (options or RecoveryOptions()).validated()
    ids = [s.id for s in study.samples(opts.split)]
    last = opts.emphases()[-1]
    return all(len(stored_outcomes(study, name, strategy, opts, ids)) == len(set(ids))
               for name in study.comparison(model).names for strategy in (get_emphasis("none"), last))


def recover(study: Study, model: str, options: RecoveryOptions | None = None, progress: ProgressFn | None = None,
            executor: Executor | None = None) -> RecoveryReport:
    """Keyword-emphasis recovery of ``model`` on the forget set, with the same numbers on the retrain control
    (study.manifest.retrain) and on the original model. Every per-sample outcome is stored in the study store
    (resumable; a second call is instant).

    Keywords: the KeyTokens of the original model's attribution of each forget sample (``keywords_from``
    "original"), or of each model's own attribution ("self"). Eligible samples, the recovery-rate
    denominator and the probability gain are defined in analysis.attribution.result.StrategyRecovery; the
    report's readings (each strategy net of the retrain control, the best of them, and which strategies
    bring each sample back) in RecoveryReport. Every batch job runs here or on ``executor`` (e.g.
    analysis.distributed.RayExecutor)."""
    opts = (options or RecoveryOptions()).validated()
    comparison = study.comparison(model)
    if "original" not in study.manifest.models:
        raise AnalysisInputError("recovery needs the study's 'original' model (keywords and eligible samples)")
    ids = [s.id for s in study.samples(opts.split)]
    if not ids:
        raise AnalysisInputError(f"the study has no {opts.split} samples")
    retrain = comparison.reference
    if retrain is not None:
        study.entry(retrain)
    names = comparison.names
    stages = StageProgress(progress, (2 + len(opts.strategies or ())) * len(names))
    none = get_emphasis("none")
    plain: dict[str, dict[str, Outcome]] = {}
    plain["original"] = _outcomes(study, "original", none, ids, {}, opts, None, executor)
    eligible = [i for i in ids if plain["original"][i].get("correct")]
    outcomes = {n: _model_outcomes(study, n, opts, ids, stages, plain, executor) for n in names}
    strategies = list(opts.strategies or ())
    results: dict[str, dict[str, StrategyRecovery]] = {
        n: {s: strategy_recovery(s, got[none.name], got[s], eligible) for s in strategies}
        for n, got in outcomes.items()}
    net, best, best_net = net_recovery(results[model], results[retrain] if retrain else None)
    ref = outcomes[retrain] if retrain else None
    per_sample = per_sample_recovery(ids, strategies, plain["original"], outcomes[model][none.name], outcomes[model],
                                     None if ref is None else ref[none.name], ref)
    if progress:
        progress(1.0, "recovery done")
    return RecoveryReport(model=model, retrain=retrain, strategies=strategies, options=opts.key(),
                          fingerprints={n: study.fingerprint(n) for n in names}, results=results[model],
                          retrain_results=results[retrain] if retrain else None,
                          original_results=results["original"], n_forget=len(ids), n_eligible=len(eligible),
                          net_by_strategy=net, best_strategy=best, best_net=best_net, per_sample=per_sample)
