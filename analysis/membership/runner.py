"""Study-level entry points of membership inference: score one model's forget and held-out samples (stored in
the study store per model fingerprint and options), the per-model result with AUROCs and per-sample
percentiles (``membership_report``), and the ``membership`` signal (``membership_signal``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.errors import AnalysisInputError
from analysis.membership.mia import auroc, auroc_ci, membership_scores, percentiles
from analysis.membership.options import SCORES, SIGNAL_SCORE, STORE_KIND, MembershipOptions
from analysis.membership.result import MembershipResult, ScoreSummary
from analysis.signals import SignalReading
from analysis.store import ProgressFn

if TYPE_CHECKING:
    from analysis.study import Study

PERTURBED_SEP = "~"  # a perturbed held-out item's id: "<forget id>~<wrong answer>"


def heldout_items(study: Study, options: MembershipOptions) -> list[tuple[str, str, str]]:
    """(id, prompt, answer) of every held-out item. ``perturbed``: each forget prompt with up to ``n_perturbed``
    other answers of its relation among the study's forget and retain samples (chosen as the evaluation's truth
    ratio chooses them, analysis.evaluation.perturbed_answers); ``retain``: the retain samples."""
    if options.heldout == "retain":
        items = [(s.id, s.prompt, s.answer) for s in study.retain]
    else:
        from analysis.evaluation import perturbed_answers

        forget = study.forget
        wrong = perturbed_answers(forget, forget + study.retain, options.n_perturbed)
        items = [(f"{s.id}{PERTURBED_SEP}{a}", s.prompt, a) for s, ws in zip(forget, wrong, strict=True) for a in ws]
    if not items:
        raise AnalysisInputError(f"membership inference: the held-out set ({options.heldout}) is empty for this "
                                 "study (no retain samples, or no other answer of any forget sample's relation)")
    return items


def _scored(study: Study, model: str, opts: MembershipOptions, progress: ProgressFn | None) -> dict[str, Any]:
    fp = study.fingerprint(model)
    stored = study.store.get(STORE_KIND, [fp], opts.key())
    if stored is not None:
        return stored
    forget = study.forget
    if not forget:
        raise AnalysisInputError("membership inference needs forget samples; this study has none")
    held = heldout_items(study, opts)
    handle = study.load(model)
    prompts = [s.prompt for s in forget] + [p for _, p, _ in held]
    answers = [s.answer for s in forget] + [a for _, _, a in held]
    if progress:
        progress(0.0, f"membership {model}: scoring {len(prompts)} rows")
    sc = membership_scores(handle, prompts, answers, opts.k, opts.span, batch_size=opts.batch_size)
    n = len(forget)
    value = {"forget_ids": [s.id for s in forget], "heldout_ids": [i for i, _, _ in held],
             **{f"forget_{k}": getattr(sc, k)[:n].tolist() for k in SCORES},
             **{f"heldout_{k}": getattr(sc, k)[n:].tolist() for k in SCORES}}
    study.store.put(STORE_KIND, [fp], opts.key(), value)
    if progress:
        progress(1.0, f"membership {model}: done")
    return value


def membership_cached(study: Study, model: str, options: MembershipOptions | None = None) -> bool:
    """True when the model's scores under these options are in the store (the result is then instant)."""
    opts = (options or MembershipOptions()).validated()
    return study.store.get(STORE_KIND, [study.fingerprint(model)], opts.key()) is not None


def membership_report(study: Study, model: str, options: MembershipOptions | None = None,
                      progress: ProgressFn | None = None) -> MembershipResult:
    """Loss and Min-K%++ scores of the forget samples against the held-out samples on one model of the study:
    each score's AUROC with a bootstrap interval (both sides resampled) and each forget sample's percentile
    among the held-out scores. The scores come from the study store when present."""
    opts = (options or MembershipOptions()).validated()
    study.entry(model)
    v = _scored(study, model, opts, progress)
    ids = list(v["forget_ids"])
    summaries: dict[str, ScoreSummary] = {}
    for k in SCORES:
        f = np.asarray(v[f"forget_{k}"], dtype=np.float64)
        h = np.asarray(v[f"heldout_{k}"], dtype=np.float64)
        pct = percentiles(f, h)
        summaries[k] = ScoreSummary(
            score=k, auroc=auroc(f, h), auroc_ci=auroc_ci(f, h, seed=opts.seed),
            percentile={i: (None if np.isnan(x) else float(x)) for i, x in zip(ids, pct, strict=True)},
            forget={i: (float(x) if np.isfinite(x) else None) for i, x in zip(ids, f, strict=True)},
            heldout=[float(x) if np.isfinite(x) else None for x in h])
    return MembershipResult(model=model, fingerprint=study.fingerprint(model), options=opts.key(),
                            heldout=opts.heldout, heldout_ids=list(v["heldout_ids"]), scores=summaries, seed=opts.seed)


def membership_signal(study: Study, model: str) -> SignalReading:
    """The ``membership`` signal: per forget sample, its Min-K%++ score's percentile among the held-out
    (perturbed) scores; per model their mean (= the AUROC) with a bootstrap CI (higher = more knowledge present).
    Default options."""
    return membership_report(study, model).reading(SIGNAL_SCORE)
