"""Typed results of the circuits analysis: one sample's circuit (:class:`CircuitResult`), the faithfulness of
circuits (:class:`Faithfulness`) and the CUD difficulty scores of a study (:class:`CUDReport`). Each owns its
serialisation (``to_dict`` / ``from_dict``, plain JSON types)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Faithfulness:
    """Per-sample metrics of the full model, the circuit alone and the empty circuit, and
    ``faithfulness = (circuit - empty) / (full - empty)`` (1 = the circuit recovers the full model's metric
    relative to every edge ablated). None, with the reason in ``notes``, when ``full - empty`` is below
    ``MIN_GAP`` for the metric (analysis.circuits.eap)."""

    full: list[float]
    circuit: list[float]
    empty: list[float]
    faithfulness: list[float | None]
    notes: list[str | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Faithfulness:
        return cls(**d)


@dataclass
class CircuitResult:
    """EAP-IG edge scores of one sample on one model, its greedy top-n circuit, the circuit's faithfulness
    and statistics (analysis.circuits.selection.circuit_stats)."""

    model: str
    sample_id: str
    nodes: list[str]
    edges: list[dict[str, Any]]  # {"src", "dst", "score"} for every edge of the graph
    circuit: list[int]  # edge indices, in the order the greedy selection added them
    faithfulness: dict[str, Any]
    stats: dict[str, Any]
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CircuitResult:
        return cls(**d)


@dataclass
class CUDReport:
    """Out-of-fold CUD of every forget sample (aligned with ``ids``), its observed difficulty and calibration
    label (+1 hard, -1 easy, 0 unlabelled), the validation against observed difficulty (with baselines) and
    the easy / hard circuit signature (see analysis.circuits.cud)."""

    ids: list[str]
    cud: list[float]
    observed: list[float]
    labels: list[int]
    distance: str
    validation: dict[str, Any]
    signature: dict[str, Any]
    options: dict[str, Any]
    # The easy and hard anchor vectors built from every labelled sample (for display; the scores above
    # use out-of-fold anchors), one value per edge of the original model's graph.
    anchors: dict[str, list[float]] = field(default_factory=dict)
    # The same circuits against every label kind ({kind: {"definition", "cud": {"spearman", "auroc"},
    # "baselines", "n_hard", "n_easy", "methods"}}, or {"error"} when the study lacks that difficulty): the
    # old auc labels, which share the original's probability with the answer-loss baseline, beside the new.
    label_comparison: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CUDReport:
        return cls(**d)
