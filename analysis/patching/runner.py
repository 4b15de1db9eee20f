"""Cross-model activation patching on the models of a study. ``source_curves``: the original's answer log-prob
with one source model's hidden states patched in at every layer, per forget sample, as a resumable batch job
stored in the study store (rows keyed by the original's and the source's fingerprints and the options'
``key()``); ``patching_result``: a judged model's curves next to the reference retrain control's, with the
per-layer erasure ratios, the per-sample depth scores and the per-model summaries; ``patching_signal``: the
signal the meta-evaluation reads (``analysis.signals.SIGNALS["patching"]``). Models are named; the Study loads
them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.errors import AnalysisInputError
from analysis.hooks import resid_post
from analysis.patching.engine import PatchCurves, depth_scores, erasure_ratios, patch_logprobs
from analysis.patching.options import STORE_KIND, PatchOptions
from analysis.patching.result import PatchingResult, build_result
from analysis.scoring import pair_batches
from analysis.signals import SignalReading
from analysis.store import ChunkJob, Compute, Executor, ProgressFn, run_batch

if TYPE_CHECKING:
    from analysis.study import Study

DEFAULT_CHUNK = 32  # samples per stored chunk (each chunk is split further to fit the memory budget)
ORIGINAL = "original"


def sample_ids_of(study: Study, split: str = "forget", sample_ids: Sequence[str] | None = None) -> list[str]:
    """``sample_ids`` (checked against the study) or every sample of ``split``; AnalysisInputError when empty."""
    if sample_ids is None:
        ids = [s.id for s in study.samples(split)]
        if not ids:
            raise AnalysisInputError(f"the study has no {split} samples to patch")
        return ids
    known = {s.id for s in study.samples()}
    missing = [i for i in sample_ids if i not in known]
    if missing:
        raise AnalysisInputError(f"unknown sample id {missing[0]!r}")
    if not sample_ids:
        raise AnalysisInputError("no samples to patch")
    return list(dict.fromkeys(sample_ids))


def make_patch_compute(study: Study, source: str, options: PatchOptions) -> Compute:
    """The per-chunk work of ``source_curves``: each sample's unpatched and patched log-probs as a stored dict.
    Built here or in a Ray worker from the same arguments."""
    by_id = {s.id: s for s in study.samples()}

    def compute(chunk: list[str]) -> dict[str, Any]:
        original, src = study.load(ORIGINAL), study.load(source)
        samples = [by_id[sid] for sid in chunk]
        out: dict[str, Any] = {}
        for sl, batch in pair_batches(original, [s.prompt for s in samples], [s.answer for s in samples],
                                      options.batch_size):
            part = samples[sl]
            curves = patch_logprobs(original, src, batch, options.positions)
            for i, s in enumerate(part):
                out[s.id] = {"base": float(curves.base[i]), "patched": [float(v) for v in curves.patched[i]]}
        return out

    return compute


def _fingerprints(study: Study, source: str) -> list[str]:
    return [study.fingerprint(ORIGINAL), study.fingerprint(source)]


def source_curves(study: Study, source: str, options: PatchOptions | None = None, split: str = "forget",
                  sample_ids: Sequence[str] | None = None, progress: ProgressFn | None = None,
                  executor: Executor | None = None) -> PatchCurves:
    """The original's mean answer log-prob per sample (rows in the order of the ids), unpatched and with
    ``source``'s hidden state after each block patched in. Each chunk is stored as it finishes (resumable), in
    this process or on ``executor``."""
    opts = (options or PatchOptions()).validated()
    study.entry(ORIGINAL)
    study.entry(source)
    ids = sample_ids_of(study, split, sample_ids)
    job = ChunkJob(make_patch_compute, study, (source, opts))
    values = run_batch(study.store, STORE_KIND, _fingerprints(study, source), opts.key(), ids, job,
                       chunk_size=opts.batch_size or DEFAULT_CHUNK, progress=progress, desc=f"patch {source}",
                       executor=executor)
    base = np.array([values[i]["base"] for i in ids], dtype=np.float64)
    patched = np.array([values[i]["patched"] for i in ids], dtype=np.float64)
    return PatchCurves(base=base, patched=patched)


def curves_cached(study: Study, source: str, options: PatchOptions | None = None, split: str = "forget") -> bool:
    """True when every sample of ``split`` has stored curves for ``source`` (a view is then instant)."""
    opts = (options or PatchOptions()).validated()
    ids = sample_ids_of(study, split)
    got = study.store.get_many(STORE_KIND, _fingerprints(study, source), opts.key(), ids)
    return all(i in got for i in ids)


def reference_of(study: Study, reference: str | None = None) -> str | None:
    """The reference control (``reference``, checked, or the study's retrain control; None without one)."""
    if reference is not None:
        study.entry(reference)
        return reference
    return study.manifest.retrain


def patching_cached(study: Study, model: str, options: PatchOptions | None = None, reference: str | None = None,
                    split: str = "forget") -> bool:
    """True when ``patching_result`` needs no model run."""
    ref = reference_of(study, reference)
    return all(curves_cached(study, m, options, split) for m in dict.fromkeys([model, *([ref] if ref else [])]))


def patching_result(study: Study, model: str, options: PatchOptions | None = None, reference: str | None = None,
                    split: str = "forget", sample_ids: Sequence[str] | None = None,
                    progress: ProgressFn | None = None, executor: Executor | None = None) -> PatchingResult:
    """Cross-model patching of ``model`` into the original on the ``split`` samples, with the reference control
    (default: the study's retrain control) patched in the same way: per-layer drops, erasure ratios, depth scores
    and their per-model summaries with bootstrap intervals. Without a reference the drops are reported and the
    depth is undefined (``note`` says why)."""
    opts = (options or PatchOptions()).validated()
    study.entry(model)
    ref = reference_of(study, reference)
    ids = sample_ids_of(study, split, sample_ids)
    models = list(dict.fromkeys([model, *([ref] if ref else [])]))
    curves: dict[str, PatchCurves] = {}
    for k, m in enumerate(models):
        def part(frac: float, msg: str, _k: int = k) -> None:
            if progress is not None:
                progress((_k + frac) / len(models), msg)

        curves[m] = source_curves(study, m, opts, split, ids, part, executor)
    drop = curves[model].drop
    fps = {ORIGINAL: study.fingerprint(ORIGINAL), "model": study.fingerprint(model)}
    options_dict = {**opts.summary_key(), "split": split}
    hook = resid_post(0).replace(".0.", ".{layer}.", 1)
    if ref is None:
        return build_result(model, None, ids, curves[model].base, drop, None, options_dict, fps, hook,
                            note="the study has no reference retrain control: drops only, no depth score")
    fps["reference"] = study.fingerprint(ref)
    ref_drop = curves[ref].drop
    ratios = erasure_ratios(drop, ref_drop, opts.min_drop)
    depth = depth_scores(ratios, ref_drop, opts.aggregation)
    n_undef = int(np.isnan(depth).sum())
    note = (f"{n_undef} of {len(ids)} samples have no layer where patching the reference drops the answer by more "
            f"than {opts.min_drop:g} (depth undefined there)") if n_undef else ""
    return build_result(model, ref, ids, curves[model].base, drop, ref_drop, options_dict, fps, hook, ratios=ratios,
                        depth=depth, note=note)


def patching_results(study: Study, models: Sequence[str], options: PatchOptions | None = None,
                     progress: ProgressFn | None = None, executor: Executor | None = None
                     ) -> dict[str, PatchingResult]:
    """``patching_result`` of several models (the reference's curves are computed once and reused)."""
    return {m: patching_result(study, m, options, progress=progress, executor=executor) for m in models}


def patching_signal(study: Study, model: str) -> SignalReading:
    """The "patching" signal: per forget sample 1 - depth score (higher = more knowledge present), its mean over
    samples and bootstrap interval, with the default options."""
    return patching_result(study, model).reading()
