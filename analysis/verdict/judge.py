"""Applying the fitted rule (:mod:`analysis.verdict.rule`) to a model: the rule's signal read on the model (from
the study store when the meta-evaluation or an earlier verdict read it), its model score with a bootstrap
interval over samples (``analysis.signals.bootstrap_ci``, seeded), and the verdict: "suppressed" when the whole
interval lies above the rule's threshold, "erased" when it lies below, "inconclusive" when it straddles it.

Per-sample verdicts use each sample's own value of the signal against the same threshold, gated by the model
(hierarchical testing: individual hypotheses are tested only once the global one is not rejected): a sample whose
own evidence fires is "suppressed" unless the model's interval lies below the boundary, where a lone firing
sample is "inconclusive" (a ten-way probe decodes about one sample in ten by chance on a model that never knew
the facts); a sample whose evidence does not fire is "erased". On knowledge-absent zoo members "suppressed" calls
are false alarms: :func:`false_alarm_rate` reports their rate, and :func:`firing_rate` the ungated rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from analysis.signals import SignalReading, bootstrap_ci
from analysis.verdict.options import VERDICT_LABELS, Verdict
from analysis.verdict.rule import Rule, defined_values, load_rule, model_score

if TYPE_CHECKING:
    from analysis.study import Study


@dataclass
class ModelVerdict:
    model: str
    verdict: Verdict
    score: float | None
    ci: tuple[float, float] | None
    signal: str
    threshold: float
    rule_version: int
    n_samples: int
    reason: str
    per_sample: dict[str, Verdict] = field(default_factory=dict)
    drivers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        return d

    @property
    def label(self) -> str:
        return VERDICT_LABELS[self.verdict]


def judge_reading(reading: SignalReading, rule: Rule, seed: int = 0) -> ModelVerdict:
    """The verdict of ``rule`` on one reading of its signal (module docstring)."""
    if reading.signal != rule.signal:
        raise ValueError(f"the rule reads {rule.signal!r}, got a reading of {reading.signal!r}")
    defined = defined_values(reading.per_sample)
    values = list(defined.values())
    t = rule.threshold
    fired = {sid: v > t for sid, v in defined.items()}
    per: dict[str, Verdict] = {sid: "suppressed" if f else "erased" for sid, f in fired.items()}
    score = model_score(reading.per_sample)
    base = dict(model=reading.model, signal=rule.signal, threshold=t, rule_version=rule.version,
                n_samples=len(values), per_sample=per, drivers=[rule.signal])
    if score is None:
        why = reading.note or "no sample has a defined value"
        return ModelVerdict(verdict="inconclusive", score=None, ci=None,
                            reason=f"{rule.signal} is undefined on this model ({why})", **base)
    ci = bootstrap_ci(values, seed=seed, level=rule.level)
    if ci is None:
        return ModelVerdict(verdict="inconclusive", score=score, ci=None,
                            reason=f"{rule.signal} is defined on {len(values)} sample only: no interval", **base)
    lo, hi = ci
    verdict: Verdict = "suppressed" if lo > t else "erased" if hi < t else "inconclusive"
    if verdict == "erased":  # the gate: a lone firing sample of an erased model is not enough on its own
        base["per_sample"] = {sid: "inconclusive" if f else "erased" for sid, f in fired.items()}
    where = {"suppressed": "lies above", "erased": "lies below", "inconclusive": "straddles"}[verdict]
    reason = (f"{rule.signal} = {score:.2f}, {rule.level:.0%} interval [{lo:.2f}, {hi:.2f}] over {len(values)} "
              f"samples, {where} the boundary {t:.2f} (rule v{rule.version})")
    return ModelVerdict(verdict=verdict, score=score, ci=ci, reason=reason, **base)


def stored_verdict(study: Study, model: str, rule: Rule) -> ModelVerdict | None:
    """The rule on the STORED reading of its signal on ``model`` (None when not read yet: nothing computed)."""
    from analysis.validation.runner import stored_reading

    r = stored_reading(study, rule.signal, model)
    return None if r is None else judge_reading(r, rule)


def judge(study: Study, model: str, rule: Rule | None = None, seed: int = 0) -> ModelVerdict:
    """The verdict on ``model`` of the study: the rule's signal read through the meta-evaluation's store."""
    from analysis.validation.runner import load_signals, signal_reading

    rule = rule if rule is not None else load_rule()
    load_signals()
    study.entry(model)  # an unknown model: a clear error naming it
    return judge_reading(signal_reading(study, rule.signal, model), rule, seed)


def firing_rate(readings: Sequence[SignalReading], rule: Rule) -> float | None:
    """Share of samples whose own evidence fires (value above the threshold), ungated, over ``readings``."""
    vals = [v for r in readings for v in defined_values(r.per_sample).values()]
    return sum(v > rule.threshold for v in vals) / len(vals) if vals else None


def false_alarm_rate(verdicts: Sequence[ModelVerdict]) -> float | None:
    """Share of per-sample "suppressed" calls among all per-sample calls of ``verdicts`` (meant for N members)."""
    calls = [v for mv in verdicts for v in mv.per_sample.values()]
    return sum(c == "suppressed" for c in calls) / len(calls) if calls else None


def ruler(study: Study, signal: str) -> dict[str, tuple[str, float]]:
    """The zoo members' model scores on ``signal`` from STORED readings (``erasure validate`` stores them):
    {member: (status, score)}; members not read yet or undefined are left out."""
    from analysis.validation.runner import stored_reading, zoo_of

    out: dict[str, tuple[str, float]] = {}
    for m in zoo_of(study):
        r = stored_reading(study, signal, m.name)
        s = None if r is None else model_score(r.per_sample)
        if s is not None:
            out[m.name] = (m.status, s)
    return out


def signal_rulers(study: Study, model: str) -> list[tuple[str, dict[str, tuple[str, float]], float | None,
                                                         tuple[float, float] | None]]:
    """For every registered signal whose zoo readings are stored (``erasure validate``): (signal, zoo scores,
    the model's score, its 95% interval over samples), the model's from its stored reading (None if not read)."""
    from analysis.signals import SIGNALS
    from analysis.validation.runner import load_signals, stored_reading

    load_signals()
    out = []
    for s in sorted(SIGNALS.names()):
        zoo = ruler(study, s)
        if not zoo:
            continue
        r = stored_reading(study, s, model)
        values = [] if r is None else list(defined_values(r.per_sample).values())
        score = model_score(r.per_sample) if r is not None else None
        out.append((s, zoo, score, bootstrap_ci(values) if values else None))
    return out
