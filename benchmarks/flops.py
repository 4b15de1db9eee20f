"""An analytic FLOP model of a decoder-only transformer's forward (and activation backward) pass, and the FLOP
counts of the five real-model benchmarks (benchmarks/bench_real.py): what the naive reference does, what our
implementation does, and what an exact implementation strictly needs.

The model (matmul FLOPs only; one multiply-add = 2 FLOPs):

- per layer and computed token, the weight matmuls: ``2 * (attention weights + MLP weights)`` with attention
  weights ``d_model * d_head * (2 * n_heads + 2 * n_kv_heads)`` (W_Q and W_O per query head, W_K and W_V per
  key/value head; with ``ungrouped`` every query head gets its own W_K and W_V, as TransformerLens computes
  them while EAP-IG ungroups grouped-query attention) and MLP weights ``d_model * d_mlp * 3`` (gated: W_gate,
  W_in, W_out) or ``* 2``;
- per layer, the attention scores and values: ``4 * n_heads * d_head * keys`` per computed position, where a
  query at absolute position p attends to ``p + 1`` keys (causal; keys before the first computed position
  come from a key/value cache). Every count uses this causal number, also for implementations that compute
  the full square score matrix and mask it;
- the unembedding: ``2 * d_model * d_vocab`` per position whose logits are computed.

Not counted: embeddings, norms, rotary, softmax, activation functions, residual adds, hooks, the metric
(log-softmax over the vocabulary), the SAE's TopK. A backward pass that takes gradients with respect to
activations only (EAP-IG: ``torch.autograd.grad`` to hooked activations, no weight gradients) is counted as
the weight matmuls once (``dX = dY W^T``; ungrouped key/value weights, since EAP-IG wants one key and one
value input per query head), the attention terms twice (scores: dQ and dK; values: dA and dV) and the
unembedding once.

FLOPs are kept in two bins, ``block`` (weights, attention, EAP-IG's edge contraction, the SAE) and ``unembed``,
each with its FLOP-weighted mean number of token rows per matmul (``rows_block`` / ``rows_unembed``), so that
bench_real can time ``torch.mm`` at the shapes the counted work runs at.

"Strictly needs" (``*_min``): what an exact implementation cannot skip, by these rules only:
- causal attention: positions before the first one that differs from an already computed run are reused
  (their activations and keys/values), and positions after the last one whose logits a metric reads are not
  computed;
- logits only where a metric reads them (the answer tokens' positions);
- a run that starts from a cached hidden state runs only the blocks above it (tracing: a restored run needs
  no layer below the lowest restored one; patching: none up to the patched layer; SAE steering: the blocks
  up to the SAE are shared by all steering strengths);
- tracing: a cell whose restored token is before the first corrupted one is the corrupted run (no work), and
  restoring the residual after the last block changes only the logits at that token (no work unless the
  metric reads it).
Finer savings are not counted (so the strict minimum may be a little lower, and the FLOP ratio a little
higher): in an MLP / attention window the lowest restored layer computes at most one position, a restored
output need not be computed, and the score contraction of EAP-IG is counted over every edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from analysis.tracing.options import window_layers


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    gated_mlp: bool = True

    @classmethod
    def of(cls, cfg: Any) -> ModelShape:
        """From a HookedTransformerConfig."""
        kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        return cls(int(cfg.n_layers), int(cfg.d_model), int(cfg.n_heads), int(kv), int(cfg.d_head),
                   int(cfg.d_mlp), int(cfg.d_vocab), bool(getattr(cfg, "gated_mlp", False)))

    def attn_weight_flops(self, ungrouped: bool = False) -> int:
        """Per layer and token: Q, K, V, O projections."""
        kv = self.n_heads if ungrouped else self.n_kv_heads
        return 2 * self.d_model * self.d_head * (2 * self.n_heads + 2 * kv)

    def mlp_flops(self) -> int:
        return 2 * self.d_model * self.d_mlp * (3 if self.gated_mlp else 2)

    def layer_weight_flops(self, ungrouped: bool = False) -> int:
        return self.attn_weight_flops(ungrouped) + self.mlp_flops()

    def attention_flops(self, lo: int, hi: int) -> int:
        """Per layer: scores and values of the queries at positions lo..hi-1 (causal: p + 1 keys each)."""
        keys = (hi * (hi + 1) - lo * (lo + 1)) // 2 if hi > lo else 0
        return 4 * self.n_heads * self.d_head * keys

    @property
    def unembed_flops(self) -> int:
        """Per position."""
        return 2 * self.d_model * self.d_vocab


@dataclass(frozen=True)
class Flops:
    """FLOPs in two bins, with their FLOP-weighted token rows per matmul (sums of flops x rows)."""

    block: float = 0.0
    unembed: float = 0.0
    block_rows_w: float = 0.0
    unembed_rows_w: float = 0.0

    @property
    def total(self) -> float:
        return self.block + self.unembed

    @property
    def rows_block(self) -> float:
        """FLOP-weighted mean token rows of the block matmuls."""
        return self.block_rows_w / self.block if self.block else 0.0

    @property
    def rows_unembed(self) -> float:
        return self.unembed_rows_w / self.unembed if self.unembed else 0.0

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.block + other.block, self.unembed + other.unembed,
                     self.block_rows_w + other.block_rows_w, self.unembed_rows_w + other.unembed_rows_w)

    def __mul__(self, k: float) -> Flops:
        return Flops(self.block * k, self.unembed * k, self.block_rows_w * k, self.unembed_rows_w * k)

    __rmul__ = __mul__


def total(parts: Iterable[Flops]) -> Flops:
    out = Flops()
    for p in parts:
        out = out + p
    return out


def forward(shape: ModelShape, rows: int, lo: int, hi: int, layers: int, unembed: int = 0,
            ungrouped: bool = False) -> Flops:
    """``rows`` sequences computing positions lo..hi-1 (keys before lo cached) through ``layers`` blocks, logits
    at ``unembed`` positions per row."""
    n_pos = max(0, hi - lo)
    block = rows * layers * (n_pos * shape.layer_weight_flops(ungrouped) + shape.attention_flops(lo, hi))
    un = rows * unembed * shape.unembed_flops
    return Flops(block, un, block * rows * n_pos, un * rows * unembed)


def backward(shape: ModelShape, rows: int, lo: int, hi: int, layers: int, unembed: int = 0,
             ungrouped: bool = True) -> Flops:
    """Gradients with respect to activations only (see the module docstring)."""
    n_pos = max(0, hi - lo)
    block = rows * layers * (n_pos * shape.layer_weight_flops(ungrouped) + 2 * shape.attention_flops(lo, hi))
    un = rows * unembed * shape.unembed_flops
    return Flops(block, un, block * rows * n_pos, un * rows * unembed)


def extra(flops: float, rows: float) -> Flops:
    """Other matmul work (EAP-IG's score contraction, the SAE), in the block bin."""
    return Flops(flops, 0.0, flops * rows, 0.0)


# ---- causal tracing ------------------------------------------------------------------------------------------
def trace_cells(kinds: Sequence[str], n_layers: int, window: int) -> list[tuple[str, int, int]]:
    """(kind, layer, first block a restored run needs) per heatmap row, as analysis.tracing.engine.make_cells:
    resid at l restores the output of block l (runs from l + 1); mlp / attn restore a window (runs from its
    lowest layer)."""
    return [(k, layer, layer + 1 if k == "resid" else window_layers(layer, window, n_layers).start)
            for k in kinds for layer in range(n_layers)]


def tracing_naive(shape: ModelShape, prompt_len: int, n_answer: int, n_noise: int, kinds: Sequence[str]) -> Flops:
    """ROME's loop (benchmarks.bench_tracing.rome_naive): the clean row and the noise rows through the whole
    model with logits everywhere, once for the base run and once per (kind, layer, token) cell."""
    T, L = prompt_len + n_answer, shape.n_layers
    runs = 1 + len(kinds) * L * prompt_len
    return runs * forward(shape, 1 + n_noise, 0, T, L, T)


def tracing_min(shape: ModelShape, prompt_len: int, n_answer: int, n_noise: int, kinds: Sequence[str],
                window: int, t0: int) -> Flops:
    """What an exact trace needs: the clean run and the corrupted runs (positions from the first corrupted one
    ``t0``) up to the last position the metric reads (T - 2), logits at the answer positions; per cell and
    restored token t >= t0, the noise rows from the cell's first block, positions t..T-2."""
    T, L, P = prompt_len + n_answer, shape.n_layers, prompt_len
    last = T - 1  # positions 0..T-2 are read: the logits at P-1 .. T-2 predict the answer tokens
    out = forward(shape, 1, 0, last, L, n_answer) + forward(shape, n_noise, t0, last, L, n_answer)
    for kind, _, start in trace_cells(kinds, L, window):
        for t in range(t0, P):
            if kind == "resid" and start == L and t < P - 1:
                continue  # the last block's output at a position whose logits nobody reads
            out = out + forward(shape, n_noise, t, last, L - start, n_answer)
    return out


def tracing_ours(shape: ModelShape, prompt_len: int, n_answer: int, n_noise: int,
                 plan: Sequence[tuple[int, int, int]]) -> Flops:
    """analysis.tracing.engine.run_trace: the clean and the corrupted run over all positions with logits
    everywhere, then one forward per chunk of the plan, (start block, first position lo, rows): positions
    lo..T-1, logits at the metric's tail (the last prompt token and the answer tokens)."""
    T, L = prompt_len + n_answer, shape.n_layers
    out = forward(shape, 1, 0, T, L, T) + forward(shape, n_noise, 0, T, L, T)
    for start, lo, rows in plan:
        out = out + forward(shape, rows, lo, T, L - start, n_answer + 1)
    return out


# ---- EAP-IG ---------------------------------------------------------------------------------------------------
def eap_sample(shape: ModelShape, length: int, steps: int, n_up: int, n_down: int, unembed: int,
               rows: int = 1) -> Flops:
    """One EAP-IG edge-score run as analysis.circuits.eap.edge_scores does it (IG over the inputs, zero
    baseline) on ``rows`` rows of ``length`` positions: the clean and the baseline node-output runs (graph
    mode: ungrouped key/value heads, no logits), per IG step a forward with logits at ``unembed`` positions
    and its activation backward, and the contraction of the [n_up] output differences with the [n_down]
    input gradients at every position (``einsum btud,btvd->buv``)."""
    L = shape.n_layers
    nodes = 2 * forward(shape, rows, 0, length, L, 0, ungrouped=True)
    ig = steps * (forward(shape, rows, 0, length, L, unembed, ungrouped=True)
                  + backward(shape, rows, 0, length, L, unembed))
    contraction = extra(2.0 * rows * length * n_up * n_down * shape.d_model, n_up)  # [n_up, T d] x [T d, n_down]
    return nodes + ig + contraction


def eap_min(shape: ModelShape, length: int, n_answer: int, steps: int, n_edges: int) -> Flops:
    """Strictly needed for one sample: positions 0..T-2, forwards with grouped key/value heads, logits at the
    answer positions, the contraction over the edges only."""
    L, last = shape.n_layers, length - 1
    nodes = 2 * forward(shape, 1, 0, last, L, 0)
    ig = steps * (forward(shape, 1, 0, last, L, n_answer) + backward(shape, 1, 0, last, L, n_answer))
    return nodes + ig + extra(2.0 * last * n_edges * shape.d_model, last)


# ---- leave-one-out attribution ---------------------------------------------------------------------------------
def loo_naive(shape: ModelShape, items: Sequence[tuple[int, int, int]]) -> Flops:
    """(prompt length, answer length, attributed positions) per item: one full forward with logits everywhere
    for the clean pair and for each pair with one token deleted."""
    L = shape.n_layers
    return total(forward(shape, 1, 0, p + a, L, p + a) + n * forward(shape, 1, 0, p + a - 1, L, p + a - 1)
                 for p, a, n in items)


def loo_ours(shape: ModelShape, chunks: Sequence[tuple[int, int]]) -> Flops:
    """analysis.attribution.core.score_pairs: (rows, padded length) per chunk, logits everywhere."""
    return total(forward(shape, rows, 0, length, shape.n_layers, length) for rows, length in chunks)


def loo_min(shape: ModelShape, items: Sequence[tuple[int, int, int]]) -> Flops:
    """The clean pair up to its last read position; the pair without token i shares positions < i with it, so
    only positions i..p+a-3 are computed; logits at the answer positions."""
    L = shape.n_layers
    out = Flops()
    for p, a, n in items:
        out = out + forward(shape, 1, 0, p + a - 1, L, a)
        for i in range(p - n, p):
            out = out + forward(shape, 1, i, p + a - 2, L, a)
    return out


# ---- cross-model activation patching -------------------------------------------------------------------------
def patching_naive(shape: ModelShape, lengths: Sequence[int]) -> Flops:
    """benchmarks.bench_patching.naive_patch per sample: the source's run_with_cache and the original's clean
    run, then per layer a full hooked forward, all with logits everywhere."""
    L = shape.n_layers
    return total((L + 2) * forward(shape, 1, 0, T, L, T) for T in lengths)


def patching_ours(shape: ModelShape, n_rows: int, padded: int) -> Flops:
    """analysis.patching.engine.patch_logprobs: the source's run (no logits), the original's, and per layer l
    the blocks above l over every position with logits everywhere, all rows padded to one length."""
    L = shape.n_layers
    out = forward(shape, n_rows, 0, padded, L, 0) + forward(shape, n_rows, 0, padded, L, padded)
    return out + total(forward(shape, n_rows, 0, padded, L - 1 - layer, padded) for layer in range(L))


def patching_min(shape: ModelShape, pairs: Sequence[tuple[int, int]]) -> Flops:
    """Per (prompt, answer) lengths: the source's blocks and the original's, positions 0..T-2; per layer l the
    blocks above l; logits at the answer positions."""
    L = shape.n_layers
    out = Flops()
    for p, a in pairs:
        last = p + a - 1
        out = out + forward(shape, 1, 0, last, L, 0) + forward(shape, 1, 0, last, L, a)
        out = out + total(forward(shape, 1, 0, last, L - 1 - layer, a) for layer in range(L))
    return out


# ---- SAE restoration -----------------------------------------------------------------------------------------
def sae_flops(shape: ModelShape, d_sae: int, tokens: float) -> Flops:
    """Encode and (dense) decode of ``tokens`` positions."""
    return extra(4.0 * shape.d_model * d_sae * tokens, tokens)


def sae_naive(shape: ModelShape, lengths: Sequence[int], n_alphas: int, d_sae: int) -> Flops:
    """One full forward per (alpha, sample), logits everywhere, the SAE at every position."""
    L = shape.n_layers
    return total(n_alphas * (forward(shape, 1, 0, T, L, T) + sae_flops(shape, d_sae, T)) for T in lengths)


def sae_ours(shape: ModelShape, n_rows: int, padded: int, n_alphas: int, d_sae: int) -> Flops:
    """analysis.sae.restoration.steered_correct: every (alpha, sample) row in one padded forward."""
    rows = n_alphas * n_rows
    return (forward(shape, rows, 0, padded, shape.n_layers, padded)
            + extra(4.0 * shape.d_model * d_sae * rows * padded, rows * padded))


def sae_min(shape: ModelShape, pairs: Sequence[tuple[int, int]], n_alphas: int, d_sae: int, layer: int) -> Flops:
    """Per sample: blocks 0..layer once (they do not depend on alpha), the SAE once, then per alpha the blocks
    above it; positions 0..T-2, logits at the answer positions."""
    L = shape.n_layers
    out = Flops()
    for p, a in pairs:
        last = p + a - 1
        out = out + forward(shape, 1, 0, last, layer + 1, 0) + sae_flops(shape, d_sae, last)
        out = out + n_alphas * forward(shape, 1, 0, last, L - layer - 1, a)
    return out
