"""The verdict of one model's signals judged against the retrain control's (true deletion).

Rule (``verdict_of``), with the thresholds of ``analysis.sae.options``:
- suppressed if probe accuracy on forget exceeds the retrain control's by >= PROBE_MARGIN at some layer,
  or the net restoration rate (max over alpha) is >= RESTORE_NET;
- erased if the probe gap is <= ERASE_PROBE_GAP, the net restoration rate is <= ERASE_RESTORE_NET (or
  undefined because the model never forgot nothing), and feature retention is <= the retrain control's
  + ERASE_RETENTION_GAP;
- inconclusive otherwise.
Per sample: suppressed if the probe decodes it at the model's best probe layer while the retrain
control's probe does not, or steering restores it while it does not inject it into the retrain control;
erased if neither and its feature retention is within ERASE_RETENTION_GAP of the retrain control's;
inconclusive otherwise. The retrain control is never judged against itself (``restoration_report`` refuses:
every gap would be 0 by construction); a retrain judged as a model is another one (a zoo retrain, another seed).

``verdict_reasons`` says in words which clauses decided the verdict; ``restoration_report`` builds the
whole report, with the SAE's fit to the model's own activations (and the original's, as the reference) and a
caveat among the reasons when that fit is poor (``fit_caveat``; the verdict is not changed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from analysis.errors import AnalysisInputError
from analysis.sae.options import (
    ERASE_PROBE_GAP,
    ERASE_RESTORE_NET,
    ERASE_RETENTION_GAP,
    MAX_SAE_FVE_DROP,
    MIN_FORGET_DROP,
    MIN_SAE_FVE,
    PROBE_MARGIN,
    RESTORE_NET,
    Verdict,
)
from analysis.sae.result import RestorationReport, SAEFit, Signals

# what the retention number means, said wherever it is printed (it is a ratio, not a share: it can exceed 1)
RETENTION_SCALE = ("1 = the expert features fire as strongly as in the original, 0 = not at all, above 1 = more "
                   "strongly than in the original")


def _max(vals: Sequence[float | None]) -> float | None:
    v = [x for x in vals if x is not None]
    return max(v) if v else None


def probe_gap(by_layer: Mapping[int, float | None],
              reference: Mapping[int, float | None]) -> tuple[float | None, int | None]:
    """(largest gap, its layer): max over layers of this model's probe accuracy minus the reference's at the
    same layer (0 where the reference has none); layers where this model has no accuracy are skipped; ties go
    to the deeper layer. (None, None) when no layer has an accuracy."""
    gaps = [(v - (reference.get(layer) or 0.0), layer) for layer, v in by_layer.items() if v is not None]
    return max(gaps) if gaps else (None, None)


def verdict_of(probe_gap: float | None, net: float | None, retention: float, retrain_retention: float) -> Verdict:
    if (probe_gap is not None and probe_gap >= PROBE_MARGIN) or (net is not None and net >= RESTORE_NET):
        return "suppressed"
    if (probe_gap is None or probe_gap <= ERASE_PROBE_GAP) and (net is None or net <= ERASE_RESTORE_NET) and \
            retention <= retrain_retention + ERASE_RETENTION_GAP:
        return "erased"
    return "inconclusive"


def verdict_reasons(probe_gap: float | None, net: float | None, retention: float,
                    retrain_retention: float) -> list[str]:
    """The clauses of the rule that decided ``verdict_of(...)``, in words: for suppressed the signals over
    their thresholds, for erased every condition that held, for inconclusive the erase conditions that failed."""
    v = verdict_of(probe_gap, net, retention, retrain_retention)
    if v == "suppressed":
        out = []
        if probe_gap is not None and probe_gap >= PROBE_MARGIN:
            out.append(f"probe {probe_gap:+.2f} over the retrain control")
        if net is not None and net >= RESTORE_NET:
            out.append(f"net restoration {net:.2f}")
        return out
    probe = "nothing decodable by the probe" if probe_gap is None else \
        f"probe {probe_gap:+.2f} over the retrain control"
    restoration = "net restoration undefined (the model did not forget)" if net is None else \
        f"net restoration {net:.2f}"
    retained = (f"expert-feature retention {retention:.2f} (retrain control {retrain_retention:.2f}; "
                f"{RETENTION_SCALE})")
    if v == "erased":
        return [probe if probe_gap is None else f"{probe}, within {ERASE_PROBE_GAP}",
                restoration if net is None else f"{restoration}, at most {ERASE_RESTORE_NET}",
                f"{retained}, within {ERASE_RETENTION_GAP}"]
    out = []
    if probe_gap is not None and probe_gap > ERASE_PROBE_GAP:
        out.append(f"{probe}: above {ERASE_PROBE_GAP}, below {PROBE_MARGIN}")
    if net is not None and net > ERASE_RESTORE_NET:
        out.append(f"{restoration}: above {ERASE_RESTORE_NET}, below {RESTORE_NET}")
    if retention > retrain_retention + ERASE_RETENTION_GAP:
        out.append(f"{retained}: more than {ERASE_RETENTION_GAP} above the control's")
    return out


def fit_caveat(fit: SAEFit | None, original: SAEFit | None, where: str = "its hook") -> str | None:
    """A sentence when the SAE reconstructs a model's own activations poorly: its fraction of variance
    explained below ``MIN_SAE_FVE``, or more than ``MAX_SAE_FVE_DROP`` below the original's own (``original``);
    else None. An undefined fit gives no caveat."""
    if fit is None or fit.fve is None:
        return None
    ref = None if original is None else original.fve
    ref_text = "" if ref is None else f" (original {ref:.2f})"
    if fit.fve < MIN_SAE_FVE:
        why = f"below {MIN_SAE_FVE}"
    elif ref is not None and fit.fve < ref - MAX_SAE_FVE_DROP:
        why = f"more than {MAX_SAE_FVE_DROP} below the original's"
    else:
        return None
    return (f"caveat: the original's SAE explains only {fit.fve:.2f} of this model's activation variance at "
            f"{where}{ref_text}, {why}: its retention and restoration read features this model may not use")


def restoration_report(sig: Signals, ref: Signals, options: dict[str, Any],
                       original_fit: SAEFit | None = None) -> RestorationReport:
    """The report of ``sig`` judged against the retrain control's signals ``ref``; ``original_fit`` is the SAE's
    fit to the original's own activations (the reference for the caveat on ``sig.fit``). ``sig`` and ``ref``
    of one model (same name or same fingerprint) are an AnalysisInputError: judged against itself every gap
    is 0 by construction."""
    if sig.model == ref.model or (sig.fingerprint and sig.fingerprint == ref.fingerprint):
        raise AnalysisInputError(f"{sig.model!r} would be judged against itself (the retrain control is "
                                 f"{ref.model!r}, fingerprint {ref.fingerprint}): every gap would be 0 by "
                                 "construction")
    alphas = list(sig.per_alpha)
    rate = {a: sig.rate(sig.per_alpha[a]) for a in alphas}
    inj = {a: ref.rate(ref.per_alpha[a]) if a in ref.per_alpha else None for a in alphas}
    net = {a: None if rate[a] is None else rate[a] - (inj[a] or 0.0) for a in alphas}
    gap, gap_layer = probe_gap(sig.probe.acc_by_layer, ref.probe.acc_by_layer)
    net_max = _max(list(net.values()))
    v = verdict_of(gap, net_max, sig.feature_retention, ref.feature_retention)
    best = sig.probe.best_layer()
    probe_acc = None if best is None else sig.probe.acc_by_layer[best]
    evidence = [
        f"forget accuracy: original {sig.acc_original:.2f}, this model {sig.acc_unlearned:.2f}",
        f"probe on its own activations decodes {probe_acc if probe_acc is None else f'{probe_acc:.2f}'} of forget "
        f"answers (best layer {best}); gap over the retrain control {gap if gap is None else f'{gap:+.2f}'}"
        f" (layer {gap_layer}); suppressed at >= {PROBE_MARGIN}",
        f"restoration rate (max over alpha) {_fmt(_max(list(rate.values())))}, injection into the retrain control "
        f"{_fmt(_max(list(inj.values())))}, net {_fmt(net_max)}; suppressed at >= {RESTORE_NET}",
        f"expert-feature retention {sig.feature_retention:.2f} (retrain control {ref.feature_retention:.2f}; "
        f"{RETENTION_SCALE})",
    ]
    if sig.acc_original - sig.acc_unlearned < MIN_FORGET_DROP:
        evidence.append("this model did not forget (forget accuracy barely dropped): restoration is undefined")
    where = f"layer {options['layer']}" if "layer" in options else "its hook"
    if sig.fit is not None:
        evidence.append(f"SAE fit on this model's own activations: explained variance {_fmt(sig.fit.fve)}, "
                        f"normalised MSE {_fmt(sig.fit.nmse, '.3f')} over {sig.fit.n_tokens} prompt tokens "
                        f"(original {_fmt(None if original_fit is None else original_fit.fve)}, retrain control "
                        f"{_fmt(None if ref.fit is None else ref.fit.fve)})")
    caveat = fit_caveat(sig.fit, original_fit, where)
    caveats = [] if caveat is None else [caveat]
    per_sample = []
    ref_layer = gap_layer if gap_layer is not None else best
    for sid in sig.correct_unlearned:
        probe_hit = ref_layer is not None and sig.probe.correct.get(ref_layer, {}).get(sid, False) and \
            not ref.probe.correct.get(ref_layer, {}).get(sid, False)
        restored = any(sig.restored[a][sid] and not sig.correct_unlearned[sid] and
                       not (ref.restored.get(a, {}).get(sid, False) and not ref.correct_unlearned.get(sid, False))
                       for a in alphas)
        ret, ref_ret = sig.retention_by_sample.get(sid, 0.0), ref.retention_by_sample.get(sid, 0.0)
        if probe_hit or restored:
            sv = "suppressed"
        elif ret <= ref_ret + ERASE_RETENTION_GAP:
            sv = "erased"
        else:
            sv = "inconclusive"
        per_sample.append({"id": sid, "verdict": sv, "probe_decodes": bool(probe_hit), "restored": bool(restored),
                           "answers_now": bool(sig.correct_unlearned[sid]), "feature_retention": ret,
                           "retrain_feature_retention": ref_ret})
    return RestorationReport(
        model=sig.model, verdict=v, restoration_rate=_max(list(rate.values())), restoration_rate_net=net_max,
        feature_retention=sig.feature_retention, probe_accuracy=probe_acc,
        per_alpha={_k(a): x for a, x in sig.per_alpha.items()},
        per_alpha_add={_k(a): x for a, x in sig.per_alpha_add.items()},
        rate_by_alpha={_k(a): x for a, x in rate.items()}, injection_by_alpha={_k(a): x for a, x in inj.items()},
        acc_original=sig.acc_original, acc_unlearned=sig.acc_unlearned,
        retrain={"model": ref.model, "feature_retention": ref.feature_retention,
                 "probe_by_layer": {str(k): x for k, x in ref.probe.acc_by_layer.items()},
                 "per_alpha": {_k(a): x for a, x in ref.per_alpha.items()}, "acc_unlearned": ref.acc_unlearned,
                 "sae_fit": None if ref.fit is None else ref.fit.to_dict()},
        probe_by_layer={str(k): x for k, x in sig.probe.acc_by_layer.items()},
        probe_train_by_layer={str(k): x for k, x in sig.probe.train_acc_by_layer.items()},
        per_sample=per_sample, evidence=evidence, fingerprints={"model": sig.fingerprint, "retrain": ref.fingerprint},
        options=options, probe_gap=gap, probe_gap_layer=gap_layer,
        reasons=verdict_reasons(gap, net_max, sig.feature_retention, ref.feature_retention) + caveats,
        sae_fit=None if sig.fit is None else sig.fit.to_dict(),
        sae_fit_original=None if original_fit is None else original_fit.to_dict(), caveats=caveats)


def _k(a: float) -> str:
    return f"{a:g}"


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "undefined" if x is None else format(x, spec)
