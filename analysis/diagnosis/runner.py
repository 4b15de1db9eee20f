"""``diagnose``: every signal of one unlearned model of a study, joined into a summary verdict, an agreement
section and a per-sample table; the whole Diagnosis is stored in the study store (a second call is instant,
and every analysis under it stores its own results, so an interrupted diagnosis resumes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from analysis.diagnosis import signals as gather
from analysis.diagnosis.options import STORE_KIND, DiagnosisOptions
from analysis.diagnosis.result import SAMPLE_COLUMNS, Diagnosis
from analysis.diagnosis.rules import agreement, caveats, summary_verdict
from analysis.errors import AnalysisInputError, StudyError, WorkbenchError
from analysis.sae.progress import span
from analysis.sae.train import TrainedSAE, train_sae
from analysis.store import ProgressFn

if TYPE_CHECKING:
    from analysis.study import Study

# Relative cost of each stage on an empty store (the SAE stage includes training it), for the progress bar.
STAGES: dict[str, float] = {"outputs": 1.0, "sae": 4.0, "emphasis": 1.0, "trace": 3.0, "cud": 1.0}
SAE_TRAIN_SHARE = 0.5  # of the SAE stage's bar, when the SAE has to be trained first
STAGE_TEXT: dict[str, str] = {"outputs": "output metrics", "sae": "SAE restoration and probes (training the SAE "
                              "if none is cached)", "emphasis": "keyword-emphasis recovery",
                              "trace": "causal traces of the forget set", "cud": "CUD (EAP-IG on the original)"}


class Stages:
    """One progress callback over consecutive stages weighted by ``STAGES``."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress = progress
        self.total = sum(STAGES.values())
        self.done = 0.0

    def _scaled(self, name: str, outer: ProgressFn) -> ProgressFn:
        start, width = self.done, STAGES[name]

        def report(frac: float, msg: str) -> None:
            outer(min(1.0, (start + width * min(1.0, max(0.0, frac))) / self.total), f"{name}: {msg}")

        return report

    def run(self, name: str, fn: Callable[[ProgressFn | None], gather.Gathered]) -> gather.Gathered:
        """``fn(progress)``; a WorkbenchError (no retrain control, no SAE layer, no observed difficulty...)
        makes the signal unavailable with the error as its reason instead of failing the diagnosis."""
        if self.progress is not None:
            self.progress(self.done / self.total, STAGE_TEXT[name])
        try:
            got = fn(None if self.progress is None else self._scaled(name, self.progress))
        except WorkbenchError as e:
            got = gather.unavailable(name, str(e))
        self.done += STAGES[name]
        if self.progress is not None:
            self.progress(self.done / self.total, f"{name} done")
        return got


def check_model(study: Study, model: str) -> None:
    """Clear errors for a model a diagnosis cannot take."""
    if "original" not in study.manifest.models:
        raise StudyError("this study has no 'original' model: a diagnosis compares with the model before unlearning")
    if model == "original":
        raise AnalysisInputError("pick an unlearned model or a control to diagnose, not the original")
    study.entry(model)  # unknown model -> StudyError listing the study's models
    if not study.forget:
        raise AnalysisInputError("the study's forget set is empty: there is nothing to diagnose")
    if model == study.manifest.retrain:
        raise AnalysisInputError(f"{model!r} is the study's reference retrain control, which every signal judges a "
                                 "model against: judged against itself each gap is 0 by construction; diagnose a "
                                 "retrain of another seed (the zoo's zoo_retrain_*) instead")


def store_models(study: Study, model: str) -> list[str]:
    c = study.comparison(model)
    return [study.fingerprint(c.original), study.fingerprint(c.model), study.fingerprint(c.reference) if c.reference else ""]


