"""The result of a meta-evaluation: one record per signal (its AUROC of P against N with the bootstrap interval,
the member counts, its robustness R / Q / H) and one per member (its status and its score on every signal),
with the placement of the study's unlearning methods among the zoo and a plain-words statement of which
signals separate knowledge-present from knowledge-absent members.

JSON (``ValidationResult.to_dict``)::

    {"study": ..., "signals": [{"signal", "label", "auroc", "ci_low", "ci_high", "n_present", "n_absent",
                                "robustness_r", "robustness_q", "robustness_h", "shift_ft", "shift_q",
                                "separation", "note"}, ...],
     "members": [{"name", "status" ("present" | "absent" | "unknown"), "scores": {signal: score},
                  "ci": {signal: [lo, hi] | null}, "notes": {signal: why undefined}, "recipe": {...},
                  "variants": {kind: variant name}, "variant_scores": {kind: {signal: score}}}, ...],
     "placement": {signal: {method: {"score", "above_absent", "above_present", "reads_as"}}},
     "statement": [lines], "options": {...}, "fingerprints": {model: fingerprint}, "notes": [...]}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from analysis.validation.options import STRONG_AUROC

Status = Literal["present", "absent", "unknown"]
STATUSES: tuple[Status, ...] = ("present", "absent", "unknown")
STATUS_LABELS: dict[str, str] = {"present": "knowledge present (P)", "absent": "knowledge absent (N)",
                                 "unknown": "unlearning method (unknown)"}
Separation = Literal["separates", "reversed", "does not separate", "too few members", "undefined"]
ReadsAs = Literal["present", "absent", "between", "overlap", "undefined"]


def _f(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


@dataclass
class SignalRecord:
    signal: str
    label: str
    auroc: float | None
    ci_low: float | None
    ci_high: float | None
    n_present: int
    n_absent: int
    robustness_r: float | None = None
    robustness_q: float | None = None
    robustness_h: float | None = None
    shift_ft: float | None = None  # mean |score(fine-tuned) - score(member)|
    shift_q: float | None = None  # mean |score(quantised) - score(member)|
    note: str = ""

    @property
    def separation(self) -> Separation:
        """separates: the interval lies above 0.5; reversed: below; with fewer than 2 members a side (no
        interval) "too few members"."""
        if self.auroc is None:
            return "undefined"
        if self.ci_low is None or self.ci_high is None:
            return "too few members"
        if self.ci_low > 0.5:
            return "separates"
        if self.ci_high < 0.5:
            return "reversed"
        return "does not separate"

    def interval(self) -> str:
        if self.auroc is None:
            return "undefined"
        ci = "" if self.ci_low is None or self.ci_high is None else f" [{self.ci_low:.2f}, {self.ci_high:.2f}]"
        return f"{self.auroc:.2f}{ci}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "separation": self.separation}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SignalRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: (_f(v) if k not in ("signal", "label", "note", "n_present", "n_absent") else v)
                      for k, v in d.items() if k in known})


@dataclass
class MemberRecord:
    name: str
    status: Status
    scores: dict[str, float | None]
    ci: dict[str, list[float] | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # signal -> why its score is undefined
    recipe: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)  # kind -> variant model name
    variant_scores: dict[str, dict[str, float | None]] = field(default_factory=dict)  # kind -> signal -> score

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemberRecord:
        return cls(name=str(d["name"]), status=d["status"], scores={k: _f(v) for k, v in d["scores"].items()},
                   ci={k: (None if v is None else [float(x) for x in v]) for k, v in d.get("ci", {}).items()},
                   notes=dict(d.get("notes", {})), recipe=dict(d.get("recipe", {})),
                   variants=dict(d.get("variants", {})),
                   variant_scores={k: {s: _f(x) for s, x in v.items()} for k, v in d.get("variant_scores", {}).items()})


def _share_below(x: float, others: Sequence[float]) -> float | None:
    """Share of ``others`` strictly below ``x`` (ties 1/2)."""
    if not others:
        return None
    return sum(1.0 if o < x else 0.5 if o == x else 0.0 for o in others) / len(others)


def place(score: float | None, present: Sequence[float], absent: Sequence[float]) -> dict[str, Any]:
    """Where a method's score falls among the zoo: the share of N members it scores above (ties 1/2), the share
    of P members it scores above, and in words: "present" (above every N member, within or above P's range),
    "absent" (below every P member, within or below N's range), "between" (in the gap between the two ranges)
    or "overlap" (where P and N overlap)."""
    if score is None or not present or not absent:
        return {"score": score, "above_absent": None, "above_present": None, "reads_as": "undefined"}
    lo_p, hi_n = min(present), max(absent)
    if score > hi_n and score >= lo_p:
        reads: ReadsAs = "present"
    elif score < lo_p and score <= hi_n:
        reads = "absent"
    elif hi_n < score < lo_p:
        reads = "between"
    else:
        reads = "overlap"
    return {"score": score, "above_absent": _share_below(score, absent), "above_present": _share_below(score, present),
            "reads_as": reads}


@dataclass
class ValidationResult:
    study: str
    signals: list[SignalRecord]
    members: list[MemberRecord]
    options: dict[str, Any] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # ---- views ---------------------------------------------------------------------------------------------
    def signal(self, name: str) -> SignalRecord:
        for s in self.signals:
            if s.signal == name:
                return s
        raise KeyError(name)

    def by_status(self, status: Status) -> list[MemberRecord]:
        return [m for m in self.members if m.status == status]

    def scores(self, signal: str, status: Status) -> list[float]:
        return [v for m in self.by_status(status) if (v := m.scores.get(signal)) is not None]

    def placement(self) -> dict[str, dict[str, dict[str, Any]]]:
        """signal -> unlearning method -> where it falls among the zoo (:func:`place`)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for s in self.signals:
            p, n = self.scores(s.signal, "present"), self.scores(s.signal, "absent")
            out[s.signal] = {m.name: place(m.scores.get(s.signal), p, n) for m in self.by_status("unknown")}
        return out

    def best(self) -> SignalRecord | None:
        defined = [s for s in self.signals if s.auroc is not None]
        return max(defined, key=lambda s: (s.auroc or 0.0, s.ci_low or 0.0)) if defined else None

    def statement(self) -> list[str]:
        """Which signals separate knowledge-present (P) from knowledge-absent (N) members, in plain words."""
        n_p, n_n = len(self.by_status("present")), len(self.by_status("absent"))
        lines = [f"{n_p} knowledge-present (P) and {n_n} knowledge-absent (N) zoo members; a signal separates them "
                 "when its AUROC's 95% interval lies above 0.5."]
        groups: dict[str, list[SignalRecord]] = {}
        for s in self.signals:
            groups.setdefault(s.separation, []).append(s)

        def names(recs: list[SignalRecord]) -> str:
            return ", ".join(f"{r.signal} ({r.interval()})" for r in sorted(recs, key=lambda r: -(r.auroc or 0)))

        sep = groups.get("separates", [])
        strong = [r for r in sep if (r.auroc or 0) >= STRONG_AUROC]
        if sep:
            lines.append(f"Separate P from N: {names(sep)}" + (f"; strongly (AUROC >= {STRONG_AUROC}): "
                                                            f"{', '.join(r.signal for r in strong)}." if strong else "."))
        else:
            lines.append("No signal separates P from N with an interval above 0.5.")
        if groups.get("does not separate"):
            lines.append(f"Do not separate (interval includes 0.5): {names(groups['does not separate'])}.")
        if groups.get("reversed"):
            lines.append(f"Reversed (score higher on N than on P): {names(groups['reversed'])}.")
        for key, words in (("too few members", "too few members on a side for an interval"),
                           ("undefined", "undefined on the zoo")):
            if groups.get(key):
                lines.append(f"{words.capitalize()}: {', '.join(r.signal for r in groups[key])}.")
        best = self.best()
        if best is not None:
            lines.append(f"Best single signal: {best.signal}, AUROC {best.interval()}.")
        methods = self.by_status("unknown")
        if methods and sep:
            place_ = self.placement()
            for m in methods:
                reads = [place_[r.signal][m.name]["reads_as"] for r in sep]
                counts = {k: reads.count(k) for k in ("present", "absent", "between", "overlap") if reads.count(k)}
                lines.append(f"{m.name}: on the {len(sep)} separating signal(s) it reads as " +
                             ", ".join(f"{k} {v}x" for k, v in counts.items()) + ".")
        return lines

    def table(self) -> list[dict[str, Any]]:
        """One row per signal: AUROC with its interval, members, robustness."""
        return [{"signal": s.signal, "label": s.label, "auroc": s.auroc, "ci_low": s.ci_low, "ci_high": s.ci_high,
                 "separation": s.separation, "n_present": s.n_present, "n_absent": s.n_absent,
                 "R": s.robustness_r, "Q": s.robustness_q, "H": s.robustness_h} for s in self.signals]

    # ---- (de)serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "signals": [s.to_dict() for s in self.signals],
                "members": [m.to_dict() for m in self.members], "placement": self.placement(),
                "statement": self.statement(), "options": dict(self.options), "fingerprints": dict(self.fingerprints),
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationResult:
        return cls(study=str(d["study"]), signals=[SignalRecord.from_dict(s) for s in d["signals"]],
                   members=[MemberRecord.from_dict(m) for m in d["members"]], options=dict(d.get("options", {})),
                   fingerprints=dict(d.get("fingerprints", {})), notes=list(d.get("notes", [])))
