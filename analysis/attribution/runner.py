"""Prompt-token attribution (unPact) of samples on the models of a study: one sample (``attribute``), many
samples batched together (``attribute_samples``), stored in and loaded from the study store
(``attribute_sample``, ``attribute_dataset``: resumable batch jobs), before vs after unlearning
(``compare_models``), and keyword-emphasis recovery against the retrain control (``recover``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from analysis.attribution.core import (
    PairScores,
    PromptIds,
    grad_contributions,
    key_tokens,
    loo_contributions,
    prompt_ids,
    score_pairs,
)
from analysis.attribution.emphasis import Emphasis, EmphasisParams, get_emphasis, strategy_names
from analysis.attribution.options import (
    ATTRIBUTION_KIND,
    KEYWORD_SOURCES,
    OPTIONS_VERSION,
    RECOVERY_KIND,
    AttributionOptions,
    neutral_token_id,
)
from analysis.attribution.result import (
    AttributionComparison,
    Outcome,
    RecoveryReport,
    TokenAttribution,
    compare,
    strategy_recovery,
)
from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.scoring import PairBatch
from analysis.store import ChunkJob, Compute, Executor, ProgressFn, run_batch

if TYPE_CHECKING:
    from analysis.study import Study


# ---- one model, no store ------------------------------------------------------------------------------------
def token_strings(handle: ModelHandle, ids: Sequence[int]) -> list[str]:
    """Each token id decoded on its own (the labels of a heatmap's columns)."""
    return [handle.tokenizer.decode([int(i)]) for i in ids]


def _build(handle: ModelHandle, item: PromptIds, contributions: list[float | None], logprob: float,
           opts: AttributionOptions, sample: Sample | None, prompt: str, answer: str,
           ablated: list[float | None] | None = None, baseline: float | None = None) -> TokenAttribution:
    return TokenAttribution(tokens=token_strings(handle, item.prompt), token_ids=list(item.prompt),
                            contributions=contributions, keywords=key_tokens(contributions, opts.alpha, opts.beta),
                            method=opts.method, options=opts.key(), model=handle.fingerprint,
                            sample_id=sample.id if sample else "", prompt=prompt, answer=answer, logprob=logprob,
                            ablated_logprob=ablated, baseline_logprob=baseline)


def attribute_pairs(handle: ModelHandle, pairs: Sequence[tuple[str, str]], options: AttributionOptions | None = None,
                    samples: Sequence[Sample | None] | None = None) -> list[TokenAttribution]:
    """Attributions of many (prompt, answer) pairs on one model, all prompts' ablations batched together.
    Raises AnalysisInputError for the first pair that cannot be attributed."""
    opts = (options or AttributionOptions()).validated()
    if not pairs:
        raise AnalysisInputError("no prompts to attribute")
    labels = [s.id if s else "" for s in samples] if samples else [""] * len(pairs)
    items = [prompt_ids(handle, p, a, lab) for (p, a), lab in zip(pairs, labels, strict=True)]
    sams = list(samples) if samples else [None] * len(pairs)
    out: list[TokenAttribution] = []
    if opts.method == "loo":
        neutral = neutral_token_id(handle.tokenizer, opts.neutral) if opts.ablation == "replace" else None
        for it, r, (p, a), s in zip(items, loo_contributions(handle, items, opts.ablation, neutral, opts.batch_size),
                                    pairs, sams, strict=True):
            out.append(_build(handle, it, r.contributions, r.logprob, opts, s, p, a, ablated=r.ablated))
    else:
        for it, g, (p, a), s in zip(items, grad_contributions(handle, items, opts.method, opts.ig_steps,
                                                              opts.batch_size), pairs, sams, strict=True):
            out.append(_build(handle, it, g.contributions, g.logprob, opts, s, p, a, baseline=g.baseline_logprob))
    return out


def attribute(handle: ModelHandle, sample: Sample, options: AttributionOptions | None = None) -> TokenAttribution:
    """Attribute one sample's answer to its prompt tokens on one model (no store)."""
    return attribute_pairs(handle, [(sample.prompt, sample.answer)], options, [sample])[0]


def attribute_samples(handle: ModelHandle, samples: Sequence[Sample], options: AttributionOptions | None = None
                      ) -> tuple[dict[str, TokenAttribution], dict[str, str]]:
    """Attributions of many samples in batched forwards; samples that cannot be attributed (a one-token
    prompt, too long, ...) are returned in the second dict with the reason."""
    opts = (options or AttributionOptions()).validated()
    good: list[Sample] = []
    skipped: dict[str, str] = {}
    for s in samples:
        try:
            prompt_ids(handle, s.prompt, s.answer, s.id)
            good.append(s)
        except AnalysisInputError as e:
            skipped[s.id] = str(e)
    if not good:
        return {}, skipped
    res = attribute_pairs(handle, [(s.prompt, s.answer) for s in good], opts, good)
    return {s.id: r for s, r in zip(good, res, strict=True)}, skipped


# ---- the study store ---------------------------------------------------------------------------------------
def _load(study: Study, model: str, handles: dict[str, ModelHandle] | None) -> ModelHandle:
    if handles and model in handles:
        return handles[model]
    return study.load(model)


def attribute_sample(study: Study, model: str, sample_id: str, options: AttributionOptions | None = None,
                     handle: ModelHandle | None = None, use_store: bool = True) -> TokenAttribution:
    """Attribute a sample of the study on one of its models; loaded from the study store when present, else
    computed and stored."""
    sample = study.sample(sample_id)
    opts = (options or AttributionOptions()).validated()
    fp = study.fingerprint(model)
    if use_store:
        hit = study.store.get(ATTRIBUTION_KIND, [fp], opts.key(), sample_id=sample_id)
        if hit is not None and "error" not in hit:
            return TokenAttribution.from_dict(hit)
    h = handle if handle is not None else study.load(model)
    result = attribute(h, sample, opts)
    if use_store:
        study.store.put(ATTRIBUTION_KIND, [fp], opts.key(), result.to_dict(), sample_id=sample_id)
    return result


@dataclass
class DatasetAttribution:
    model: str  # name
    results: dict[str, TokenAttribution]
    skipped: dict[str, str] = field(default_factory=dict)  # sample id -> why it was not attributed


def _sample_ids(study: Study, split: str | Sequence[str], sample_ids: Sequence[str] | None) -> list[str]:
    if sample_ids is not None:
        ids = list(sample_ids)
    else:
        splits = [split] if isinstance(split, str) else list(split)
        ids = [s.id for sp in splits for s in study.samples(sp)]
    if not ids:
        raise AnalysisInputError(f"no {split} samples to attribute")
    return ids


def dataset_cached(study: Study, model: str, options: AttributionOptions | None = None,
                   split: str | Sequence[str] = "forget") -> bool:
    """True when every sample of ``split`` has a stored attribution on ``model``."""
    opts = (options or AttributionOptions()).validated()
    ids = _sample_ids(study, split, None)
    got = study.store.get_many(ATTRIBUTION_KIND, [study.fingerprint(model)], opts.key(), ids)
    return all(i in got for i in ids)


def _lazy_handle(study: Study, model: str, handle: ModelHandle | None) -> Callable[[], ModelHandle]:
    """The model, loaded on first use (a job whose chunks are all stored never loads it)."""
    cache: dict[str, ModelHandle] = {}

    def get() -> ModelHandle:
        if "h" not in cache:
            cache["h"] = handle if handle is not None else study.load(model)
        return cache["h"]

    return get


def make_attribution_compute(study: Study, model: str, options: AttributionOptions,
                             handle: ModelHandle | None = None) -> Compute:
    """The per-chunk work of ``attribute_dataset``: one batched attribution of the chunk's samples (or
    {"error": why} per sample that cannot be attributed). Built here or in a Ray worker."""
    by_id = {s.id: s for s in study.samples()}
    get = _lazy_handle(study, model, handle)

    def compute(chunk: list[str]) -> dict[str, Any]:
        res, skipped = attribute_samples(get(), [by_id[i] for i in chunk], options)
        return {**{i: r.to_dict() for i, r in res.items()}, **{i: {"error": e} for i, e in skipped.items()}}

    return compute


def attribute_dataset(study: Study, model: str, options: AttributionOptions | None = None,
                      split: str | Sequence[str] = "forget", sample_ids: Sequence[str] | None = None,
                      progress: ProgressFn | None = None, handle: ModelHandle | None = None,
                      chunk_size: int = 64, executor: Executor | None = None) -> DatasetAttribution:
    """Attributions of every sample of ``split`` (or ``sample_ids``) on one model, ``chunk_size`` samples per
    batched job stored atomically (analysis.store.run_batch: resumable, tqdm + ``progress``), here or on
    ``executor`` (e.g. analysis.distributed.RayExecutor)."""
    opts = (options or AttributionOptions()).validated()
    ids = _sample_ids(study, split, sample_ids)
    known = {s.id for s in study.samples()}
    missing = [i for i in ids if i not in known]
    if missing:
        raise AnalysisInputError(f"unknown sample id {missing[0]!r}")
    job = ChunkJob(make_attribution_compute, study, (model, opts), {"handle": handle})
    values = run_batch(study.store, ATTRIBUTION_KIND, [study.fingerprint(model)], opts.key(), ids, job,
                       chunk_size=chunk_size, progress=progress, desc=f"attribute {model}", executor=executor)
    return DatasetAttribution(model=model,
                              results={i: TokenAttribution.from_dict(v) for i, v in values.items() if "error" not in v},
                              skipped={i: v["error"] for i, v in values.items() if "error" in v})


class _Stages:
    """One progress callback over several consecutive jobs."""

    def __init__(self, progress: ProgressFn | None, n: int) -> None:
        self.progress, self.n, self.i = progress, max(1, n), 0

    def next(self) -> ProgressFn | None:
        if self.progress is None:
            return None
        i, self.i = self.i, self.i + 1
        outer = self.progress
        return lambda frac, msg: outer(min(1.0, (i + frac) / self.n), msg)


def compare_models(study: Study, after: str, before: str = "original", options: AttributionOptions | None = None,
                   splits: Sequence[str] = ("forget", "retain"), progress: ProgressFn | None = None,
                   handles: dict[str, ModelHandle] | None = None) -> AttributionComparison:
    """Contributions and keywords of ``before`` (the original) vs ``after`` (an unlearned model) over the
    samples of ``splits``; groups (keywords, function words, other tokens) come from ``before``."""
    opts = (options or AttributionOptions()).validated()
    splits = [sp for sp in splits if sp in study.manifest.samples]
    ids = _sample_ids(study, splits, None)
    stages = _Stages(progress, 2)
    res = {}
    for name in (before, after):
        study.entry(name)
        res[name] = attribute_dataset(study, name, opts, sample_ids=ids, progress=stages.next(),
                                      handle=(handles or {}).get(name))
    split_of = {s.id: s.split for sp in splits for s in study.samples(sp)}
    skipped = {**res[before].skipped, **res[after].skipped}
    return compare(res[before].results, res[after].results, {i: split_of[i] for i in ids}, before, after,
                   options=opts.key(), skipped=skipped)


# ---- keyword-emphasis recovery ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecoveryOptions:
    """``keywords_from``: whose attribution names the keywords to emphasise: "original" (default; the
    keywords the model used before unlearning, the same for every model compared) or "self" (each model's
    own KeyTokens)."""

    strategies: tuple[str, ...] | None = None  # None: every registered strategy
    params: EmphasisParams = field(default_factory=EmphasisParams)
    keywords_from: str = "original"
    attribution: AttributionOptions = field(default_factory=AttributionOptions)
    split: str = "forget"

    def validated(self) -> RecoveryOptions:
        names = list(dict.fromkeys(self.strategies)) if self.strategies is not None else strategy_names()
        if not names:
            raise AnalysisInputError("choose at least one emphasis strategy")
        for n in names:
            get_emphasis(n, self.params)
        if self.keywords_from not in KEYWORD_SOURCES:
            raise AnalysisInputError(f"unknown keyword source {self.keywords_from!r} (expected one of "
                                     f"{', '.join(KEYWORD_SOURCES)})")
        return RecoveryOptions(strategies=tuple(names), params=self.params, keywords_from=self.keywords_from,
                               attribution=self.attribution.validated(), split=self.split)

    def emphases(self) -> list[Emphasis]:
        return [get_emphasis(n, self.params) for n in (self.strategies or ())]

    def key(self) -> dict[str, Any]:
        return {"version": OPTIONS_VERSION, "strategies": [e.key() for e in self.emphases()],
                "keywords_from": self.keywords_from, "attribution": self.attribution.key(), "split": self.split}


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


def make_outcomes_compute(study: Study, model: str, strategy: Emphasis, keywords: dict[str, list[int]],
                          batch_size: int | None, handle: ModelHandle | None = None) -> Compute:
    """The per-chunk work of the recovery outcomes: the chunk's answers under ``strategy`` with each sample's
    ``keywords`` emphasised, in batched forwards. Built here or in a Ray worker."""
    by_id = {s.id: s for s in study.samples()}
    get = _lazy_handle(study, model, handle)

    def compute(chunk: list[str]) -> dict[str, Any]:
        h = get()
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
    source = "original" if opts.keywords_from == "original" else model
    return [fp, study.fingerprint(source)], {"version": OPTIONS_VERSION, "strategy": strategy.key(),
                                             "attribution": opts.attribution.key()}


def stored_outcomes(study: Study, model: str, strategy: Emphasis, options: RecoveryOptions,
                    ids: Sequence[str]) -> dict[str, Outcome]:
    """The stored per-sample outcomes of one strategy on ``model`` (read only; absent ids are missing)."""
    models, key = outcome_key(study, model, strategy, options)
    return study.store.get_many(RECOVERY_KIND, models, key, ids)


def _outcomes(study: Study, model: str, strategy: Emphasis, ids: list[str],
              keywords: dict[str, list[int]], opts: RecoveryOptions,
              handles: dict[str, ModelHandle] | None, progress: ProgressFn | None,
              executor: Executor | None = None) -> dict[str, Outcome]:
    """Per-sample outcomes of one strategy on one model, through the study store (resumable)."""
    job = ChunkJob(make_outcomes_compute, study, (model, strategy, keywords, opts.attribution.batch_size),
                   {"handle": (handles or {}).get(model)})
    models, key = outcome_key(study, model, strategy, opts)
    return run_batch(study.store, RECOVERY_KIND, models, key, ids, job, chunk_size=64, progress=progress,
                     desc=f"{strategy.name} on {model}", executor=executor)


def _model_results(study: Study, model: str, opts: RecoveryOptions, ids: list[str], eligible: list[str],
                   handles: dict[str, ModelHandle] | None, stages: _Stages,
                   plain_cache: dict[str, dict[str, Outcome]], executor: Executor | None = None) -> dict[str, Any]:
    source = "original" if opts.keywords_from == "original" else model
    attr = attribute_dataset(study, source, opts.attribution, sample_ids=ids, progress=stages.next(),
                             handle=(handles or {}).get(source), executor=executor)
    keywords = {i: r.keywords for i, r in attr.results.items()}
    if model not in plain_cache:
        plain_cache[model] = _outcomes(study, model, get_emphasis("none"), ids, keywords, opts, handles,
                                       stages.next(), executor)
    else:
        stages.next()
    plain = plain_cache[model]
    out = {}
    for strat in opts.emphases():
        emph = _outcomes(study, model, strat, ids, keywords, opts, handles, stages.next(), executor)
        out[strat.name] = strategy_recovery(strat.name, plain, emph, eligible)
    return out


def recovery_cached(study: Study, model: str, options: RecoveryOptions | None = None) -> bool:
    """True when every outcome the recovery report of ``model`` needs is in the study store (cheap check:
    the plain-prompt outcomes and the last strategy's outcomes of the model, the retrain control and the
    original)."""
    opts = (options or RecoveryOptions()).validated()
    ids = [s.id for s in study.samples(opts.split)]
    last = opts.emphases()[-1]
    names = list(dict.fromkeys(["original", model, *([study.manifest.retrain] if study.manifest.retrain else [])]))
    return all(len(stored_outcomes(study, name, strategy, opts, ids)) == len(set(ids))
               for name in names for strategy in (get_emphasis("none"), last))


def recover(study: Study, model: str, options: RecoveryOptions | None = None, progress: ProgressFn | None = None,
            handles: dict[str, ModelHandle] | None = None, executor: Executor | None = None) -> RecoveryReport:
    """Keyword-emphasis recovery of ``model`` on the forget set, with the same numbers on the retrain control
    (study.manifest.retrain) and on the original model. Every per-sample outcome is stored in the study store
    (resumable; a second call is instant).

    Keywords: the KeyTokens of the original model's attribution of each forget sample (``keywords_from``
    "original"), or of each model's own attribution ("self"). Eligible samples, the recovery-rate
    denominator and the probability gain are defined in analysis.attribution.result.StrategyRecovery.
    Every batch job runs here or on ``executor`` (e.g. analysis.distributed.RayExecutor)."""
    opts = (options or RecoveryOptions()).validated()
    study.entry(model)
    if "original" not in study.manifest.models:
        raise AnalysisInputError("recovery needs the study's 'original' model (keywords and eligible samples)")
    ids = [s.id for s in study.samples(opts.split)]
    if not ids:
        raise AnalysisInputError(f"the study has no {opts.split} samples")
    retrain = study.manifest.retrain
    if retrain is not None:
        study.entry(retrain)
    per_model = 2 + len(opts.strategies or ())
    names = list(dict.fromkeys(["original", model, *([retrain] if retrain else [])]))
    stages = _Stages(progress, per_model * len(names))
    plain: dict[str, dict[str, Outcome]] = {}
    plain["original"] = _outcomes(study, "original", get_emphasis("none"), ids, {}, opts, handles, None,
                                  executor)
    eligible = [i for i in ids if plain["original"][i].get("correct")]
    results = {n: _model_results(study, n, opts, ids, eligible, handles, stages, plain, executor) for n in names}
    if progress:
        progress(1.0, "recovery done")
    return RecoveryReport(model=model, retrain=retrain, strategies=list(opts.strategies or ()), options=opts.key(),
                          fingerprints={n: study.fingerprint(n) for n in names}, results=results[model],
                          retrain_results=results[retrain] if retrain else None,
                          original_results=results["original"], n_forget=len(ids), n_eligible=len(eligible))
