"""Study-level entry points of the relearning attack: attack one model of the study (every job stored in the
study store, resumable, on an executor when given), judge a model against the same attack on the study's
retrain control (``relearn_report``), and the ``relearn`` signal (``relearn_signal``).

The attack jobs of a model are ``retain`` (fine-tune on a seeded subset of the retain split, measure every forget
sample) and ``forget:0`` / ``forget:1`` (fine-tune on one half of the forget set, measure the other). Each job is
stored under the attacked model's fingerprint and the options (plus a digest of the study's samples), so the
retrain control's attack is computed once and shared by every model judged against it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.errors import AnalysisInputError
from analysis.relearn.attack import forget_folds, pooled_share, recovered_share, relearn_attack, retain_subset
from analysis.relearn.options import SIGNAL_VARIANT, STORE_KIND, VARIANTS, RelearnOptions
from analysis.relearn.result import AttackRecord, RelearnResult, VariantResult
from analysis.signals import SignalReading, bootstrap_ci
from analysis.store import ChunkJob, Compute, Executor, ProgressFn, run_batch

if TYPE_CHECKING:
    from analysis.study import Study

RETAIN_JOB = "retain"
FORGET_JOBS: tuple[str, ...] = ("forget:0", "forget:1")
JOBS: tuple[str, ...] = (*FORGET_JOBS, RETAIN_JOB)


def attack_plan(study: Study, options: RelearnOptions) -> dict[str, tuple[list[str], list[str]]]:
    """Job id -> (ids trained on, ids measured) for every attack job of the study under ``options``."""
    forget = [s.id for s in study.forget]
    folds = forget_folds(forget, options.seed)
    retain = [s.id for s in study.retain]
    if not retain:
        raise AnalysisInputError("the retain-only relearning attack needs retain samples; this study has none")
    plan = {job: fold for job, fold in zip(FORGET_JOBS, folds, strict=True)}
    plan[RETAIN_JOB] = (retain_subset(retain, options.retain_rows, options.seed), forget)
    return plan


def _store_key(study: Study, options: RelearnOptions) -> dict[str, Any]:
    # job rows are not per-sample rows: the store cannot key them by a sample's content, so the key names every
    # sample of the study (a change to any forget or retain sample recomputes the attack)
    return {**options.key(), "study_samples": study.samples_digest()}


def make_attack_compute(study: Study, model: str, options: RelearnOptions) -> Compute:
    """The per-chunk work of ``attack_model``: each job's AttackRecord as a stored dict. Built here or in a Ray
    worker from the same arguments."""
    plan = attack_plan(study, options)
    by_id = {s.id: s for s in study.samples()}

    def compute(chunk: list[str]) -> dict[str, Any]:
        handle = study.load(model)  # the study's cached handle: the attack fine-tunes a copy of its model
        out: dict[str, Any] = {}
        for job in chunk:
            train, held_out = plan[job]
            run = relearn_attack(handle, [by_id[i] for i in train], [by_id[i] for i in held_out], options.steps,
                                 options.lr, seed=options.seed, max_grad_norm=options.max_grad_norm)
            out[job] = AttackRecord(train=train, eval=held_out, correct=run.correct.astype(int).tolist(),
                                    logprob=run.logprob.tolist(), losses=run.losses).to_dict()
        return out

    return compute


def attack_model(study: Study, model: str, options: RelearnOptions | None = None, progress: ProgressFn | None = None,
                 executor: Executor | None = None) -> dict[str, AttackRecord]:
    """Every attack job on one model of the study (job id -> AttackRecord), from the store or computed and
    stored job by job (resumable; on ``executor`` when given)."""
    opts = (options or RelearnOptions()).validated()
    study.entry(model)
    attack_plan(study, opts)  # bad inputs fail here, before any work
    job = ChunkJob(make_attack_compute, study, (model, opts))
    values = run_batch(study.store, STORE_KIND, [study.fingerprint(model)], _store_key(study, opts), list(JOBS), job,
                       chunk_size=1, progress=progress, desc=f"relearn {model}", executor=executor)
    return {j: AttackRecord.from_dict(v) for j, v in values.items()}


def relearn_cached(study: Study, model: str, options: RelearnOptions | None = None) -> bool:
    """True when every attack job of ``model`` and of the study's retrain control is stored under these options
    (the report is then instant)."""
    opts = (options or RelearnOptions()).validated()
    cmp = study.comparison(model)
    if cmp.reference is None:
        return False
    key = _store_key(study, opts)
    return all(set(JOBS) <= set(study.store.get_many(STORE_KIND, [study.fingerprint(n)], key, list(JOBS)))
               for n in dict.fromkeys([cmp.model, cmp.reference]))


def _curve(records: list[AttackRecord]) -> list[float]:
    """Held-out accuracy after each step over the records' held-out samples together."""
    rows = np.concatenate([np.asarray(r.correct, dtype=np.float64) for r in records], axis=1)
    return rows.mean(axis=1).tolist()


