"""Circuits: EAP-IG edge attribution, circuit selection and statistics, and CUD difficulty scoring."""

from analysis.circuits.api import CircuitResult, circuit_for_sample, sample_edge_scores, score_study
from analysis.circuits.cud import CUDReport, cud, difficulty_labels, distance
from analysis.circuits.eap import EAPOptions, edge_scores, faithfulness, run_with_edges
from analysis.circuits.graph import Edge, Graph
from analysis.circuits.selection import circuit_stats, greedy_circuit, threshold_circuit

__all__ = ["CUDReport", "CircuitResult", "EAPOptions", "Edge", "Graph", "circuit_for_sample", "circuit_stats", "cud",
           "difficulty_labels", "distance", "edge_scores", "faithfulness", "greedy_circuit", "run_with_edges",
           "sample_edge_scores", "score_study", "threshold_circuit"]