def stored_diagnosis(study: Study, model: str, options: DiagnosisOptions | None = None) -> Diagnosis | None:
    """The stored diagnosis of ``model`` with these options and the study's SAE, or None (cheap: no analysis
    runs)."""
    check_model(study, model)
    opts = (options or DiagnosisOptions()).validated(study.load("original").n_layers)
    trained = gather.cached_sae(study, opts.sae)
    hit = None if trained is None else study.store.get(STORE_KIND, store_models(study, model),
                                                       opts.key(trained.sae_id))
    return None if hit is None else Diagnosis.from_dict(hit)


def diagnose(study: Study, model: str, options: DiagnosisOptions | None = None, progress: ProgressFn | None = None,
             use_store: bool = True) -> Diagnosis:
    """Diagnose ``model`` (an unlearned model or a control of ``study``): gather every signal, computing what
    is not stored yet, and combine them by the rules of analysis.diagnosis.rules."""
    check_model(study, model)
    study.load(model)  # a model that fails to load is an error of the diagnosis, not of one signal
    opts = (options or DiagnosisOptions()).validated(study.load("original").n_layers)
    models = store_models(study, model)
    saes: dict[str, TrainedSAE | None] = {"cached": gather.cached_sae(study, opts.sae)}
    if use_store and saes["cached"] is not None:
        hit = study.store.get(STORE_KIND, models, opts.key(saes["cached"].sae_id))
        if hit is not None:
            if progress is not None:
                progress(1.0, "loaded from the study store")
            return Diagnosis.from_dict(hit)
    retrain = study.manifest.retrain
    stages = Stages(progress)

    def sae_stage(p: ProgressFn | None) -> gather.Gathered:
        # without a cached SAE, training it is the stage's first half (by its steps), restoration the second
        train_share = 0.0 if saes["cached"] is not None else SAE_TRAIN_SHARE
        saes["used"] = saes["cached"] or train_sae(study, opts.sae, progress=span(p, 0.0, train_share))
        return gather.sae(study, model, saes["used"], progress=span(p, train_share, 1.0))

    got = {"outputs": stages.run("outputs", lambda p: gather.outputs(study, model, retrain))}
    got["sae"] = stages.run("sae", sae_stage)
    got["emphasis"] = stages.run("emphasis", lambda p: gather.emphasis(study, model, retrain, opts.recovery, p))
    got["trace"] = stages.run("trace", lambda p: gather.trace(study, model, opts.trace, p))
    correct_after = {i: bool(r["correct_after"]) for i, r in got["outputs"].per_sample.items()}
    got["cud"] = stages.run("cud", lambda p: gather.cud(study, model, opts.cud_distance, opts.cud_top_n,
                                                        correct_after, p))
    signals = {k: g.signal for k, g in got.items()}
    verdict, reason = summary_verdict(signals)
    names = study.comparison(model).names
    used = saes.get("used")
    key = opts.key(used.sae_id if used is not None else None)
    result = Diagnosis(
        study=study.manifest.name, model=model, retrain=retrain, verdict=verdict,
        headline=f"{model}: {verdict} — {reason}", evidence=[f"{s.title}: {s.summary}" for s in signals.values()],
        signals=signals, agreement=agreement(signals), samples=sample_rows(study, got),
        details={"eval": got["outputs"].detail, "sae": got["sae"].detail, "recovery": got["emphasis"].detail,
                 "trace": got["trace"].detail, "cud": got["cud"].detail},
        fingerprints={n: study.fingerprint(n) for n in names}, options=key, caveats=caveats(signals))
    if use_store:
        study.store.put(STORE_KIND, models, key, result.to_dict())
    return result


def sample_rows(study: Study, got: dict[str, gather.Gathered]) -> list[dict[str, Any]]:
    """One row per forget sample, every column of ``SAMPLE_COLUMNS`` (None where a signal has no value)."""
    rows = []
    for s in study.forget:
        row: dict[str, Any] = dict.fromkeys(SAMPLE_COLUMNS)
        row.update({"id": s.id, "person": s.subject, "relation": s.relation, "prompt": s.prompt, "answer": s.answer})
        for g in got.values():
            row.update(g.per_sample.get(s.id, {}))
        rows.append(row)
    return rows
