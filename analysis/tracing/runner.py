"""Causal tracing of samples on the models of a study: one sample on one model (``trace``), stored in and
loaded from the study store (``trace_sample``; a typed prompt: ``trace_typed``), before vs after
(``trace_models``), and the grouped average indirect effect over a split as a resumable batch job
(``trace_dataset``). Models are named; the Study loads (and caches) them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.store import ChunkJob, Compute, Executor, ProgressFn, run_batch
from analysis.subjects import REPLACEMENT_RULE, SubjectPool, subject_input, token_strings
from analysis.tracing.corruptions import get_corruption
from analysis.tracing.engine import run_trace
from analysis.tracing.options import KINDS, STORE_KIND, TraceOptions
from analysis.tracing.result import AIEResult, TraceResult, average_indirect_effect
from analysis.typed import SampleSlot, Slot, slot, typed_input

if TYPE_CHECKING:
    from analysis.study import Study


def trace(handle: ModelHandle, sample: Sample, pool: SubjectPool, options: TraceOptions | None = None) -> TraceResult:
    """Trace one sample on one model (no store). ``pool`` holds the study's subjects: the noise scale is
    computed from their embeddings and STR draws its replacement from them."""
    opts = (options or TraceOptions()).validated(handle.n_layers)
    inp = subject_input(handle, sample)
    corrupted = get_corruption(opts.corruption).corrupt(handle, inp, pool, opts)
    ts = run_trace(handle, inp, corrupted, opts.kinds, opts.metric, opts.window, opts.budget_bytes)
    info: dict[str, Any] = dict(corrupted.info or {})
    if ts.other_token is not None:
        info["other_token"] = token_strings(handle.tokenizer, [ts.other_token])[0]
    return TraceResult(tokens=token_strings(handle.tokenizer, inp.ids[: inp.prompt_len]),
                       subject_range=inp.subject_range, layers=list(range(handle.n_layers)), clean=ts.clean,
                       corrupted=ts.corrupted, scores={k: v.tolist() for k, v in ts.scores.items()},
                       options={**opts.key(), **info}, model=handle.fingerprint, sample_id=sample.id,
                       answer=sample.answer)


def store_key(study: Study, options: TraceOptions) -> dict[str, Any]:
    """Where a trace is stored: its options, and the study's subject pool (the noise scale and the replacement
    subjects are drawn from it, so a new or edited subject recomputes every trace); for a corruption that
    replaces the subject, also what the subjects answer and the version of the replacement rule."""
    if get_corruption(options.corruption).replaces_subject:
        return {**options.key(), "subjects": study.subjects_digest(answers=True),
                "replacement_rule": REPLACEMENT_RULE}
    return {**options.key(), "subjects": study.subjects_digest()}


def _stored_trace(study: Study, where: Slot, options: TraceOptions) -> TraceResult | None:
    """A trace stored in ``where`` for these options, or one of all kinds with the same options cut down."""
    for key in (store_key(study, options), store_key(study, replace(options, kinds=KINDS))):
        value = where.get(key)
        if value is not None and "error" not in value:
            return TraceResult.from_dict(value).subset(options.kinds)
    return None


def cached_trace(study: Study, model: str, sample_id: str, options: TraceOptions) -> TraceResult | None:
    """A stored trace for these options, or a stored trace of all kinds with the same options cut down."""
    return _stored_trace(study, SampleSlot(study.store, STORE_KIND, (study.fingerprint(model),), sample_id), options)


def trace_stored(study: Study, model: str, sample: Sample, options: TraceOptions | None = None,
                 use_store: bool = True) -> TraceResult:
    """The one "by Sample" core of ``trace_sample`` and ``trace_typed``: ``sample`` traced on one model of the
    study, loaded from the store when present (a study sample's rows, or a typed sample's own: analysis.typed),
    else computed and stored."""
    h = study.load(model)
    opts = (options or TraceOptions()).validated(h.n_layers)
    where = slot(study, STORE_KIND, [study.fingerprint(model)], sample)
    if use_store:
        hit = _stored_trace(study, where, opts)
        if hit is not None:
            return hit
    result = trace(h, sample, study.subject_pool(), opts)
    if use_store:
        where.put(store_key(study, opts), result.to_dict())
    return result


def trace_sample(study: Study, model: str, sample_id: str, options: TraceOptions | None = None,
                 use_store: bool = True) -> TraceResult:
    """Trace a sample of the study on one of its models; loaded from the study store when present, else
    computed and stored."""
    return trace_stored(study, model, study.sample(sample_id), options, use_store)


def trace_typed(study: Study, model: str, sample: Sample, options: TraceOptions | None = None,
                use_store: bool = True) -> TraceResult:
    """Trace a typed prompt (``analysis.typed.typed_sample``) on one model of the study, exactly as a sample of
    the study is traced (the noise scale and replacement subjects come from the study's subjects). It needs a
    subject. AnalysisInputError: no subject, a hand-made sample, a word the model's tokenizer cannot encode,
    a subject that covers no token, too long for the model. Stored under the typed sample's own slot."""
    typed = typed_input(study, model, sample, needs_subject="causal tracing (it corrupts the subject)")
    return trace_stored(study, model, typed, options, use_store)


def trace_models(study: Study, models: Sequence[str], sample_id: str, options: TraceOptions | None = None
                 ) -> dict[str, TraceResult]:
    """The same trace on several models of the study (before vs after unlearning)."""
    return {m: trace_sample(study, m, sample_id, options) for m in models}


def dataset_sample_ids(study: Study, split: str = "forget") -> list[str]:
    return [s.id for s in study.samples(split)]


def _dataset_options(options: TraceOptions | None, n_layers: int) -> TraceOptions:
    return (options or TraceOptions()).validated(n_layers)


def dataset_cached(study: Study, model: str, options: TraceOptions | None = None, split: str = "forget") -> bool:
    """True when every sample of ``split`` has a stored trace (the dataset view is then instant)."""
    ids = dataset_sample_ids(study, split)
    opts = _dataset_options(options, study.load(model).n_layers)
    got = study.store.get_many(STORE_KIND, [study.fingerprint(model)], store_key(study, opts), ids)
    return bool(ids) and all(i in got for i in ids)


def make_trace_compute(study: Study, model: str, options: TraceOptions) -> Compute:
    """The per-chunk work of ``trace_dataset``: each sample's trace (or {"error": why} for a sample that
    cannot be traced) as a stored dict. Built here or in a Ray worker from the same arguments."""
    by_id = {s.id: s for s in study.samples()}

    def compute(chunk: list[str]) -> dict[str, Any]:
        h = study.load(model)  # loaded (once, by the Study) only when something is left to compute
        pool = study.subject_pool()
        out: dict[str, Any] = {}
        for sid in chunk:
            try:
                out[sid] = trace(h, by_id[sid], pool, options).to_dict()
            except AnalysisInputError as e:
                out[sid] = {"error": str(e)}
        return out

    return compute


def trace_dataset(study: Study, model: str, options: TraceOptions | None = None, split: str = "forget",
                  sample_ids: Sequence[str] | None = None, progress: ProgressFn | None = None,
                  chunk_size: int = 4, executor: Executor | None = None) -> AIEResult:
    """Grouped average indirect effects over ``split`` (or ``sample_ids``) on one model. Each sample's trace
    is stored as it is computed (analysis.store.run_batch: resumable, tqdm progress, ``progress`` callback),
    in this process or on ``executor`` (e.g. analysis.distributed.RayExecutor); samples that cannot be
    traced (no subject) are skipped and reported in ``skipped``; the traces averaged are kept in ``traces``."""
    opts = _dataset_options(options, study.load(model).n_layers)
    ids = list(sample_ids) if sample_ids is not None else dataset_sample_ids(study, split)
    if not ids:
        raise AnalysisInputError(f"no {split} samples to trace")
    known = {s.id for s in study.samples()}
    missing = [i for i in ids if i not in known]
    if missing:
        raise AnalysisInputError(f"unknown sample id {missing[0]!r}")
    job = ChunkJob(make_trace_compute, study, (model, opts))
    fp = study.fingerprint(model)
    values = run_batch(study.store, STORE_KIND, [fp], store_key(study, opts), ids, job, chunk_size=chunk_size,
                       progress=progress, desc=f"trace {model}", executor=executor)
    results = [TraceResult.from_dict(v) for v in values.values() if "error" not in v]  # in the order of ids
    skipped = {sid: v["error"] for sid, v in values.items() if "error" in v}
    if not results:
        raise AnalysisInputError(f"none of the {len(ids)} samples could be traced "
                                 f"(e.g. {next(iter(skipped.values()), '')})")
    return average_indirect_effect(results, options=opts.key(), model=fp, skipped=skipped)
