"""Typed results of the relearning attack: one attack run as stored (``AttackRecord``), one variant's recovered
share against the retrain baseline (``VariantResult``), and a judged model's whole result (``RelearnResult``),
which carries its signal reading."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from analysis.signals import SignalReading, reading_from_samples

SIGNAL = "relearn"


@dataclass
class AttackRecord:
    """One attack job on one model, as stored: the ids it trained on and measured, the held-out correctness
    (0/1) and mean answer log-prob before the first step and after each (``[steps + 1][n_eval]``), the losses."""

    train: list[str]
    eval: list[str]
    correct: list[list[int]]
    logprob: list[list[float]]
    losses: list[float] = field(default_factory=list)

    def final(self) -> dict[str, int]:
        """Held-out sample id -> correct (0/1) after the last step."""
        return dict(zip(self.eval, self.correct[-1], strict=True))

    def first(self) -> dict[str, int]:
        """Held-out sample id -> correct (0/1) before the attack."""
        return dict(zip(self.eval, self.correct[0], strict=True))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttackRecord:
        return cls(train=list(d["train"]), eval=list(d["eval"]), correct=[list(map(int, r)) for r in d["correct"]],
                   logprob=[list(map(float, r)) for r in d["logprob"]], losses=list(map(float, d.get("losses", []))))


def _opt(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


@dataclass
class VariantResult:
    """One variant of the attack on one judged model, against the same attack on the retrain control.

    ``per_sample``: forget sample id -> recovered share in [0, 1] (None where undefined: the original did not
    answer it, or the retrain control already did); ``value`` their mean with its bootstrap ``ci``; ``pooled``
    the same ratio on model-level accuracies. ``accuracy``: forget accuracy of the original, the retrain control
    before the attack, the judged model before it, and both after it. ``curve`` / ``reference_curve``: held-out
    forget accuracy after each step (index 0 = before) of the judged model and of the retrain control."""

    variant: str
    per_sample: dict[str, float | None]
    value: float | None
    ci: tuple[float, float] | None
    pooled: float | None
    accuracy: dict[str, float]
    attacked: dict[str, int]
    reference_attacked: dict[str, int]
    curve: list[float]
    reference_curve: list[float]
    note: str = ""

    @property
    def n_defined(self) -> int:
        return sum(v is not None for v in self.per_sample.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VariantResult:
        ci = d.get("ci")
        return cls(variant=str(d["variant"]), per_sample={k: _opt(v) for k, v in d["per_sample"].items()},
                   value=_opt(d.get("value")), ci=(float(ci[0]), float(ci[1])) if ci else None,
                   pooled=_opt(d.get("pooled")), accuracy={k: float(v) for k, v in d["accuracy"].items()},
                   attacked={k: int(v) for k, v in d["attacked"].items()},
                   reference_attacked={k: int(v) for k, v in d["reference_attacked"].items()},
                   curve=[float(x) for x in d["curve"]], reference_curve=[float(x) for x in d["reference_curve"]],
                   note=str(d.get("note", "")))


@dataclass
class RelearnResult:
    """The relearning attack on ``model`` with the retrain control ``reference`` as its baseline. ``variants``:
    "forget" (relearn on half the forget set, measured on the other half; the registered signal) and "retain"
    (fine-tune on retain data only). ``fingerprints``: model name -> fingerprint of every model involved."""

    model: str
    reference: str
    options: dict[str, Any]
    fingerprints: dict[str, str]
    variants: dict[str, VariantResult]

    def reading(self, variant: str = "forget") -> SignalReading:
        """The signal reading of one variant (per-sample recovered shares, their mean and bootstrap CI); the
        other variants' values go into ``details``."""
        v = self.variants[variant]
        details = {"variant": variant, "pooled": v.pooled, "accuracy": v.accuracy, "reference": self.reference,
                   **{f"{name}_value": o.value for name, o in self.variants.items() if name != variant}}
        return reading_from_samples(SIGNAL, self.model, v.per_sample, note=v.note, details=details,
                                    seed=int(self.options.get("seed", 0)))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "reference": self.reference, "options": self.options,
                "fingerprints": self.fingerprints, "variants": {k: v.to_dict() for k, v in self.variants.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RelearnResult:
        return cls(model=str(d["model"]), reference=str(d["reference"]), options=dict(d["options"]),
                   fingerprints=dict(d["fingerprints"]),
                   variants={k: VariantResult.from_dict(v) for k, v in d["variants"].items()})
