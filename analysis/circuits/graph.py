"""The computational graph of a HookedTransformer, as used by edge attribution (EAP / EAP-IG).

Nodes (upstream = something that *writes* to the residual stream):

* ``input``: the embeddings, ``hook_embed + hook_pos_embed`` (read at ``blocks.0.hook_resid_pre``);
* ``a{l}.h{h}``: attention head ``h`` of layer ``l``, its output ``z_h W_O`` (``blocks.{l}.attn.hook_result``,
  without the bias ``b_O``, which is a constant shared by clean and baseline runs);
* ``m{l}``: the MLP of layer ``l`` (``blocks.{l}.hook_mlp_out``, bias included);
* ``logits``: the final residual stream (``blocks.{L-1}.hook_resid_post``), read by ``ln_final`` + unembed.

Downstream *inputs* (what reads the residual stream): each head's query, key and value inputs separately
(``blocks.{l}.hook_q_input`` / ``hook_k_input`` / ``hook_v_input``, head index ``h``), each MLP input
(``blocks.{l}.hook_mlp_in``) and the logits. An edge joins every upstream node to every downstream input
that comes after it: the input and every component of an earlier layer feed a layer's heads; the input,
earlier layers and the same layer's heads feed its MLP; everything feeds the logits.

Edges are numbered in a fixed order (downstream inputs in forward order, their upstream nodes in forward
order), so an edge-score vector of one model lines up with that of any model of the same architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from analysis.errors import AnalysisInputError

QKV = ("q", "k", "v")


@dataclass(frozen=True)
class Edge:
    src: str  # upstream node name
    dst: str  # downstream input name: "a{l}.h{h}.q", "m{l}", "logits"

    @property
    def dst_node(self) -> str:
        return dst_node(self.dst)


def dst_node(dst: str) -> str:
    """The node a downstream input belongs to ("a1.h2.q" -> "a1.h2")."""
    return dst.rsplit(".", 1)[0] if dst.startswith("a") and dst.count(".") == 2 else dst


@dataclass(frozen=True)
class Graph:
    n_layers: int
    n_heads: int
    has_mlp: bool

    @classmethod
    def of(cls, model: object) -> Graph:
        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise AnalysisInputError("edge attribution needs a HookedTransformer")
        if getattr(cfg, "parallel_attn_mlp", False):
            raise AnalysisInputError("parallel attention/MLP blocks are not supported by the circuit graph")
        n_kv = getattr(cfg, "n_key_value_heads", None)
        if n_kv is not None and n_kv != cfg.n_heads:
            raise AnalysisInputError("grouped-query attention is not supported by the circuit graph")
        return cls(int(cfg.n_layers), int(cfg.n_heads), not bool(cfg.attn_only))

    # ---- nodes --------------------------------------------------------------------------------------
    @cached_property
    def upstream(self) -> list[str]:
        """Upstream nodes in forward order: input, then per layer its heads and its MLP."""
        out = ["input"]
        for layer in range(self.n_layers):
            out += [f"a{layer}.h{h}" for h in range(self.n_heads)]
            if self.has_mlp:
                out.append(f"m{layer}")
        return out

    @cached_property
    def downstream(self) -> list[str]:
        """Downstream inputs in forward order."""
        out: list[str] = []
        for layer in range(self.n_layers):
            out += [f"a{layer}.h{h}.{x}" for x in QKV for h in range(self.n_heads)]
            if self.has_mlp:
                out.append(f"m{layer}")
        out.append("logits")
        return out

    @cached_property
    def nodes(self) -> list[str]:
        return [*self.upstream, "logits"]

    @cached_property
    def up_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.upstream)}

    @cached_property
    def down_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.downstream)}

    def node_layer(self, node: str) -> int:
        """Layer of a node: input -1, a component its layer, logits n_layers."""
        if node == "input":
            return -1
        if node == "logits":
            return self.n_layers
        return int(node[1:].split(".")[0])

    def n_up_before(self, dst: str) -> int:
        """How many upstream nodes (a prefix of ``upstream``) feed the downstream input ``dst``."""
        if dst == "logits":
            return len(self.upstream)
        per_layer = self.n_heads + int(self.has_mlp)
        layer = self.node_layer(dst_node(dst))
        if dst.startswith("a"):
            return 1 + layer * per_layer
        return 1 + layer * per_layer + self.n_heads  # MLP: earlier layers + this layer's heads

    # ---- edges --------------------------------------------------------------------------------------
    @cached_property
    def valid(self) -> np.ndarray:
        """[n_up, n_down] bool: which (upstream, downstream input) pairs are edges."""
        m = np.zeros((len(self.upstream), len(self.downstream)), dtype=bool)
        for j, d in enumerate(self.downstream):
            m[: self.n_up_before(d), j] = True
        return m

    @cached_property
    def edge_pairs(self) -> np.ndarray:
        """[E, 2] (upstream index, downstream index) of every edge, in edge order (downstream-major)."""
        js, us = np.nonzero(self.valid.T)
        return np.stack([us, js], axis=1)

    @cached_property
    def edges(self) -> list[Edge]:
        return [Edge(self.upstream[u], self.downstream[d]) for u, d in self.edge_pairs]

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def edge_dicts(self, values: np.ndarray | list[float]) -> list[dict[str, str | float]]:
        """``[{"src", "dst", "score"}]`` per edge, ``score`` from ``values`` (one per edge, in edge order): the
        form the CLI prints and analysis.circuits.figures.circuit_graph draws."""
        return [{"src": e.src, "dst": e.dst, "score": float(v)} for e, v in zip(self.edges, values, strict=True)]

    def edge_layer(self, i: int) -> int:
        """Layer of edge ``i`` = the layer of its downstream node (edges into the logits: ``n_layers``)."""
        return self.node_layer(self.edges[i].dst_node)
