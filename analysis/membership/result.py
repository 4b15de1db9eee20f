"""Typed results of membership inference on the forget set: one model's scores of the forget and held-out
samples, the AUROC of each score with its interval, and per forget sample its percentile among the held-out
scores; the result carries its signal reading."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from analysis.signals import SignalReading, reading_from_samples

SIGNAL = "membership"


def _opt(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _ci(x: Any) -> tuple[float, float] | None:
    return (float(x[0]), float(x[1])) if x else None


@dataclass
class ScoreSummary:
    """One membership score on one model: ``auroc`` of the forget samples against the held-out samples with its
    bootstrap interval (both sides resampled); ``percentile``: forget sample id -> its score's percentile among
    the held-out scores (their mean is the AUROC); ``forget`` / ``heldout``: the raw scores."""

    score: str
    auroc: float | None
    auroc_ci: tuple[float, float] | None
    percentile: dict[str, float | None]
    forget: dict[str, float | None]
    heldout: list[float | None]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["auroc_ci"] = list(self.auroc_ci) if self.auroc_ci is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreSummary:
        return cls(score=str(d["score"]), auroc=_opt(d.get("auroc")), auroc_ci=_ci(d.get("auroc_ci")),
                   percentile={k: _opt(v) for k, v in d["percentile"].items()},
                   forget={k: _opt(v) for k, v in d["forget"].items()}, heldout=[_opt(v) for v in d["heldout"]])


@dataclass
class MembershipResult:
    """Membership inference of ``model``'s forget samples against ``heldout`` ("perturbed" or "retain", see
    analysis.membership.options) with ``heldout_ids`` (a perturbed item is ``"<forget id>~<wrong answer>"``);
    ``scores``: "mink" and "loss" -> ScoreSummary."""

    model: str
    fingerprint: str
    options: dict[str, Any]
    heldout: str
    heldout_ids: list[str]
    scores: dict[str, ScoreSummary]
    seed: int = 0

    def reading(self, score: str = "mink") -> SignalReading:
        """The signal reading: per forget sample its ``score``'s percentile among the held-out scores, their mean
        (= the AUROC) with a bootstrap CI over forget samples; both AUROCs with their two-sided intervals go into
        ``details``."""
        s = self.scores[score]
        details = {"score": score, "heldout": self.heldout, "n_heldout": len(self.heldout_ids),
                   **{f"auroc_{k}": v.auroc for k, v in self.scores.items()},
                   **{f"auroc_{k}_ci": list(v.auroc_ci) if v.auroc_ci else None for k, v in self.scores.items()}}
        return reading_from_samples(SIGNAL, self.model, s.percentile, details=details, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "fingerprint": self.fingerprint, "options": self.options,
                "heldout": self.heldout, "heldout_ids": self.heldout_ids, "seed": self.seed,
                "scores": {k: v.to_dict() for k, v in self.scores.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MembershipResult:
        return cls(model=str(d["model"]), fingerprint=str(d["fingerprint"]), options=dict(d["options"]),
                   heldout=str(d["heldout"]), heldout_ids=list(d["heldout_ids"]), seed=int(d.get("seed", 0)),
                   scores={k: ScoreSummary.from_dict(v) for k, v in d["scores"].items()})
