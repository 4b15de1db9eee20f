"""Circuit selection from edge scores, and circuit statistics.

* :func:`greedy_circuit` (the CUD paper's selection): start from the logits node; repeatedly add the
  eligible edge with the largest |score| (eligible = its downstream node is already in the circuit), and
  add its upstream node to the circuit. Stops after ``top_n`` edges (or when no edge is eligible).
* :func:`threshold_circuit`: every edge with |score| >= threshold.

Statistics (:func:`circuit_stats`): the layer of an edge is the layer of its downstream node (edges into
the logits count as layer ``n_layers``); path lengths count edges on node-level paths from ``input`` to
``logits`` inside the circuit (several q/k/v edges between the same two nodes are one step); the last
third is the last ``max(1, round(n_layers / 3))`` layers plus the logits.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Any

import numpy as np

from analysis.circuits.graph import Graph
from analysis.errors import AnalysisInputError


def _check(g: Graph, scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.shape != (g.n_edges,):
        raise AnalysisInputError(f"expected {g.n_edges} edge scores, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise AnalysisInputError("edge scores contain NaN or infinity")
    return s


def _edges_into(g: Graph) -> dict[str, list[int]]:
    into: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(g.edges):
        into[e.dst_node].append(i)
    return into


def greedy_circuit(g: Graph, scores: np.ndarray, top_n: int = 75, absolute: bool = True) -> list[int]:
    """Edge indices in the order they were added."""
    s = _check(g, scores)
    if top_n < 0:
        raise AnalysisInputError(f"top_n must be >= 0, got {top_n}")
    key = np.abs(s) if absolute else s
    into = _edges_into(g)
    heap: list[tuple[float, int]] = [(-key[i], i) for i in into["logits"]]
    heapq.heapify(heap)
    in_circuit = {"logits"}
    chosen: list[int] = []
    while heap and len(chosen) < top_n:
        _, i = heapq.heappop(heap)
        chosen.append(i)
        src = g.edges[i].src
        if src not in in_circuit:
            in_circuit.add(src)
            for j in into.get(src, []):
                heapq.heappush(heap, (-key[j], j))
    return chosen


def threshold_circuit(g: Graph, scores: np.ndarray, threshold: float) -> list[int]:
    s = _check(g, scores)
    if threshold < 0:
        raise AnalysisInputError(f"threshold must be >= 0, got {threshold}")
    idx = np.nonzero(np.abs(s) >= threshold)[0]
    return [int(i) for i in idx[np.argsort(-np.abs(s[idx]), kind="stable")]]


def edge_mask(g: Graph, circuit: list[int]) -> np.ndarray:
    m = np.zeros(g.n_edges, dtype=bool)
    m[np.asarray(circuit, dtype=int)] = True
    return m


def last_third_start(n_layers: int) -> int:
    return n_layers - max(1, round(n_layers / 3))


def circuit_stats(g: Graph, scores: np.ndarray, circuit: list[int]) -> dict[str, Any]:
    s = _check(g, scores)
    layers = np.array([g.edge_layer(i) for i in circuit], dtype=int)
    hist = {str(layer): int((layers == layer).sum()) for layer in range(g.n_layers + 1)}
    att = np.abs(s[circuit]) if circuit else np.zeros(0)
    total = float(att.sum())
    late = float(att[layers >= last_third_start(g.n_layers)].sum()) if circuit else 0.0
    # node-level DAG paths from input to logits (nodes are in topological order in g.nodes)
    succ: dict[str, set[str]] = defaultdict(set)
    for i in circuit:
        e = g.edges[i]
        succ[e.src].add(e.dst_node)
    count = dict.fromkeys(g.nodes, 0)
    length_sum = dict.fromkeys(g.nodes, 0)
    longest = dict.fromkeys(g.nodes, -1)
    count["input"], longest["input"] = 1, 0
    for node in g.nodes:
        if count[node] == 0:
            continue
        for nxt in succ.get(node, ()):
            count[nxt] += count[node]
            length_sum[nxt] += length_sum[node] + count[node]
            longest[nxt] = max(longest[nxt], longest[node] + 1)
    n_paths = count["logits"]
    nodes = {g.edges[i].src for i in circuit} | ({"logits"} if circuit else set())
    return {
        "n_edges": len(circuit), "n_nodes": len(nodes),
        "edge_layers": hist,
        "mean_edge_layer": float(layers.mean()) if circuit else None,
        "n_paths": int(n_paths),
        "mean_path_length": float(length_sum["logits"] / n_paths) if n_paths else None,
        "longest_path": int(longest["logits"]) if n_paths else None,
        "last_third_share": late / total if total > 0 else None,
        "attribution": total,
    }