def _variant(variant: str, jobs: tuple[str, ...], model_runs: dict[str, AttackRecord],
             ref_runs: dict[str, AttackRecord], original: dict[str, int], seed: int) -> VariantResult:
    attacked = {k: v for j in jobs for k, v in model_runs[j].final().items()}
    ref_attacked = {k: v for j in jobs for k, v in ref_runs[j].final().items()}
    ref_before = {k: v for j in jobs for k, v in ref_runs[j].first().items()}
    model_before = {k: v for j in jobs for k, v in model_runs[j].first().items()}
    ids = list(attacked)
    cols = [[d[i] for i in ids] for d in (attacked, ref_attacked, original, ref_before)]
    shares = recovered_share(*cols)
    per_sample = {i: (None if np.isnan(x) else float(x)) for i, x in zip(ids, shares, strict=True)}
    defined = [x for x in per_sample.values() if x is not None]
    note = "" if defined else ("no forget sample is answered by the original and not by the retrain control: the "
                               "recovered share is undefined")
    accuracy = {"original": float(np.mean(cols[2])), "reference_before": float(np.mean(cols[3])),
                "model_before": float(np.mean([model_before[i] for i in ids])),
                "model_attacked": float(np.mean(cols[0])), "reference_attacked": float(np.mean(cols[1]))}
    return VariantResult(variant=variant, per_sample=per_sample,
                         value=float(np.mean(defined)) if defined else None, ci=bootstrap_ci(defined, seed=seed),
                         pooled=pooled_share(*cols), accuracy=accuracy, attacked=attacked,
                         reference_attacked=ref_attacked, curve=_curve([model_runs[j] for j in jobs]),
                         reference_curve=_curve([ref_runs[j] for j in jobs]), note=note)


def relearn_report(study: Study, model: str, options: RelearnOptions | None = None,
                   progress: ProgressFn | None = None, executor: Executor | None = None) -> RelearnResult:
    """The relearning attack on ``model`` judged against the same attack on the study's retrain control: per
    variant, each forget sample's recovered share of the original's accuracy net of the baseline (see
    analysis.relearn.attack), their mean with a bootstrap CI, and the accuracy curves. The attacks come from the
    study store when present."""
    opts = (options or RelearnOptions()).validated()
    cmp = study.comparison(model)
    if cmp.reference is None:
        raise AnalysisInputError("the relearning attack needs the study's retrain control as its baseline "
                                 "(study.json 'retrain'); this study has none")
    names = [cmp.model, cmp.reference] if cmp.model != cmp.reference else [cmp.model]

    def stage(i: int) -> ProgressFn | None:
        if progress is None:
            return None
        return lambda f, m: progress((i + f) / len(names), m)

    runs = {name: attack_model(study, name, opts, progress=stage(i), executor=executor)
            for i, name in enumerate(names)}
    from analysis.scoring import score_answers

    forget = study.forget
    orig = score_answers(study.load(cmp.original), [s.prompt for s in forget], [s.answer for s in forget])
    original = {s.id: int(c) for s, c in zip(forget, orig.correct, strict=True)}
    jobs = {"forget": FORGET_JOBS, "retain": (RETAIN_JOB,)}
    variants = {v: _variant(v, jobs[v], runs[cmp.model], runs[cmp.reference], original, opts.seed) for v in VARIANTS}
    fps = {n: study.fingerprint(n) for n in cmp.names}
    return RelearnResult(model=model, reference=cmp.reference, options=opts.key(), fingerprints=fps,
                         variants=variants)


def relearn_signal(study: Study, model: str) -> SignalReading:
    """The ``relearn`` signal: per forget sample, the share of the original's answer the forget-half attack
    recovers net of the retrain baseline; per model their mean with a bootstrap CI (higher = more knowledge
    present). Default options."""
    return relearn_report(study, model).reading(SIGNAL_VARIANT)
