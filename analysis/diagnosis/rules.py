"""How a diagnosis reads each signal and combines the readings. Nothing here measures anything: each rule
maps numbers the underlying analyses already report onto one reading, "gone" or "present" (or
"inconclusive" between the thresholds, "unavailable" when the signal could not be computed).

Readings:
- outputs (analysis.evaluation): the share of the retrain control's drop in forget accuracy that this model
  achieves, ``(acc_original - acc_model) / (acc_original - acc_retrain)`` (the retrain control's accuracy
  taken as 0 without one). gone at >= OUTPUT_GONE, present at <= OUTPUT_PRESENT.
- sae (analysis.sae.verdict): its own verdict; suppressed -> present, erased -> gone.
- emphasis (analysis.attribution, unPact): the net recovery rate of each strategy, the model's rate minus the
  retrain control's (what emphasis invents on a model that never learned the facts); present if the best
  strategy's net rate is >= RECOVERY_PRESENT, gone if every strategy's is <= RECOVERY_GONE.
- trace (analysis.tracing): on each model the original's answer (the sample's answer, on samples the
  original answers top-1) is traced, and each sample's indirect effect of restoring the subject's states at
  the middle layers (``mid_layers``, averaged over the traced kinds and the subject group's positions) is
  divided by THAT model's own total effect, clean minus corrupted: the normalised indirect effect, the share
  of the model's own clean-vs-corrupted difference that the subject's mid-layer states carry. The share is
  undefined for a sample whose own gap is below ``TRACE_GAP_FLOOR[metric]`` (nothing to normalise). The
  default metric is ``logit_diff_corrupted`` (``analysis.diagnosis.options.default_trace_options``): a logit
  difference does not vanish when the model no longer gives the answer, as a probability does, so the share is
  defined on a model that suppresses the answer. ``kept`` = this model's mean share / the original's, with
  ``kept_ci`` the bootstrap interval of this model's mean over samples divided by the original's share;
  present when the whole interval is >= TRACE_PRESENT, gone when it is <= TRACE_GONE (fractions of the
  original's share, as before), inconclusive otherwise; unavailable if the original's share is below
  TRACE_MIN_SHARE. (The interval matters: per-sample shares scatter widely; on the small demo study the
  intervals of the retrain controls span both thresholds.) The subject token group (``SUBJECT_ROLES``) is the
  one where the original's mean share is largest: the last subject token in ROME's GPT models, the first in
  the built-in organism, whose two-token names share surnames so that the first name identifies the person.
  The share measures where the subject's effect on the answer flows, not whether a fact is stored: a model that
  never learned the fact still has some subject effect on the answer's score (another person, another generic
  guess), and on the small demo study some retrains' shares are close to the original's (0.8-0.9x), so a
  "present" reading alone is not evidence of suppression.
- cud (analysis.circuits): context, never a reading: it predicts which samples resist, before unlearning.

Summary verdict (``summary_verdict``), in order:
1. outputs present -> "not unlearned" (the model still gives most forget answers);
2. outputs not present and any of sae / emphasis / trace present -> "suppressed" (the answers changed, the
   knowledge is still inside or still reachable);
3. outputs gone and sae gone -> "erased" (the SAE verdict is the only signal judged against the retrain
   control on every axis, so erasure needs it);
4. otherwise "inconclusive".

Caveats (``caveats``): retain accuracy down by >= RETAIN_CAVEAT from the original's means the model lost more
than the forget set, so readings of "gone" may be damage rather than targeted unlearning.

Agreement (``agreement``): the signals reading gone agree with each other, so do those reading present;
every (present, gone) pair is a disagreement, stated with what each signal measures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from analysis.diagnosis.result import Signal

OUTPUT_GONE = 0.75
OUTPUT_PRESENT = 0.25
MIN_OUTPUT_GAP = 0.05  # the original must beat the retrain control by this much on forget accuracy
RECOVERY_PRESENT = 0.2
RECOVERY_GONE = 0.05
TRACE_PRESENT = 0.5
TRACE_GONE = 0.2
TRACE_MIN_SHARE = 0.01  # the original's mean normalised share must reach this for a fraction of it to mean much
# Per trace metric: below this |clean - corrupted| on a model, a sample's normalised share is undefined (the
# corruption hardly moves the traced quantity, so the ratio is noise over noise): a thousandth in probability;
# one logit (a factor e in the odds of the answer against the corrupted run's top other token).
TRACE_GAP_FLOOR: dict[str, float] = {"prob": 1e-3, "logit_diff_corrupted": 1.0}
SUBJECT_ROLES: tuple[str, ...] = ("first subject token", "middle subject tokens", "last subject token")
RETAIN_CAVEAT = 0.2
INTERNAL: tuple[str, ...] = ("sae", "emphasis", "trace")
SAE_READING = {"suppressed": "present", "erased": "gone", "inconclusive": "inconclusive"}


def mid_layers(n_layers: int) -> list[int]:
    """The middle half of the layers, ``[n // 4, 3n // 4)`` (at least one layer): layers 1-2 of 4, 3-8 of 12."""
    lo = n_layers // 4
    return list(range(lo, max(lo + 1, (3 * n_layers) // 4)))


def between(x: float | None, gone_at: float, present_at: float, low_is_gone: bool = True) -> str:
    """The reading of one number with a threshold for each side."""
    if x is None:
        return "unavailable"
    if low_is_gone:
        return "gone" if x <= gone_at else "present" if x >= present_at else "inconclusive"
    return "gone" if x >= gone_at else "present" if x <= present_at else "inconclusive"


def forgotten_share(acc_original: float, acc_model: float, acc_retrain: float | None) -> float | None:
    """The share of the retrain control's drop in forget accuracy achieved by the model (None when the
    original does not beat the control, so there is nothing to forget)."""
    floor = 0.0 if acc_retrain is None else acc_retrain
    gap = acc_original - floor
    return None if gap < MIN_OUTPUT_GAP else (acc_original - acc_model) / gap


def output_reading(share: float | None) -> str:
    return between(share, OUTPUT_GONE, OUTPUT_PRESENT, low_is_gone=False)


def recovery_reading(net_rates: Sequence[float | None]) -> str:
    defined = [x for x in net_rates if x is not None]
    if not defined:
        return "unavailable"
    best = max(defined)
    return "present" if best >= RECOVERY_PRESENT else "gone" if best <= RECOVERY_GONE else "inconclusive"


def trace_reading(kept: float | None, kept_ci: tuple[float, float] | None = None) -> str:
    """``kept`` read against the thresholds; with ``kept_ci`` (the bootstrap interval of this model's mean share
    over samples, as a fraction of the original's), "present" only when the whole interval is at or above
    TRACE_PRESENT, "gone" only when it is at or below TRACE_GONE, else "inconclusive"."""
    if kept is None or kept_ci is None:
        return between(kept, TRACE_GONE, TRACE_PRESENT)
    lo, hi = kept_ci
    return "gone" if hi <= TRACE_GONE else "present" if lo >= TRACE_PRESENT else "inconclusive"


def summary_verdict(signals: Mapping[str, Signal]) -> tuple[str, str]:
    """(verdict, one-line reason) by the rule of the module docstring."""
    reading = {k: s.reading for k, s in signals.items()}
    out = reading.get("outputs", "unavailable")
    if out == "present":
        return "not unlearned", "the model still gives most of the forget answers"
    present = [signals[k].title for k in INTERNAL if reading.get(k) == "present"]
    if present and out != "unavailable":
        return "suppressed", (f"the forget answers {'are gone from' if out == 'gone' else 'partly left'} the outputs, "
                              f"but {_join(present)} still find{'s' if len(present) == 1 else ''} the knowledge")
    if out == "gone" and reading.get("sae") == "gone":
        return "erased", ("the forget answers are gone and no signal finds the knowledge inside beyond the retrain "
                          "control")
    missing = [s.title for k, s in signals.items() if s.reading in ("inconclusive", "unavailable") and k != "cud"]
    if out == "unavailable":
        return "inconclusive", "the original does not answer the forget set better than the retrain control"
    return "inconclusive", (f"no signal finds the knowledge, but {_join(missing) or 'the SAE'} "
                            f"{'gives' if len(missing) <= 1 else 'give'} no clear reading")


def caveats(signals: Mapping[str, Signal]) -> list[str]:
    out = signals.get("outputs")
    n = out.numbers if out is not None else {}
    before, after = n.get("retain_acc_original"), n.get("retain_acc")
    if before is not None and after is not None and before - after >= RETAIN_CAVEAT:
        return [f"retain accuracy fell from {before:.2f} to {after:.2f}: the model lost more than the forget set, so "
                "a reading of 'gone' may be damage rather than targeted unlearning"]
    return []


# What each signal says for each reading, as a clause of the agreement section ({...} from Signal.numbers).
SAYS: dict[str, dict[str, str]] = {
    "outputs": {"gone": "the forget answers are gone from the outputs ({share_pct} of the retrain control's drop)",
                "present": "the model still gives the forget answers (forget accuracy {acc_model:.2f})"},
    "sae": {"gone": "the SAE says erased (no feature retention, restoration or probe readout beyond the retrain "
                    "control)",
            "present": "the SAE says suppressed ({sae_why})"},
    "emphasis": {"gone": "keyword-emphasis recovery is {best_net_pct} net of the retrain control",
                 "present": "keyword emphasis brings {best_net_pct} of the forgotten answers back, net of the retrain "
                            "control"},
    "trace": {"gone": "the causal trace finds the subject's mid-layer share of this model's own effect gone "
                      "({kept_pct} of the original's share)",
              "present": "the causal trace finds the subject's mid-layer share of this model's own effect still "
                         "there ({kept_pct} of the original's share)"},
}
# Why two signals can disagree, keyed (signal reading present, signal reading gone).
WHY: dict[tuple[str, str], str] = {
    ("sae", "outputs"): "that is what suppression means: the outputs changed, the representation did not",
    ("sae", "emphasis"): "emphasis acts on the prompt and attention, before the readout: an answer blocked at or "
                         "after the layer the probe reads (e.g. at the unembedding) stays blocked however the "
                         "keywords are stressed",
    ("sae", "trace"): "the trace reads the answer through this model's own readout, so a changed readout "
                      "re-weights which directions of the final state count and can lower the subject's share "
                      "while the representation the SAE and probe read is intact",
    ("emphasis", "outputs"): "the plain prompt no longer reaches the answer, a re-emphasised one does: suppression",
    ("emphasis", "sae"): "the knowledge may be stored outside the SAE's layer or expert features; check the "
                         "per-sample table for how many samples come back",
    ("emphasis", "trace"): "the trace follows the plain prompt; emphasis changes the prompt or its attention",
    ("trace", "outputs"): "top-1 answers are gone but the subject's mid-layer states still carry as much of "
                          "this model's own clean-vs-corrupted difference in the answer's score as in the "
                          "original: the route from the subject to the answer is still used",
    ("trace", "sae"): "the trace's share is relative to each model's own effect and is not judged against the "
                      "retrain control (a model that never learned the facts has a share too); the SAE verdict "
                      "is",
    ("trace", "emphasis"): "restoring the subject's states brings the answer up, stressing the keywords does not",
    ("outputs", "sae"): "the SAE verdict is about the knowledge inside; with the answers still produced there is "
                        "little to restore or suppress",
    ("outputs", "emphasis"): "with the answers still produced there is nothing left for emphasis to recover",
    ("outputs", "trace"): "the model answers, yet the subject's mid-layer states matter less than in the original: "
                          "it answers through another route",
}


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def says(signal: Signal) -> str:
    template = SAYS.get(signal.name, {}).get(signal.reading)
    if template is None:
        return f"{signal.title} reads {signal.reading} ({signal.summary})"
    try:
        return template.format(**signal.numbers)
    except (KeyError, ValueError, TypeError):
        return f"{signal.title} reads {signal.reading} ({signal.summary})"


def capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def agreement(signals: Mapping[str, Signal]) -> dict[str, list[str]]:
    """Plain sentences: which signals agree, which disagree (and why they can), which give no reading."""
    gone = [s for s in signals.values() if s.reading == "gone"]
    present = [s for s in signals.values() if s.reading == "present"]
    agree: list[str] = []
    if len(gone) > 1:
        agree.append(capital(f"{_join([s.title for s in gone])} agree: the knowledge is gone."))
    if len(present) > 1:
        agree.append(capital(f"{_join([s.title for s in present])} agree: the knowledge is still there."))
    disagree = []
    for p in present:
        for g in gone:
            why = WHY.get((p.name, g.name))
            disagree.append(capital(f"{says(p)}, but {says(g)}") + (f" — {why}." if why else "."))
    silent = [capital(f"{s.title}: {s.reading} — {s.summary}") for s in signals.values()
              if s.reading in ("inconclusive", "unavailable")]
    context = [capital(f"{s.title}: {s.summary}") for s in signals.values() if s.reading == "context"]
    return {"agree": agree, "disagree": disagree, "silent": silent, "context": context}


def pct(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.0%}"


def fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)
