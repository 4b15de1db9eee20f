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
from analysis.circuits.cud import spearman
from analysis.circuits.runner import score_study
from analysis.diagnosis.result import Signal
from analysis.diagnosis.rules import (
    SAE_READING,
    SUBJECT_ROLES,
    TRACE_MIN_EFFECT,
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


def sae(study: Study, model: str, trained: TrainedSAE) -> Gathered:
    """The SAE restoration report (feature retention, restoration net of the retrain control, probes) and
    its verdict."""
    rep = restore(study, model, trained=trained)
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
def role_effect(aie: AIEResult, layers: Sequence[int], role: str) -> dict[str, float | None]:
    """Per kind: the mean AIE of ``role`` over ``layers``."""
    i = aie.roles.index(role)
    out: dict[str, float | None] = {}
    for kind, rows in aie.aie.items():
        vals = [rows[i][aie.layers.index(layer)] for layer in layers if layer in aie.layers]
        out[kind] = _mean([v for v in vals if v is not None])
    return out


def sample_effect(trace: TraceResult, layers: Sequence[int], role: str) -> float | None:
    """One sample's indirect effect at ``role``'s positions, mean over ``layers`` and the traced kinds."""
    pos = role_positions(trace.subject_range, len(trace.tokens))[role]
    if not pos:
        return None
    rows = [i for i, layer in enumerate(trace.layers) if layer in layers]
    return _mean([float(trace.indirect_effect(k)[np.ix_(rows, pos)].mean()) for k in trace.scores])


def trace(study: Study, model: str, options: TraceOptions, progress: ProgressFn | None) -> Gathered:
    """The subject's mid-layer effect (AIE over the forget set of the subject token group where the original's
    is largest) on the original and on this model; per sample the same effect before and after (read back
    from the stored traces)."""
    names = ("original", model)
    aies: dict[str, AIEResult] = {}
    for j, n in enumerate(names):
        sub = None if progress is None else (lambda f, msg, _j=j: progress((_j + f) / len(names), msg))
        aies[n] = trace_dataset(study, n, options, progress=sub)
    layers = mid_layers(len(aies["original"].layers))

    def overall(aie: AIEResult, role: str) -> float | None:
        return _mean([v for v in role_effect(aie, layers, role).values() if v is not None])

    scored = {r: overall(aies["original"], r) for r in SUBJECT_ROLES}
    role = max((r for r in SUBJECT_ROLES if scored[r] is not None), key=lambda r: scored[r] or 0.0, default=None)
    if role is None:
        return unavailable("trace", "no traced sample has a subject token")
    eff = {n: role_effect(a, layers, role) for n, a in aies.items()}
    before, after = overall(aies["original"], role), overall(aies[model], role)
    kept = None if before is None or after is None or before < TRACE_MIN_EFFECT else after / before
    kinds = list(eff["original"])
    numbers = {"layers": layers, "role": role, "effect_original": before, "effect_model": after, "kept": kept,
               "kept_pct": pct(kept), "by_kind": eff, "clean_original": aies["original"].clean,
               "clean_model": aies[model].clean}
    summary = (f"AIE of the {role} at layers {layers[0]}-{layers[-1]} ({'+'.join(kinds)}): original "
               f"{fmt(before, '.3f')}, this model {fmt(after, '.3f')} ({pct(kept)} kept)")
    evidence = [summary] + [f"{k}: original {fmt(eff['original'][k], '.3f')}, this model {fmt(eff[model][k], '.3f')}"
                            for k in kinds]
    evidence.append(f"mean clean answer probability: original {aies['original'].clean:.3f}, this model "
                    f"{aies[model].clean:.3f} (each model is traced through its own output)")
    if before is not None and before < TRACE_MIN_EFFECT:
        evidence.append(f"the original's effect is below {TRACE_MIN_EFFECT}: nothing to compare")
    rows: dict[str, dict[str, Any]] = {}
    for s in study.forget:  # each dataset trace keeps the per-sample traces it averaged
        tb, ta = aies["original"].traces.get(s.id), aies[model].traces.get(s.id)
        if tb is None or ta is None:  # skipped (untraceable) on either model
            continue
        b, a = sample_effect(tb, layers, role), sample_effect(ta, layers, role)
        rows[s.id] = {"trace_before": b, "trace_after": a,
                      "trace_shift": None if a is None or b is None else a - b}
    # The per-sample traces are already in the rows; the detail keeps the averages only (a smaller report).
    return Gathered(Signal("trace", TITLES["trace"], trace_reading(kept), summary, evidence, numbers), rows,
                    {n: replace(a, traces={}).to_dict() for n, a in aies.items()})


# ---- CUD ----------------------------------------------------------------------------------------------------
def observed_difficulty(study: Study, model: str) -> dict[str, float] | None:
    """This model's per-sample observed difficulty (``difficulty.auc`` of its unlearning run), if recorded."""
    log = read_unlearning_log(study, model)
    if not log or "auc" not in log.get("difficulty", {}):
        return None
    return {str(i): float(v) for i, v in zip(log["forget_ids"], log["difficulty"]["auc"], strict=True)}


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
