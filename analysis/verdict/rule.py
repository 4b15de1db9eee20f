"""The verdict rule: which signal decides, and where its boundary lies, fitted on development zoos.

A rule is one signal of :data:`analysis.signals.SIGNALS` and a threshold on its *model score*, the mean of the
signal's defined per-sample values (so that the same bootstrap over samples gives every verdict its interval,
:mod:`analysis.verdict.judge`). :func:`fit_rule` chooses it from development studies (demo seeds whose zoo
members are known P or N): among the signals with per-sample values on every member, the one whose worst
per-study AUROC of P over N is highest, ties broken by the pooled margin between the lowest P and the highest N
score in units of the pooled standard deviation; the threshold is the midpoint of that gap when P and N are
separated, else the cut with the best balanced accuracy. Why one signal and a threshold rather than a logistic
combination: a development zoo holds about a dozen members per seed, and a signal that separates them perfectly
leaves a logistic fit without a finite optimum, so a combination would be fitted to noise; the fit records every
candidate's numbers, so the choice can be checked.

The rule is written to ``RULE_FILE`` with an integer ``version`` (bumped on every refit) that keys every stored
verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisInputError
from analysis.validation.auroc import auroc
from analysis.verdict.options import RULE_FILE, RULE_FORMAT

PerSample = Mapping[str, float | None]


def defined_values(per_sample: PerSample) -> dict[str, float]:
    """The per-sample values that are defined (not None, finite), by sample id."""
    return {sid: float(v) for sid, v in per_sample.items() if v is not None and math.isfinite(float(v))}


def model_score(per_sample: PerSample) -> float | None:
    """The mean of the defined per-sample values (None when none is defined)."""
    xs = list(defined_values(per_sample).values())
    return sum(xs) / len(xs) if xs else None


@dataclass(frozen=True)
class DevStudy:
    """One development study: its name and seed, and for each zoo member its status and, per signal, its
    per-sample values."""

    name: str
    seed: int | None
    status: dict[str, str]  # member -> "present" | "absent"
    per_sample: dict[str, dict[str, PerSample]]  # signal -> member -> per-sample values


@dataclass(frozen=True)
class Rule:
    version: int
    signal: str
    threshold: float
    fitted_on: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    level: float = 0.95
    statistic: str = "mean of the signal's defined per-sample values; higher = more knowledge present"

    def to_dict(self) -> dict[str, Any]:
        return {"format": RULE_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "the rule") -> Rule:
        if d.get("format") != RULE_FORMAT:
            raise AnalysisInputError(f"{where} is not a verdict rule (format {d.get('format')!r}, expected "
                                     f"{RULE_FORMAT!r})")
        try:
            version, signal, threshold = int(d["version"]), str(d["signal"]), float(d["threshold"])
        except (KeyError, TypeError, ValueError) as e:
            raise AnalysisInputError(f"{where}: missing or malformed field ({e})") from None
        if not math.isfinite(threshold):
            raise AnalysisInputError(f"{where}: threshold must be a finite number, got {threshold}")
        return cls(version=version, signal=signal, threshold=threshold, fitted_on=list(d.get("fitted_on") or []),
                   candidates=list(d.get("candidates") or []), level=float(d.get("level", 0.95)),
                   statistic=str(d.get("statistic", cls.statistic)))


def load_rule(path: str | Path = RULE_FILE) -> Rule:
    """The rule in ``path`` (default: the shipped ``rule.json``); a clear error when missing or damaged."""
    p = Path(path)
    if not p.is_file():
        raise AnalysisInputError(f"no verdict rule at {p}: fit one with `python -m benchmarks.verdict_fit`")
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AnalysisInputError(f"the verdict rule {p} cannot be read: {e}") from None
    if not isinstance(d, dict):
        raise AnalysisInputError(f"the verdict rule {p} is not a JSON object")
    return Rule.from_dict(d, str(p))


def write_rule(rule: Rule, path: str | Path = RULE_FILE) -> Path:
    p = Path(path)
    p.write_text(json.dumps(rule.to_dict(), indent=2, sort_keys=True) + "\n")
    return p


def _scores(dev: DevStudy, signal: str) -> tuple[list[float], list[float]]:
    by_member = dev.per_sample.get(signal, {})
    p, n = [], []
    for member, status in dev.status.items():
        s = model_score(by_member.get(member, {}))
        if s is None:
            continue
        (p if status == "present" else n if status == "absent" else []).append(s)
    return p, n


def threshold_between(present: Sequence[float], absent: Sequence[float]) -> float:
    """The midpoint of the gap between the lowest P and the highest N score when they are separated; else the
    midpoint cut (between two sorted scores) with the best balanced accuracy (the lowest such cut on ties)."""
    if not present or not absent:
        raise AnalysisInputError("fitting a threshold needs at least one P and one N score")
    if min(present) > max(absent):
        return (min(present) + max(absent)) / 2
    values = sorted(set(present) | set(absent))
    cuts = [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)] or [values[0]]

    def balanced(t: float) -> float:
        return (sum(x > t for x in present) / len(present) + sum(x < t for x in absent) / len(absent)) / 2

    return max(cuts, key=lambda t: (balanced(t), -t))


def candidate_summary(devs: Sequence[DevStudy], signal: str) -> dict[str, Any] | None:
    """A signal's numbers over the development studies (None when some study has no P or no N score for it)."""
    per_study, all_p, all_n = [], [], []
    for d in devs:
        p, n = _scores(d, signal)
        if not p or not n:
            return None
        per_study.append({"study": d.name, "seed": d.seed, "auroc": auroc(p, n), "n_present": len(p),
                          "n_absent": len(n)})
        all_p += p
        all_n += n
    mean = sum(all_p + all_n) / len(all_p + all_n)
    sd = math.sqrt(sum((x - mean) ** 2 for x in all_p + all_n) / max(1, len(all_p + all_n) - 1)) or 1.0
    return {"signal": signal, "min_auroc": min(r["auroc"] for r in per_study), "per_study": per_study,
            "margin": (min(all_p) - max(all_n)) / sd, "threshold": threshold_between(all_p, all_n),
            "lowest_present": min(all_p), "highest_absent": max(all_n)}


def fit_rule(devs: Sequence[DevStudy], signals: Sequence[str], version: int) -> Rule:
    """The rule chosen on ``devs`` among ``signals`` (module docstring)."""
    if not devs:
        raise AnalysisInputError("fitting the verdict needs at least one development study")
    cands = [c for s in signals if (c := candidate_summary(devs, s)) is not None]
    if not cands:
        raise AnalysisInputError("no signal has P and N scores on every development study")
    cands.sort(key=lambda c: (-c["min_auroc"], -c["margin"], c["signal"]))
    best = cands[0]
    fitted_on = [{"study": d.name, "seed": d.seed, "n_present": sum(s == "present" for s in d.status.values()),
                  "n_absent": sum(s == "absent" for s in d.status.values())} for d in devs]
    return Rule(version=version, signal=best["signal"], threshold=float(best["threshold"]), fitted_on=fitted_on,
                candidates=cands)
