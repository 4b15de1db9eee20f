"""Gather each signal of a diagnosis from its analysis (each analysis reads from and writes to the study
store, so what is stored is not recomputed): output metrics, the SAE verdict, keyword-emphasis recovery,
the causal trace of the subject, and CUD. Each gatherer returns the signal's reading, its columns of the
per-sample table, and the underlying result as a dict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.attribution.options import RecoveryOptions
from analysis.attribution.recovery import recover
from analysis.circuits.cud import method_difficulty, spearman
from analysis.circuits.runner import score_study
from analysis.diagnosis.result import Signal
from analysis.diagnosis.rules import (
    SAE_READING,
    SUBJECT_ROLES,
    TRACE_GAP_FLOOR,
    TRACE_MIN_SHARE,
    fmt,
    forgotten_share,
    mid_layers,
    output_reading,
    pct,
    recovery_reading,
    trace_reading,
)
from analysis.errors import AnalysisInputError
from analysis.evaluation import evaluate_study, model_scores
from analysis.sae.options import SAEOptions
from analysis.sae.runner import restore
from analysis.sae.train import TrainedSAE, load_sae
from analysis.signals import bootstrap_ci
from analysis.store import ProgressFn
from analysis.tracing.options import TraceOptions
from analysis.tracing.result import AIEResult, TraceResult, role_positions
from analysis.tracing.runner import trace_dataset
from analysis.unlearning.log import read_unlearning_log

if TYPE_CHECKING:
    from analysis.study import Study

TITLES: dict[str, str] = {"outputs": "outputs", "sae": "the SAE", "emphasis": "emphasis recovery",
                          "trace": "the causal trace", "cud": "CUD"}
CUD_LABEL_NAMES = {1: "hard", -1: "easy", 0: "-"}


@dataclass
class Gathered:
    signal: Signal
    per_sample: dict[str, dict[str, Any]] = field(default_factory=dict)  # sample id -> per-sample columns
    detail: Any = None  # the underlying result as a JSON-serialisable dict


def unavailable(name: str, why: str) -> Gathered:
    return Gathered(Signal(name, TITLES[name], "unavailable", why))


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


# ---- outputs ----------------------------------------------------------------------------------------------
def outputs(study: Study, model: str, retrain: str | None) -> Gathered:
    """Forget / paraphrase / retain accuracy and utility of the original, this model and the retrain
    control, forget quality against the control; per sample: correct and answer probability before / after."""
    names = list(dict.fromkeys(["original", model, *([retrain] if retrain else [])]))
    evals = evaluate_study(study, names)
    o, m = evals["original"], evals[model]
    r = evals[retrain] if retrain else None
    share = forgotten_share(o.forget_acc, m.forget_acc, r.forget_acc if r else None)
    numbers = {"acc_original": o.forget_acc, "acc_model": m.forget_acc, "acc_retrain": r.forget_acc if r else None,
               "share": share, "share_pct": pct(share), "paraphrase_acc": m.paraphrase_acc,
               "retain_acc": m.retain_acc, "retain_acc_original": o.retain_acc, "utility": m.utility,
               "forget_quality": m.forget_quality}
    control = f"{retrain} {r.forget_acc:.2f}" if r else "no retrain control: 0 assumed"
    summary = (f"forget accuracy {m.forget_acc:.2f} (original {o.forget_acc:.2f}, {control}): {pct(share)} of the "
               "retrain control's drop")
    evidence = [summary,
                f"paraphrased forget prompts: {fmt(m.paraphrase_acc)} (original {fmt(o.paraphrase_acc)})",
                f"retain accuracy {m.retain_acc:.2f} (original {o.retain_acc:.2f}); utility {fmt(m.utility)} "
                f"(original {fmt(o.utility)})"]
    if m.forget_quality is not None:
        evidence.append(f"forget quality {m.forget_quality:.2e} (KS p-value of truth ratios against {retrain}; "
                        "near 1 = indistinguishable from it)")
    per = {n: model_scores(study, n)["per_sample"] for n in ("original", model)}
    look = {n: {i: (c, p) for i, c, p in zip(v["ids"], v["correct"], v["prob"], strict=True)} for n, v in per.items()}
    rows = {}
    for s in study.forget:
        (cb, pb), (ca, pa) = look["original"][s.id], look[model][s.id]
        rows[s.id] = {"correct_before": bool(cb), "correct_after": bool(ca), "p_before": float(pb),
                      "p_after": float(pa)}
    return Gathered(Signal("outputs", TITLES["outputs"], output_reading(share), summary, evidence, numbers), rows,
                    {n: e.to_dict() for n, e in evals.items()})


# ---- SAE --------------------------------------------------------------------------------------------------
def cached_sae(study: Study, options: SAEOptions) -> TrainedSAE | None:
    """The SAE the SAE page would use at ``options``' layer and k (the default-options one, else the latest
    trained there), or None when the study has none yet."""
    try:
        return load_sae(study, layer=options.layer, k=options.k)
    except AnalysisInputError:
        return None


def sae(study: Study, model: str, trained: TrainedSAE, progress: ProgressFn | None = None) -> Gathered:
    """The SAE restoration report (feature retention, restoration net of the retrain control, probes) and
    its verdict."""
    rep = restore(study, model, trained=trained, progress=progress)
    gap = rep.probe_gap
    numbers = {"verdict": rep.verdict, "feature_retention": rep.feature_retention,
               "retrain_feature_retention": rep.retrain.get("feature_retention"),
               "restoration_rate": rep.restoration_rate, "restoration_rate_net": rep.restoration_rate_net,
               "probe_accuracy": rep.probe_accuracy, "probe_gap": gap, "layer": rep.options.get("layer"),
               "sae_why": ", ".join(rep.reasons) or "see the evidence"}
    summary = (f"verdict {rep.verdict}: expert-feature retention {rep.feature_retention:.2f} (retrain control "
               f"{fmt(rep.retrain.get('feature_retention'))}), net restoration {fmt(rep.restoration_rate_net)}, "
               f"probe accuracy {fmt(rep.probe_accuracy)} ({fmt(gap, '+.2f')} over the retrain control)")
    rows = {s["id"]: {"sae_verdict": s["verdict"]} for s in rep.per_sample}
    return Gathered(Signal("sae", TITLES["sae"], SAE_READING.get(rep.verdict, "inconclusive"), summary,
                           list(rep.evidence), numbers), rows, rep.to_dict())


# ---- keyword-emphasis recovery ------------------------------------------------------------------------------
def emphasis(study: Study, model: str, retrain: str | None, options: RecoveryOptions,
             progress: ProgressFn | None) -> Gathered:
    """unPact keyword-emphasis recovery of each strategy, net of the retrain control's, and per sample."""
    rep = recover(study, model, options, progress=progress)
    base = rep.retrain_results or {}
    rate = {s: r.recovery_rate for s, r in rep.results.items()}
    base_rate = {s: (base[s].recovery_rate if s in base else None) for s in rep.results}
    net, best_s, best = rep.net_by_strategy, rep.best_strategy, rep.best_net
    numbers = {"net_by_strategy": net, "rate_by_strategy": rate, "retrain_rate_by_strategy": base_rate,
               "best_strategy": best_s, "best_net": best, "best_net_pct": pct(best), "n_eligible": rep.n_eligible,
               "n_forget": rep.n_forget}
    if best_s is None:
        summary = ("nothing to recover: this model still answers every forget sample the original answers, or "
                   "none is eligible")
    else:
        summary = (f"best net recovery {pct(best)} ({best_s}: {pct(rate[best_s])} on this model, "
                   f"{pct(base_rate[best_s])} on {rep.retrain or 'no retrain control'})")
    evidence = [f"{s}: {r.n_recovered}/{r.n_denominator} forgotten samples recovered ({pct(r.recovery_rate)}), retrain "
                f"control {pct(base_rate[s])}, net {pct(net[s])}; answer-probability gain {fmt(r.prob_gain, '+.3f')}"
                for s, r in rep.results.items()]
    evidence.append(f"{rep.n_eligible} of {rep.n_forget} forget samples are eligible (the original answers them "
                    "top-1); keywords from " + str(rep.options.get("keywords_from")))
    rows = rep.per_sample
    return Gathered(Signal("emphasis", TITLES["emphasis"], recovery_reading(list(net.values())), summary, evidence,
                           numbers), rows, rep.to_dict())


