"""Prompt-token attribution (unPact) of samples on the models of a study: one sample (``attribute``), many
samples batched together (``attribute_samples``), stored in and loaded from the study store
(``attribute_sample``; a typed prompt: ``attribute_typed``; ``attribute_dataset``: resumable batch jobs), and
before vs after unlearning (``compare_models``). Keyword-emphasis recovery is in analysis.attribution.recovery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from analysis.attribution.core import MethodOutput, PromptIds, key_tokens, prompt_ids
from analysis.attribution.options import ATTRIBUTION_METHODS, ATTRIBUTION_STORE_KIND, AttributionOptions
from analysis.attribution.result import AttributionComparison, TokenAttribution, compare_attributions
from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.store import ChunkJob, Compute, Executor, ProgressFn, run_batch
from analysis.subjects import token_strings
from analysis.typed import slot, typed_input

if TYPE_CHECKING:
    from analysis.study import Study


# ---- one model, no store ------------------------------------------------------------------------------------
def _build(handle: ModelHandle, item: PromptIds, out: MethodOutput, opts: AttributionOptions,
           sample: Sample | None, prompt: str, answer: str) -> TokenAttribution:
    return TokenAttribution(tokens=token_strings(handle.tokenizer, item.prompt), token_ids=list(item.prompt),
                            contributions=out.contributions,
                            keywords=key_tokens(out.contributions, opts.alpha, opts.beta), method=opts.method,
                            options=opts.key(), model=handle.fingerprint, sample_id=sample.id if sample else "",
                            prompt=prompt, answer=answer, logprob=out.logprob, ablated_logprob=out.ablated_logprob,
                            baseline_logprob=out.baseline_logprob)


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
    outs = ATTRIBUTION_METHODS.get(opts.method)(handle, items, opts)
    return [_build(handle, it, o, opts, s, p, a) for it, o, (p, a), s in zip(items, outs, pairs, sams, strict=True)]


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
def attribute_stored(study: Study, model: str, sample: Sample, options: AttributionOptions | None = None,
                     use_store: bool = True) -> TokenAttribution:
    """The one "by Sample" core of ``attribute_sample`` and ``attribute_typed``: ``sample`` attributed on one
    model of the study, loaded from the store when present (a study sample's rows, or a typed sample's own:
    analysis.typed), else computed and stored."""
    opts = (options or AttributionOptions()).validated()
    where = slot(study, ATTRIBUTION_STORE_KIND, [study.fingerprint(model)], sample)
    if use_store:
        hit = where.get(opts.key())
        if hit is not None and "error" not in hit:
            return TokenAttribution.from_dict(hit)
    result = attribute(study.load(model), sample, opts)
    if use_store:
        where.put(opts.key(), result.to_dict())
    return result


def attribute_sample(study: Study, model: str, sample_id: str, options: AttributionOptions | None = None,
                     use_store: bool = True) -> TokenAttribution:
    """Attribute a sample of the study on one of its models; loaded from the study store when present, else
    computed and stored."""
    return attribute_stored(study, model, study.sample(sample_id), options, use_store)


def attribute_typed(study: Study, model: str, sample: Sample, options: AttributionOptions | None = None,
                    use_store: bool = True) -> TokenAttribution:
    """Attribute a typed prompt's answer (``analysis.typed.typed_sample``; no subject needed) to its prompt
    tokens on one model of the study, exactly as a sample of the study is attributed (LP: the mean log-prob of
    the answer tokens, so a multi-token answer is length-normalised). AnalysisInputError: a hand-made sample, a
    word the model's tokenizer cannot encode, a prompt of fewer than two tokens, too long for the model. Stored
    under the typed sample's own slot."""
    return attribute_stored(study, model, typed_input(study, model, sample), options, use_store)


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
    got = study.store.get_many(ATTRIBUTION_STORE_KIND, [study.fingerprint(model)], opts.key(), ids)
    return all(i in got for i in ids)


def make_attribution_compute(study: Study, model: str, options: AttributionOptions) -> Compute:
    """The per-chunk work of ``attribute_dataset``: one batched attribution of the chunk's samples (or
    {"error": why} per sample that cannot be attributed). Built here or in a Ray worker; the model is loaded
    (``study.load``, cached) only when a chunk is computed."""
    by_id = {s.id: s for s in study.samples()}

    def compute(chunk: list[str]) -> dict[str, Any]:
        res, skipped = attribute_samples(study.load(model), [by_id[i] for i in chunk], options)
        return {**{i: r.to_dict() for i, r in res.items()}, **{i: {"error": e} for i, e in skipped.items()}}

    return compute


def attribute_dataset(study: Study, model: str, options: AttributionOptions | None = None,
                      split: str | Sequence[str] = "forget", sample_ids: Sequence[str] | None = None,
                      progress: ProgressFn | None = None, chunk_size: int = 64,
                      executor: Executor | None = None) -> DatasetAttribution:
    """Attributions of every sample of ``split`` (or ``sample_ids``) on one model, ``chunk_size`` samples per
    batched job stored atomically (analysis.store.run_batch: resumable, tqdm + ``progress``), here or on
    ``executor`` (e.g. analysis.distributed.RayExecutor)."""
    opts = (options or AttributionOptions()).validated()
    ids = _sample_ids(study, split, sample_ids)
    known = {s.id for s in study.samples()}
    missing = [i for i in ids if i not in known]
    if missing:
        raise AnalysisInputError(f"unknown sample id {missing[0]!r}")
    job = ChunkJob(make_attribution_compute, study, (model, opts))
    values = run_batch(study.store, ATTRIBUTION_STORE_KIND, [study.fingerprint(model)], opts.key(), ids, job,
                       chunk_size=chunk_size, progress=progress, desc=f"attribute {model}", executor=executor)
    return DatasetAttribution(model=model,
                              results={i: TokenAttribution.from_dict(v) for i, v in values.items() if "error" not in v},
                              skipped={i: v["error"] for i, v in values.items() if "error" in v})


class StageProgress:
    """One progress callback over several consecutive jobs (``next()`` gives each job its share)."""

    def __init__(self, progress: ProgressFn | None, n: int) -> None:
        self.progress, self.n, self.i = progress, max(1, n), 0

    def next(self) -> ProgressFn | None:
        if self.progress is None:
            return None
        i, self.i = self.i, self.i + 1
        outer = self.progress
        return lambda frac, msg: outer(min(1.0, (i + frac) / self.n), msg)


def compare_models(study: Study, after: str, before: str = "original", options: AttributionOptions | None = None,
                   splits: Sequence[str] = ("forget", "retain"), progress: ProgressFn | None = None
                   ) -> AttributionComparison:
    """Contributions and keywords of ``before`` (the original) vs ``after`` (an unlearned model) over the
    samples of ``splits``; groups (keywords, function words, other tokens) come from ``before``."""
    opts = (options or AttributionOptions()).validated()
    splits = [sp for sp in splits if sp in study.manifest.samples]
    ids = _sample_ids(study, splits, None)
    stages = StageProgress(progress, 2)
    res = {}
    for name in (before, after):
        study.entry(name)
        res[name] = attribute_dataset(study, name, opts, sample_ids=ids, progress=stages.next())
    split_of = {s.id: s.split for sp in splits for s in study.samples(sp)}
    skipped = {**res[before].skipped, **res[after].skipped}
    return compare_attributions(res[before].results, res[after].results, {i: split_of[i] for i in ids}, before,
                                after, options=opts.key(), skipped=skipped)

