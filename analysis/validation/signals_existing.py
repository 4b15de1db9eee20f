"""The signals the workbench had before the zoo, as meta-evaluation signals (``analysis.signals.SIGNALS``): each
adapter reads its analysis's result through that analysis's runner (stored results are read, never recomputed)
and returns a :class:`~analysis.signals.SignalReading` oriented HIGHER = MORE KNOWLEDGE PRESENT.

===========================  ==========================================================================
signal                       per-model value (per sample)
===========================  ==========================================================================
output_forget_acc            forget accuracy, top-1 (per sample: answered correctly, 1 / 0)
sae_probe_gap                RestorationReport.probe_gap: best-layer probe accuracy over the retrain
                             control's (per sample: decoded at that layer here and not on the control)
sae_net_restoration          RestorationReport.restoration_rate_net (per sample, where the model does
                             not answer: brought back by steering, net of the control, 1 / 0)
sae_feature_retention        RestorationReport.feature_retention (per sample: its expert-feature ratio)
emphasis_recovery            RecoveryReport.best_net (per sample, where the original answers and the
                             model does not: recovered by some strategy, net of the control, 1 / 0)
causal_trace                 the mean over samples of the subject's normalised mid-layer indirect effect on
                             the model: the share of the model's OWN clean-minus-corrupted gap of the
                             original's answer (logit difference) that restoring the subject's mid-layer
                             states brings back (per sample: that share; None where the model's own gap is
                             below TRACE_GAP_FLOOR or the original does not answer the sample)
===========================  ==========================================================================

The interval ``ci`` is the bootstrap interval over samples only where the per-model value is the mean of the
per-sample values (output_forget_acc, causal_trace); the others report their analysis's own number, which is
not a mean over samples (a maximum over layers, alphas or strategies, a ratio of sums), so their ``ci`` is None
and ``details["per_sample_reading"]`` says what the per-sample values are.

The SAE is the one the SAE page and the diagnosis use (``analysis.diagnosis.signals.cached_sae`` at the default
layer and k), trained once with the default options when the study has none. The three SAE signals share one
``restore_all`` call over every model that needs it (``prepare``), so the retrain control's signals are
computed once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from analysis.signals import SIGNALS, SignalReading, reading_from_samples

if TYPE_CHECKING:
    from analysis.sae.result import RestorationReport
    from analysis.sae.train import TrainedSAE
    from analysis.study import Study


def _reading(signal: str, model: str, value: float | None, per_sample: dict[str, float | None], meaning: str,
             details: dict[str, Any] | None = None, note: str = "") -> SignalReading:
    return SignalReading(signal, model, None if value is None else float(value), None, per_sample,
                         note or ("" if value is not None else "undefined for this model"),
                         {"per_sample_reading": meaning, **(details or {})})


def _bit(x: bool | None) -> float | None:
    return None if x is None else float(bool(x))


# ---- outputs -----------------------------------------------------------------------------------------------
def output_forget_acc(study: Study, model: str) -> SignalReading:
    """Top-1 forget accuracy, per sample 1 / 0, from the stored evaluation scores (``model_scores``)."""
    from analysis.evaluation import model_scores

    per = model_scores(study, model)["per_sample"]
    correct = dict(zip(per["ids"], per["correct"], strict=True))
    return reading_from_samples("output_forget_acc", model, {s.id: _bit(correct.get(s.id)) for s in study.forget},
                                details={"per_sample_reading": "answered correctly (top-1)"})


# ---- SAE ---------------------------------------------------------------------------------------------------
def study_sae(study: Study) -> TrainedSAE:
    """The study's SAE at the default layer and k (the one the SAE page and the diagnosis use), trained once
    with the default options when none is cached."""
    from analysis.diagnosis.signals import cached_sae
    from analysis.sae.options import SAEOptions
    from analysis.sae.train import train_sae

    opts = SAEOptions()
    return cached_sae(study, opts) or train_sae(study, opts)


def prepare_sae(study: Study, models: Sequence[str]) -> None:
    """Every restoration report ``models`` need, in one ``restore_all`` (the retrain control's signals once).
    The reference retrain control is left out: it is never judged against itself (its SAE readings are
    undefined, saying why)."""
    from analysis.sae.runner import restore_all

    names = [m for m in dict.fromkeys(models) if m not in ("original", study.manifest.retrain)]
    if names and study.manifest.retrain:
        restore_all(study, names, trained=study_sae(study))


def _sae_report(study: Study, model: str) -> RestorationReport:
    from analysis.sae.runner import restore

    return restore(study, model, trained=study_sae(study))


def _sae_details(rep: RestorationReport) -> dict[str, Any]:
    return {"verdict": rep.verdict, "probe_gap_layer": rep.probe_gap_layer, "sae_layer": rep.options.get("layer"),
            "sae": rep.options.get("sae")}


def sae_probe_gap(study: Study, model: str) -> SignalReading:
    rep = _sae_report(study, model)
    per = {r["id"]: _bit(r["probe_decodes"]) for r in rep.per_sample}
    return _reading("sae_probe_gap", model, rep.probe_gap, per,
                    "decoded by the probe at the gap layer here and not on the retrain control (1 / 0)",
                    _sae_details(rep), "" if rep.probe_gap is not None else "nothing decodable by the probe")


def sae_net_restoration(study: Study, model: str) -> SignalReading:
    rep = _sae_report(study, model)
    per = {r["id"]: None if r["answers_now"] else _bit(r["restored"]) for r in rep.per_sample}
    return _reading("sae_net_restoration", model, rep.restoration_rate_net, per,
                    "brought back by steering and not injected into the retrain control (1 / 0), where the model "
                    "does not answer", _sae_details(rep),
                    "" if rep.restoration_rate_net is not None else "the model did not forget: restoration undefined")


def sae_feature_retention(study: Study, model: str) -> SignalReading:
    rep = _sae_report(study, model)
    per = {r["id"]: float(r["feature_retention"]) for r in rep.per_sample}
    return _reading("sae_feature_retention", model, rep.feature_retention, per,
                    "the sample's expert-feature activation relative to the original's", _sae_details(rep))


# ---- keyword-emphasis recovery ------------------------------------------------------------------------------
def emphasis_recovery(study: Study, model: str) -> SignalReading:
    from analysis.attribution.options import RecoveryOptions
    from analysis.attribution.recovery import recover

    rep = recover(study, model, RecoveryOptions())
    per = {sid: _bit(row.get("recovered")) for sid, row in rep.per_sample.items()}
    return _reading("emphasis_recovery", model, rep.best_net, per,
                    "recovered by some emphasis strategy and not by the retrain control (1 / 0), where the original "
                    "answers and the model does not",
                    {"best_strategy": rep.best_strategy, "net_by_strategy": rep.net_by_strategy},
                    "" if rep.best_net is not None else "nothing to recover: the model answers every eligible sample")


# ---- causal trace ------------------------------------------------------------------------------------------
def causal_trace(study: Study, model: str) -> SignalReading:
    """The diagnosis's trace (``analysis.diagnosis.signals.trace`` with its default trace options): per sample the
    subject's normalised mid-layer indirect effect on ``model``, the share of ``model``'s own clean-minus-corrupted
    gap that restoring the subject's mid-layer states brings back (the original's answer traced on every model);
    the value is their mean with its bootstrap interval. A model that no longer gives the answer still has a gap in
    logit difference, so the share does not collapse to 0 with the outputs (the old reading, the raw effect as a
    fraction of the original's, did: it repeated the output metric)."""
    from analysis.diagnosis.options import default_trace_options
    from analysis.diagnosis.signals import trace

    got = trace(study, model, default_trace_options(), None)
    n = got.signal.numbers
    if not got.per_sample:
        return SignalReading("causal_trace", model, None, note=got.signal.summary,
                             details={"per_sample_reading": TRACE_MEANING})
    per = {sid: row.get("trace_after") for sid, row in got.per_sample.items()}
    details = {"per_sample_reading": TRACE_MEANING,
               **{k: n.get(k) for k in ("role", "layers", "metric", "gap_floor", "share_original", "kept")},
               "per_sample_notes": n.get("sample_notes", {})}
    return reading_from_samples("causal_trace", model, per, details=details)


TRACE_MEANING = ("the share of this model's own clean-minus-corrupted gap (of the original's answer) that restoring "
                 "the subject's mid-layer states brings back")


SignalFn = Callable[["Study", str], SignalReading]
ADAPTERS: dict[str, tuple[SignalFn, str]] = {
    "output_forget_acc": (output_forget_acc, "output forget accuracy (top-1)"),
    "sae_probe_gap": (sae_probe_gap, "SAE probe gap over the retrain control"),
    "sae_net_restoration": (sae_net_restoration, "SAE restoration rate, net of the retrain control"),
    "sae_feature_retention": (sae_feature_retention, "SAE expert-feature retention"),
    "emphasis_recovery": (emphasis_recovery, "keyword-emphasis recovery, net of the retrain control"),
    "causal_trace": (causal_trace, "subject's mid-layer share of the model's own causal effect"),
}
for _fn in (sae_probe_gap, sae_net_restoration, sae_feature_retention):
    _fn.prepare = prepare_sae  # type: ignore[attr-defined]  # the runner batches these before the per-model calls
for _name, (_fn, _label) in ADAPTERS.items():
    if _name not in SIGNALS:
        SIGNALS.add(_name, _fn, label=_label)