# ---- causal trace -------------------------------------------------------------------------------------------
def normalised_effect(trace: TraceResult, layers: Sequence[int], role: str, floor: float,
                      kinds: Sequence[str] | None = None) -> tuple[float | None, str]:
    """One sample's normalised indirect effect on the model it was traced on: the indirect effect of restoring
    ``role``'s positions at ``layers`` (mean over them and over ``kinds``, default every traced kind) divided
    by that model's own total effect, ``clean - corrupted``. ``(None, why)`` where the role has no position
    or the model's own gap is below ``floor`` in absolute value (nothing to normalise)."""
    pos = role_positions(trace.subject_range, len(trace.tokens))[role]
    if not pos:
        return None, f"the prompt has no {role}"
    gap = trace.clean - trace.corrupted
    if not abs(gap) >= floor:  # (NaN-safe)
        return None, f"the model's own clean-minus-corrupted gap {gap:.3g} is below the floor {floor:g}"
    rows = [i for i, layer in enumerate(trace.layers) if layer in layers]
    effects = [float(trace.indirect_effect(k)[np.ix_(rows, pos)].mean()) for k in (kinds or trace.scores)]
    return float(np.mean(effects)) / gap, ""


ShareRows = dict[str, tuple[float | None, str]]  # sample id -> (normalised effect or None, why None)


