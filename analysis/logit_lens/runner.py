"""The logit lens on the models of a study: per forget sample and layer, the answer's probability and rank
through the original's readout (or the model's own), as a resumable batch job stored in the study store (rows
keyed by the readout's and the model's fingerprints and the options' ``key()``); ``lens_result`` builds the
typed result with its summaries, ``lens_signal`` the signal the meta-evaluation reads
(``analysis.signals.SIGNALS["logit_lens"]``). Models are named; the Study loads them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.hooks import resid_post
from analysis.logit_lens.engine import lens_values
from analysis.logit_lens.options import QUANTITIES, STORE_KIND, LensOptions
from analysis.logit_lens.result import LensResult, build_lens_result
from analysis.patching.runner import DEFAULT_CHUNK, ORIGINAL, sample_ids_of
from analysis.scoring import pair_batches
from analysis.signals import SignalReading
from analysis.store import ChunkJob, Compute, Executor, ProgressFn, run_batch

if TYPE_CHECKING:
    from analysis.study import Study


def readout_of(model: str, options: LensOptions) -> str:
    """The model whose final norm and unembedding read ``model``'s residual stream."""
    return ORIGINAL if options.readout == "original" else model


def make_lens_compute(study: Study, model: str, options: LensOptions) -> Compute:
    """The per-chunk work of ``lens_result``: each sample's per-layer probabilities and ranks as a stored dict.
    Built here or in a Ray worker from the same arguments."""
    by_id = {s.id: s for s in study.samples()}

    def compute(chunk: list[str]) -> dict[str, Any]:
        handle, readout = study.load(model), study.load(readout_of(model, options))
        samples = [by_id[sid] for sid in chunk]
        out: dict[str, Any] = {}
        for sl, batch in pair_batches(readout, [s.prompt for s in samples], [s.answer for s in samples],
                                      options.batch_size, sized_for=handle):
            part = samples[sl]
            values = lens_values(handle, readout, batch)
            for i, s in enumerate(part):
                out[s.id] = values.row(i)
        return out

    return compute


def _fingerprints(study: Study, model: str, options: LensOptions) -> list[str]:
    return [study.fingerprint(readout_of(model, options)), study.fingerprint(model)]


def lens_cached(study: Study, model: str, options: LensOptions | None = None, split: str = "forget") -> bool:
    """True when every sample of ``split`` has a stored lens for ``model`` (a view is then instant)."""
    opts = (options or LensOptions()).validated()
    ids = sample_ids_of(study, split)
    got = study.store.get_many(STORE_KIND, _fingerprints(study, model, opts), opts.key(), ids)
    return all(i in got for i in ids)


def lens_result(study: Study, model: str, options: LensOptions | None = None, split: str = "forget",
                sample_ids: Sequence[str] | None = None, progress: ProgressFn | None = None,
                executor: Executor | None = None) -> LensResult:
    """The logit lens of ``model`` on the ``split`` samples (each chunk stored as it finishes: resumable, in this
    process or on ``executor``), with per-layer means and the per-model signal and their bootstrap intervals."""
    opts = (options or LensOptions()).validated()
    study.entry(model)
    readout = readout_of(model, opts)
    study.entry(readout)
    ids = sample_ids_of(study, split, sample_ids)
    job = ChunkJob(make_lens_compute, study, (model, opts))
    fps = _fingerprints(study, model, opts)
    values = run_batch(study.store, STORE_KIND, fps, opts.key(), ids, job, chunk_size=opts.batch_size or DEFAULT_CHUNK,
                       progress=progress, desc=f"logit lens {model}", executor=executor)
    arrays = {q: np.array([values[i][q] for i in ids], dtype=np.float64) for q in QUANTITIES}
    return build_lens_result(model, readout, ids, arrays, {**opts.key(), "split": split},
                             {"readout": fps[0], "model": fps[1]}, resid_post(0).replace(".0.", ".{layer}.", 1))


def lens_results(study: Study, models: Sequence[str], options: LensOptions | None = None,
                 progress: ProgressFn | None = None, executor: Executor | None = None) -> dict[str, LensResult]:
    """``lens_result`` of several models."""
    return {m: lens_result(study, m, options, progress=progress, executor=executor) for m in models}


def lens_signal(study: Study, model: str) -> SignalReading:
    """The "logit_lens" signal: per forget sample the answer's highest mean probability over layers through the
    original's readout (higher = more knowledge present), its mean over samples and bootstrap interval."""
    return lens_result(study, model).reading()
