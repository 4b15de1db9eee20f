"""Circuits: EAP-IG edge attribution, circuit selection and statistics, and CUD difficulty scoring.

Rooms: ``options.py`` (EAPOptions, CUDOptions, CIRCUIT_DEFAULTS, STORE_KIND, the choices and their labels),
``eap.py`` (EAP-IG: the METRICS and BASELINES registries, edge scores, ablation, faithfulness), ``graph.py``
(the computational graph), ``selection.py`` (greedy / threshold circuits, statistics), ``cud.py`` (CUD: the
DISTANCES and VECTORS registries, labels, cross-validation), ``runner.py`` (study-level entry points),
``result.py`` (CircuitResult, CUDReport, Faithfulness), ``figures.py``, ``cli.py``.

The public names below load their module on first use (analysis.lazy), so that the CLI's parser, which reads
``analysis.circuits.options``, does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports

_M = "analysis.circuits."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["DISTANCES", "VECTORS", "cud", "difficulty_labels", "distance"], _M + "cud"),
    **dict.fromkeys(["BASELINES", "METRICS", "edge_scores", "faithfulness", "run_with_edges"], _M + "eap"),
    **dict.fromkeys(["Edge", "Graph"], _M + "graph"),
    **dict.fromkeys(["CIRCUIT_DEFAULTS", "STORE_KIND", "CUDOptions", "EAPOptions"], _M + "options"),
    **dict.fromkeys(["CircuitResult", "CUDReport", "Faithfulness"], _M + "result"),
    **dict.fromkeys(["circuit_for_sample", "circuit_typed", "sample_edge_scores", "score_study"], _M + "runner"),
    **dict.fromkeys(["circuit_stats", "greedy_circuit", "threshold_circuit"], _M + "selection"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from analysis.circuits.cud import DISTANCES, VECTORS, cud, difficulty_labels, distance
    from analysis.circuits.eap import BASELINES, METRICS, edge_scores, faithfulness, run_with_edges
    from analysis.circuits.graph import Edge, Graph
    from analysis.circuits.options import CIRCUIT_DEFAULTS, STORE_KIND, CUDOptions, EAPOptions
    from analysis.circuits.result import CircuitResult, CUDReport, Faithfulness
    from analysis.circuits.runner import circuit_for_sample, circuit_typed, sample_edge_scores, score_study
    from analysis.circuits.selection import circuit_stats, greedy_circuit, threshold_circuit

__all__ = ["BASELINES", "CIRCUIT_DEFAULTS", "DISTANCES", "METRICS", "STORE_KIND", "VECTORS", "CUDOptions",
           "CUDReport", "CircuitResult", "EAPOptions", "Edge", "Faithfulness", "Graph", "circuit_for_sample", "circuit_typed",
           "circuit_stats", "cud", "difficulty_labels", "distance", "edge_scores", "faithfulness",
           "greedy_circuit", "run_with_edges", "sample_edge_scores", "score_study", "threshold_circuit"]
