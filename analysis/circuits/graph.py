"""The computational graph of a HookedTransformer, as used by edge attribution (EAP / EAP-IG).

Nodes (upstream = something that *writes* to the residual stream):

* ``input``: the embeddings, ``hook_embed + hook_pos_embed`` (read at ``blocks.0.hook_resid_pre``);
* ``a{l}.h{h}``: attention head ``h`` of layer ``l``, its output ``z_h W_O`` (``blocks.{l}.attn.hook_result``,
  without the bias ``b_O``, which is a constant shared by clean and baseline runs; after a post-attention
  norm, its share of the normalised output: below);
* ``m{l}``: the MLP of layer ``l`` (``blocks.{l}.hook_mlp_out``, bias included);
* ``logits``: the final residual stream (``blocks.{L-1}.hook_resid_post``), read by ``ln_final`` + unembed.

Downstream *inputs* (what reads the residual stream): each head's query, key and value inputs separately
(``blocks.{l}.hook_q_input`` / ``hook_k_input`` / ``hook_v_input``, head index ``h``), each MLP input
(``blocks.{l}.hook_mlp_in``) and the logits. An edge joins every upstream node to every downstream input
that comes after it: the input and every component of an earlier layer feed a layer's heads; the input,
earlier layers and the same layer's heads feed its MLP (not in a parallel block: below); everything feeds
the logits.

Edges are numbered in a fixed order (downstream inputs in forward order, their upstream nodes in forward
order), so an edge-score vector of one model lines up with that of any model of the same architecture.

Grouped-query attention
-----------------------
In a grouped-query attention (GQA) model (Llama 3.x, Qwen 2/3, Mistral, Gemma: ``n_key_value_heads`` <
``n_heads``; multi-query attention is the case of one key/value head) the ``n_heads / n_key_value_heads``
query heads of a group share one key and one value projection. The graph is that of the query heads, as
for multi-head attention: one node ``a{l}.h{h}`` per query head, and each with its own q, k and v input.
While attributing, :func:`analysis.circuits.eap.graph_mode` sets TransformerLens'
``ungroup_grouped_query_attention`` (the CUD reference code's approach): the shared key and value weights
are repeated per query head, so ``hook_k_input`` / ``hook_v_input`` hold one copy of the residual stream per
query head, as ``hook_q_input`` does. The copies are equal, so the forward, the logits and every node output
are those of the grouped model; what the copies add is a gradient per query head. So, under GQA:

* the **k edge** ``u -> a{l}.h{h}.k`` is ``u``'s effect through the keys *as query head h reads them* (its
  attention scores), and the **v edge** ``u -> a{l}.h{h}.v`` through the values that head h mixes; the
  other heads of the group use the same key/value head, each through its own edge;
* the group's shared key (value) input is read by all heads of the group, so its gradient is the sum of
  theirs: the scores of ``u``'s k (v) edges into the heads of key/value group ``j`` (:meth:`Graph.kv_head`)
  sum to the score ``u`` would get on one edge into the shared input (tested against a naive loop that
  keeps the group's input shared);
* ablating ``u -> a{l}.h{h}.k`` (a circuit without that edge) changes the keys head h sees and no other
  head's: an intervention finer than one grouped input allows, which the ungrouped forward computes
  exactly.

Why per query head: the alternative, one k and one v input per key/value head (edges ``u -> a{l}.kv{j}.k``), would
give fewer, coarser edges and a graph whose shape differs from that of a multi-head model with the same
query heads. Per query head keeps the node/edge numbering of a multi-head model of ``n_heads`` heads
(stored multi-head scores keep their meaning and key), and the grouped score is a sum away.

Parallel attention and MLP (GPT-J, GPT-NeoX / Pythia, Phi-1.5: ``parallel_attn_mlp``): a layer's MLP reads
the residual stream *before* its layer, as its heads do, so the layer's heads do not feed its MLP; both write
to the stream after the layer. The graph drops those edges.

Post-attention norms (Gemma 2/3's ``ln1_post``, OLMo 2's post-norm ``ln1``): the block adds
``RMSNorm(sum_h result_h + b_O)`` to the stream, so a head's ``hook_result`` is not what it adds there. A
head's output is then its *share* of the normalised output, ``result_h * w / rms`` with the rms of that very
run (analysis.circuits.eap.head_outputs); the shares add up to what the block adds (with ``b_O``'s share,
zero in those models; a nonzero one would be left to no node, as ``b_O`` is in other blocks, but would
then differ between runs). This decomposition is our choice (EAP-IG was defined on pre-norm blocks, where a
head's output is what it adds). The rms is shared by the heads of the layer, so a head's share also moves when
another head of its layer changes (the norm couples them); edge scores, ablations and IG over a head's
activations (its share set, the other heads' shares kept) all use the shares. The MLP's ``hook_mlp_out``
already comes after its post-norm. A LayerNorm after the attention is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from analysis.errors import AnalysisInputError

# Architectures whose blocks normalise each sublayer's output before the residual add (TransformerLens'
# transformer_lens.utilities.architectures.POST_NORM_ARCHITECTURES; kept here so that the graph imports no
# TransformerLens).
POST_NORM_ARCHITECTURES = frozenset({"Olmo2ForCausalLM", "Olmo3ForCausalLM"})
# Architectures whose key norm runs over the projections of all key/value heads at once (TransformerLens'
# AbstractAttention.forward, the OLMo family).
KV_NORM_ACROSS_HEADS = frozenset({"OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM"})

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
    n_kv_heads: int | None = None  # key/value heads under grouped-query attention (None: one per query head)
    parallel: bool = False  # parallel attention and MLP: a layer's MLP reads the stream before its heads write

    def __post_init__(self) -> None:
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            raise AnalysisInputError(f"grouped-query attention needs n_heads ({self.n_heads}) to be a multiple of "
                                     f"n_key_value_heads ({self.n_kv_heads})")

    @classmethod
    def of(cls, model: object) -> Graph:
        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise AnalysisInputError("edge attribution needs a HookedTransformer")
        arch = getattr(cfg, "original_architecture", None)
        post_norm = getattr(cfg, "use_normalization_before_and_after", False) or arch in POST_NORM_ARCHITECTURES
        if post_norm and getattr(cfg, "normalization_type", None) not in ("RMS", "RMSPre"):
            raise AnalysisInputError(f"the circuit graph does not support {arch or 'this model'}: a LayerNorm after "
                                     "the attention (only an RMS norm's output splits into the heads' shares)")
        n_kv = getattr(cfg, "n_key_value_heads", None)
        if arch in KV_NORM_ACROSS_HEADS and n_kv is not None and int(n_kv) != int(cfg.n_heads):
            raise AnalysisInputError(f"the circuit graph does not support {arch} with grouped-query attention: its key "
                                     "norm spans all key/value heads, so the keys cannot be ungrouped per query head")
        return cls(int(cfg.n_layers), int(cfg.n_heads), not bool(cfg.attn_only),
                   None if n_kv is None or int(n_kv) == int(cfg.n_heads) else int(n_kv),
                   bool(getattr(cfg, "parallel_attn_mlp", False)) and not bool(cfg.attn_only))

    def kv_head(self, head: int) -> int:
        """The key/value head query head ``head`` reads (itself without grouped-query attention): TransformerLens
        repeats each key/value head for ``n_heads / n_kv_heads`` consecutive query heads."""
        return head if self.n_kv_heads is None else head // (self.n_heads // self.n_kv_heads)

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
        if dst.startswith("a") or self.parallel:  # a parallel MLP reads the stream before its layer's heads
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
