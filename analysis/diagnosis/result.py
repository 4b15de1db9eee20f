"""Typed, JSON-serialisable result of a diagnosis: one reading per signal, the summary verdict with its
evidence, the agreement between signals, one row per forget sample, and the underlying results (for the
figures)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

# Readings of a signal: "gone" (no sign of the forget knowledge), "present" (the knowledge is still there),
# "inconclusive" (between the thresholds), "unavailable" (the signal could not be computed), and
# "context" (a signal that predicts difficulty rather than reads the model's state: CUD).
READINGS: tuple[str, ...] = ("gone", "present", "inconclusive", "unavailable", "context")
VERDICTS: tuple[str, ...] = ("erased", "suppressed", "not unlearned", "inconclusive")

SAMPLE_COLUMNS: dict[str, str] = {
    "id": "sample id",
    "person": "the sample's subject",
    "relation": "the sample's relation",
    "prompt": "prompt",
    "answer": "answer",
    "correct_before": "the original answers it top-1",
    "correct_after": "this model answers it top-1",
    "p_before": "answer probability on the original",
    "p_after": "answer probability on this model",
    "sae_verdict": "SAE per-sample verdict (erased / suppressed / inconclusive)",
    "recovered": "keyword emphasis brings the answer back on this model but not on the retrain control "
                 "(None: not applicable, the original does not answer it or this model still does)",
    "recovered_by": "the emphasis strategies that bring it back",
    "trace_before": "the original's normalised mid-layer indirect effect of the subject: the share of its own "
                    "clean-minus-corrupted gap that restoring the subject's mid-layer states brings back",
    "trace_after": "the same share on this model, of this model's own gap (None where that gap is below the "
                   "floor or the original does not answer the sample)",
    "trace_shift": "trace_after - trace_before",
    "cud": "CUD on the original model, out-of-fold (higher = predicted harder to unlearn)",
    "cud_label": "CUD calibration label (hard / easy / -)",
    "observed_difficulty": "this model's observed difficulty (area under the answer-probability curve during "
                           "its unlearning run, the original's own probability left out; None for controls)",
}


@dataclass
class Signal:
    """One signal's reading of the model, a one-line summary, its evidence, and its headline numbers."""

    name: str
    title: str
    reading: str
    summary: str
    evidence: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signal:
        return cls(name=str(d["name"]), title=str(d["title"]), reading=str(d["reading"]), summary=str(d["summary"]),
                   evidence=[str(e) for e in d.get("evidence", [])], numbers=dict(d.get("numbers", {})))


@dataclass
class Diagnosis:
    """Every signal of one unlearned model of a study, joined. ``details`` holds the underlying results as
    dicts (``eval``: ModelEval per model, ``sae``: RestorationReport, ``recovery``: RecoveryReport,
    ``trace``: AIEResult per model, ``cud``: CUDReport), None where a signal is unavailable."""

    study: str
    model: str
    retrain: str | None
    verdict: str
    headline: str
    evidence: list[str]
    signals: dict[str, Signal]
    agreement: dict[str, list[str]]  # "agree", "disagree", "silent" (no clear reading, and why), "context" (CUD)
    samples: list[dict[str, Any]]
    details: dict[str, Any]
    fingerprints: dict[str, str]
    options: dict[str, Any]
    caveats: list[str] = field(default_factory=list)  # e.g. the retain set collapsed too

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Diagnosis:
        return cls(study=str(d["study"]), model=str(d["model"]), retrain=d.get("retrain"), verdict=str(d["verdict"]),
                   headline=str(d["headline"]), evidence=[str(e) for e in d["evidence"]],
                   signals={k: Signal.from_dict(v) for k, v in d["signals"].items()},
                   agreement={k: [str(x) for x in v] for k, v in d["agreement"].items()},
                   samples=[dict(s) for s in d["samples"]], details=dict(d["details"]),
                   fingerprints=dict(d["fingerprints"]), options=dict(d["options"]),
                   caveats=[str(c) for c in d.get("caveats", [])])

    def samples_frame(self) -> pd.DataFrame:
        """The per-sample table, one row per forget sample, columns as in ``SAMPLE_COLUMNS``."""
        return pd.DataFrame(self.samples, columns=list(SAMPLE_COLUMNS))