def trace_shares(study: Study, aie: AIEResult, layers: Sequence[int], role: str, floor: float,
                 answered: dict[str, bool], kinds: Sequence[str] | None = None) -> ShareRows:
    """Per forget sample, its normalised mid-layer effect (``normalised_effect``) on the model ``aie`` was traced
    on, None (with why) for a sample that was not traced or that the original does not answer top-1 (the trace
    follows the original's answer)."""
    out: ShareRows = {}
    for s in study.forget:
        t = aie.traces.get(s.id)
        if t is None:
            out[s.id] = (None, "not traced: " + aie.skipped.get(s.id, "no stored trace"))
        elif not answered.get(s.id, False):
            out[s.id] = (None, "the original does not give this answer (top-1): there is no original answer to trace")
        else:
            out[s.id] = normalised_effect(t, layers, role, floor, kinds)
    return out


def _share_mean(rows: ShareRows) -> float | None:
    return _mean([v for v, _ in rows.values() if v is not None])


def trace(study: Study, model: str, options: TraceOptions, progress: ProgressFn | None) -> Gathered:
    """The subject's normalised mid-layer effect on the original and on this model: per forget sample, the
    indirect effect of restoring the subject's mid-layer states divided by the model's own clean-minus-corrupted
    gap (each model traces the original's answer, the sample's; read back from the stored traces), and per model
    the mean over samples; ``kept`` is this model's mean as a fraction of the original's (analysis.diagnosis.rules,
    trace)."""
    names = ("original", model)
    aies: dict[str, AIEResult] = {}
    for j, n in enumerate(names):
        sub = None if progress is None else (lambda f, msg, _j=j: progress((_j + f) / len(names), msg))
        aies[n] = trace_dataset(study, n, options, progress=sub)
    layers = mid_layers(len(aies["original"].layers))
    metric = options.metric
    floor = TRACE_GAP_FLOOR[metric]
    per = model_scores(study, "original")["per_sample"]
    answered = {str(i): bool(c) for i, c in zip(per["ids"], per["correct"], strict=True)}
    by_role = {r: trace_shares(study, aies["original"], layers, r, floor, answered) for r in SUBJECT_ROLES}
    scored = {r: _share_mean(rows) for r, rows in by_role.items()}
    role = max((r for r in SUBJECT_ROLES if scored[r] is not None), key=lambda r: scored[r] or 0.0, default=None)
    if role is None:
        return unavailable("trace", "no forget sample has a defined share on the original (no subject token, the "
                                    "original does not answer it, or its gap is below the floor)")
    shares = {"original": by_role[role], model: trace_shares(study, aies[model], layers, role, floor, answered)}
    before, after = _share_mean(shares["original"]), _share_mean(shares[model])
    kept = None if before is None or after is None or before < TRACE_MIN_SHARE else after / before
    ci = bootstrap_ci([v for v, _ in shares[model].values()])
    kept_ci = None if kept is None or ci is None or before is None else (ci[0] / before, ci[1] / before)
    kinds = [k for k in aies["original"].aie if k in aies[model].aie]
    by_kind = {n: {k: _share_mean(trace_shares(study, aies[n], layers, role, floor, answered, [k])) for k in kinds}
               for n in names}
    n_defined = {n: sum(v is not None for v, _ in shares[n].values()) for n in names}
    notes = {sid: why for sid, (v, why) in shares[model].items() if v is None}
    numbers = {"layers": layers, "role": role, "metric": metric, "gap_floor": floor, "share_original": before,
               "share_model": after, "share_model_ci": None if ci is None else list(ci),
               "n_defined_original": n_defined["original"], "n_defined_model": n_defined[model], "kept": kept,
               "kept_pct": pct(kept), "kept_ci": None if kept_ci is None else list(kept_ci), "by_kind": by_kind,
               "clean_original": aies["original"].clean, "clean_model": aies[model].clean,
               "corrupted_original": aies["original"].corrupted, "corrupted_model": aies[model].corrupted,
               "sample_notes": notes}
    summary = (f"share of each model's own clean-minus-corrupted gap ({metric}) carried by the {role} at layers "
               f"{layers[0]}-{layers[-1]} ({'+'.join(kinds)}): original {fmt(before, '.3f')}, this model "
               f"{fmt(after, '.3f')} ({pct(kept)} of the original's"
               + (f", 95% interval {pct(kept_ci[0])} to {pct(kept_ci[1])}" if kept_ci else "")
               + "; 100% = as much as the original, 0% = none, below 0% = restoring these states now pushes "
                 "away from the answer)")
    evidence = [summary] + [f"{k}: original {fmt(by_kind['original'][k], '.3f')}, this model "
                            f"{fmt(by_kind[model][k], '.3f')}" for k in kinds]
    evidence.append(f"mean clean / corrupted {metric}: original {aies['original'].clean:.3f} / "
                    f"{aies['original'].corrupted:.3f}, this model {aies[model].clean:.3f} / "
                    f"{aies[model].corrupted:.3f}; each model traces the original's answer and its effect is "
                    "divided by its own gap")
    evidence.append(f"samples with a defined share: original {n_defined['original']}, this model "
                    f"{n_defined[model]} of {len(study.forget)} (undefined where the model's own gap is below "
                    f"{floor:g}, the sample was not traced, or the original does not answer it)")
    if before is not None and before < TRACE_MIN_SHARE:
        evidence.append(f"the original's share is below {TRACE_MIN_SHARE}: nothing to compare")
    rows: dict[str, dict[str, Any]] = {}
    for s in study.forget:
        b, a = shares["original"][s.id][0], shares[model][s.id][0]
        rows[s.id] = {"trace_before": b, "trace_after": a, "trace_shift": None if a is None or b is None else a - b}
    # The per-sample traces are already in the rows; the detail keeps the averages only (a smaller report).
    return Gathered(Signal("trace", TITLES["trace"], trace_reading(kept, kept_ci), summary, evidence, numbers), rows,
                    {n: replace(a, traces={}).to_dict() for n, a in aies.items()})


