"""Study-level entry points of the restoration analysis: ``restore`` / ``restore_all`` judge models against
the study's retrain control, share the SAE, the expert features and the control's signals, read and write
each report in the study store (kind ``STORE_KIND``), and compute each model's signals here or, one model
per worker, on an executor (e.g. analysis.distributed.RayExecutor)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from analysis.errors import AnalysisInputError
from analysis.sae.control import CONTROL_NAME, projected_model
from analysis.sae.features import ExpertFeatures, find_expert_features
from analysis.sae.fit import fit_batches, model_fit
from analysis.sae.options import STORE_KIND, RestoreOptions
from analysis.sae.progress import Units
from analysis.sae.restoration import model_signals, signal_units
from analysis.sae.result import RestorationReport
from analysis.sae.train import TrainedSAE, load_sae
from analysis.sae.verdict import restoration_report
from analysis.store import ChunkJob, Compute, Executor, ProgressFn, map_chunks

if TYPE_CHECKING:
    from analysis.study import Study


def reference_control(study: Study, model: str) -> str:
    """The retrain control ``model`` is judged against; raises when the question cannot be asked, among others
    when ``model`` is that control itself (by name, or the same weights under another name): judged against
    itself every gap is 0 by construction, a check that cannot fail. A retrain judged as a model must be
    another one (the zoo's retrains of other seeds)."""
    if model == "original":
        raise AnalysisInputError("pick an unlearned model or a control, not the original")
    ref_name = study.comparison(model).reference
    if not study.forget:
        raise AnalysisInputError("the forget set is empty: nothing to restore")
    if not ref_name:
        raise AnalysisInputError("this study has no retrain control: the verdict needs one as the deletion "
                                 "reference (create the study with --retrain NAME)")
    if model == ref_name or study.fingerprint(model) == study.fingerprint(ref_name):
        same = "" if model == ref_name else f" ({model!r} has its weights)"
        raise AnalysisInputError(
            f"{model!r} is the study's reference retrain control{same}: judged against itself every gap is 0 by "
            "construction, so the verdict could not fail; judge a retrain of another seed (the zoo's "
            "zoo_retrain_*) instead")
    return str(ref_name)


def judged_models(study: Study) -> list[str]:
    """The models ``restore_all`` judges by default: every model but the original and the reference retrain
    control (the reference is what the others are judged against, never judged against itself)."""
    ref = study.manifest.retrain
    return [n for n in study.model_names if n != "original" and n != ref]


def restore(study: Study, model: str, options: RestoreOptions | None = None, trained: TrainedSAE | None = None,
            use_store: bool = True, executor: Executor | None = None,
            progress: ProgressFn | None = None) -> RestorationReport:
    """Restoration report of ``model`` against the study's retrain control (stored in the study store);
    ``progress`` as in ``restore_all``."""
    return restore_all(study, [model], options, trained=trained, use_store=use_store, executor=executor,
                       progress=progress)[model]


def make_signals_compute(study: Study, sae_path: str, experts: ExpertFeatures, alphas: Sequence[float],
                         probe_layers: Sequence[int] | None = None, trained: TrainedSAE | None = None,
                         progress_for: Callable[[str], ProgressFn | None] | None = None) -> Compute:
    """The per-model work of ``restore_all``: ``compute(names) -> {name: Signals}`` with the SAE at
    ``sae_path`` (``trained`` when already loaded). Built here or in a Ray worker. ``progress_for(name)``
    (this process only, like ``trained``) gives the progress callback of one model's signals."""
    sae = trained or load_sae(study, path=sae_path)
    return lambda names: {n: model_signals(study, n, sae, experts, alphas, probe_layers,
                                           progress=None if progress_for is None else progress_for(n))
                          for n in names}


def restore_all(study: Study, names: Sequence[str] | None = None, options: RestoreOptions | None = None,
                trained: TrainedSAE | None = None, use_store: bool = True,
                executor: Executor | None = None, progress: ProgressFn | None = None) -> dict[str, RestorationReport]:
    """Reports for ``names`` (default: ``judged_models``, every model but the original and the reference
    retrain control), sharing the SAE (``trained``, else the one ``options.layer`` / ``options.k`` name), the
    expert features and the retrain control's signals; each report is read from / written to the study store
    as soon as its model's signals are in. The signals of each model are computed here or, one model per
    worker, on ``executor``. Naming the reference control (or the original) is an AnalysisInputError, raised
    before anything is computed or read from the store.

    ``progress(fraction, message)`` by units of work (``signal_units``): the expert features, the SAE's fit on
    the original by sample batch, then each model whose signals are computed, the retrain control's first
    ("model i/n NAME: ..."): its forwards, probe fits and sample batches as they run when computed in this
    process; a model's units are counted as soon as its signals are in (also from an executor). Every report
    already stored: one call, 1.0."""
    names = judged_models(study) if names is None else list(names)
    ref_name = ""
    for n in names:
        ref_name = reference_control(study, n)
    opts = (options or RestoreOptions()).validated()
    if opts.probe_layers is not None:
        opts.validated(study.load("original").n_layers)
    trained = trained or load_sae(study, layer=opts.layer, k=opts.k)
    key = opts.key(trained.sae_id, trained.layer)
    out: dict[str, RestorationReport] = {}
    todo = []
    for n in names:
        c = study.comparison(n)
        fps = [study.fingerprint(m) for m in (c.original, c.model, ref_name)]
        hit = study.store.get(STORE_KIND, fps, key) if use_store else None
        if hit is not None:
            out[n] = RestorationReport.from_dict(hit)
        else:
            todo.append((n, fps))
    if not todo:
        if progress is not None:
            progress(1.0, f"{len(names)} restoration report(s) loaded from the study store")
        return {n: out[n] for n in names}
    order = [ref_name, *[n for n, _ in todo]]
    fit_samples = [*study.forget, *study.retain]
    n_fit, per_model = fit_batches(fit_samples), signal_units(study, study.load("original").n_layers,
                                                              opts.probe_layers)
    units = Units(progress, 1 + n_fit + per_model * len(order))  # in model_signals' units of work
    if out:
        units.say(f"{len(out)} report(s) loaded from the study store; {len(todo)} to compute")
    units.say("finding the expert features")
    experts = find_expert_features(study.load("original"), trained, study.forget, study.retain)
    units.tick("the SAE's fit to the original's activations")
    # the SAE's fit to the original's own activations: the reference for each model's fit
    original_fit = model_fit(study.load("original"), trained, fit_samples, progress=units.sub(n_fit))
    units.tick(f"signals of {len(order)} model(s), the retrain control {ref_name!r} first", n_fit)
    started: list[str] = []

    def progress_for(name: str) -> ProgressFn | None:  # the next model's units: local chunks run in order
        started.append(name)
        role = " (reference)" if name == ref_name else ""
        return units.sub(per_model, f"model {len(started)}/{len(order)} {name}{role}: ")

    job = ChunkJob(make_signals_compute, study, (str(trained.path), experts, opts.alphas, opts.probe_layers),
                   {"trained": trained, "progress_for": None if progress is None else progress_for})
    pending, signals = dict(todo), {}
    for _, values in map_chunks(job, [[n] for n in order], executor):
        signals.update(values)
        for n in [n for n in pending if n in signals and ref_name in signals]:
            out[n] = restoration_report(signals[n], signals[ref_name], key, original_fit)
            if use_store:
                study.store.put(STORE_KIND, pending[n], key, out[n].to_dict())
            del pending[n]
        units.tick(f"signals of {', '.join(values)} done ({len(signals)}/{len(order)} models)",
                   per_model * len(values))
    return {n: out[n] for n in names}


def positive_control(study: Study, options: RestoreOptions | None = None,
                     trained: TrainedSAE | None = None, progress: ProgressFn | None = None) -> RestorationReport:
    """The report of the positive control (``analysis.sae.control``: the original with the SAE's expert
    directions projected out at the SAE's layer), judged against the study's retrain control like any model:
    restoration must bring its forget answers back (a large net restoration rate). Not stored: it is rebuilt
    from the SAE (two models' signals: the control's and the retrain control's). ``options.key`` with
    ``"control"`` added is its ``options``. ``progress`` by units of work: the expert features, the control's
    signals, the retrain control's (each by its forwards, probe fits and sample batches), the SAE's fit on the
    original."""
    opts = (options or RestoreOptions()).validated()
    ref_name = study.manifest.retrain
    if not study.forget:
        raise AnalysisInputError("the forget set is empty: nothing to restore")
    if not ref_name:
        raise AnalysisInputError("this study has no retrain control: the verdict needs one as the deletion "
                                 "reference (create the study with --retrain NAME)")
    original = study.load("original")
    if opts.probe_layers is not None:
        opts.validated(original.n_layers)
    trained = trained or load_sae(study, layer=opts.layer, k=opts.k)
    fit_samples = [*study.forget, *study.retain]
    n_fit, per_model = fit_batches(fit_samples), signal_units(study, original.n_layers, opts.probe_layers)
    units = Units(progress, 1 + 2 * per_model + n_fit)  # in model_signals' units of work
    units.say("finding the expert features")
    experts = find_expert_features(original, trained, study.forget, study.retain)
    handle = projected_model(original, trained, experts.all_features())
    units.tick("the positive control's signals")
    sig = model_signals(study, CONTROL_NAME, trained, experts, opts.alphas, opts.probe_layers, handle=handle,
                        progress=units.sub(per_model, f"{CONTROL_NAME}: "))
    units.tick(f"the retrain control's signals ({ref_name})", per_model)
    ref = model_signals(study, ref_name, trained, experts, opts.alphas, opts.probe_layers,
                        progress=units.sub(per_model, f"{ref_name}: "))
    units.tick("the SAE's fit to the original's activations", per_model)
    original_fit = model_fit(original, trained, fit_samples, progress=units.sub(n_fit))
    units.tick("positive control done", n_fit)
    key = {**opts.key(trained.sae_id, trained.layer), "control": "expert directions projected out"}
    return restoration_report(sig, ref, key, original_fit)