# ---- CUD ----------------------------------------------------------------------------------------------------
def observed_difficulty(study: Study, model: str) -> dict[str, float] | None:
    """This model's per-sample observed difficulty (``auc_after`` of its unlearning run: the original's own
    probability left out, analysis.circuits.cud.method_difficulty), if recorded."""
    log = read_unlearning_log(study, model)
    return method_difficulty(log, "auc_after") if log else None


def cud(study: Study, model: str, distance: str, top_n: int, correct_after: dict[str, bool],
        progress: ProgressFn | None) -> Gathered:
    """CUD of every forget sample (on the original, before unlearning), related to this model's observed
    difficulty and to which samples it still answers."""
    rep = score_study(study, distance=distance, top_n=top_n, progress=progress)
    score = dict(zip(rep.ids, rep.cud, strict=True))
    observed = observed_difficulty(study, model)
    both = [i for i in rep.ids if observed and i in observed]
    rho = spearman(np.array([score[i] for i in both]), np.array([observed[i] for i in both])) if observed else None
    answered = _mean([score[i] for i in rep.ids if correct_after.get(i)])
    forgotten = _mean([score[i] for i in rep.ids if i in correct_after and not correct_after[i]])
    v = rep.validation
    numbers = {"n": len(rep.ids), "mean": _mean(rep.cud), "min": min(rep.cud), "max": max(rep.cud),
               "spearman_model": rho, "spearman_all": v.get("spearman"), "auroc": v.get("auroc"),
               "methods": v.get("methods"), "mean_answered": answered, "mean_forgotten": forgotten}
    against = (f"Spearman rho {fmt(rho)} against this model's observed difficulty" if observed else
               "no observed difficulty recorded for this model")
    summary = (f"predicted difficulty over {len(rep.ids)} forget samples: mean {fmt(numbers['mean'])} (range "
               f"{fmt(numbers['min'])}-{fmt(numbers['max'])}); {against}")
    evidence = [summary,
                f"cross-validated against the mean observed difficulty of {', '.join(v.get('methods', []))}: "
                f"Spearman rho {fmt(v.get('spearman'))}, AUROC hard vs easy {fmt(v.get('auroc'))}",
                f"mean CUD of the samples this model still answers {fmt(answered)}, of those it forgot "
                f"{fmt(forgotten)}"]
    label = dict(zip(rep.ids, rep.labels, strict=True))
    rows = {i: {"cud": score[i], "cud_label": CUD_LABEL_NAMES.get(int(label[i]), "-"),
                "observed_difficulty": observed.get(i) if observed else None} for i in rep.ids}
    return Gathered(Signal("cud", TITLES["cud"], "context", summary, evidence, numbers), rows, rep.to_dict())
