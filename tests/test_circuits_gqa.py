"""Issue 16: EAP-IG and CUD on grouped-query attention (GQA) models, and on the other blocks of the
architectures issue 16 loads (multi-query, post-attention norms, parallel attention + MLP).

The reference is a naive loop written from the definitions (analysis/circuits/eap.py, graph.py): one sample,
one IG step, one forward at a time, attention computed head by head in plain torch from the model's weights
(each query head reads its group's *unrepeated* key/value weights ``_W_K`` / ``_W_V``), and every downstream
input a tensor of its own (the residual stream plus a zero leaf), so that autograd gives the gradient at each
input separately. It shares with the engine only TransformerLens' embedding, norm, MLP, rotary and unembedding
modules, each called directly (none of the hooks, split q/k/v inputs, per-head results or key/value ungrouping
that the engine relies on)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from analysis.circuits.eap import (
    edge_scores,
    faithfulness,
    graph_mode,
    ig_alphas,
    metric_values,
    run_with_edges,
)
from analysis.circuits.graph import POST_NORM_ARCHITECTURES, Graph
from analysis.circuits.options import CUDOptions, EAPOptions
from analysis.circuits.selection import edge_mask, greedy_circuit
from analysis.errors import AnalysisInputError
from analysis.scoring import PairBatch, batch_from_ids

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5  # the issue's: EAP-IG and CUD equal the naive reference to 1e-5
# different lengths, a 2-token answer, one longer than the sliding windows of the tiny checkpoints (8)
PAIRS = [([1, 5, 9, 7, 11], [4]), ([1, 6, 3], [8, 10]), ([1, 2, 10, 4, 9, 3, 7, 5, 11, 2], [6])]
CORRUPT = {1: 9, 5: 2, 6: 9, 2: 6}  # token -> its corrupted replacement (same shape, so positions are unchanged)


# ---- models -------------------------------------------------------------------------------------------------
def _tl_gqa(seed: int = 0, n_kv: int = 2) -> HookedTransformer:
    """A random 2-layer Llama-style HookedTransformer (RMSNorm, rotary, gated MLP) with 4 query heads in
    ``n_kv`` key/value groups; every parameter (norm gains, biases included) gets seeded noise."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=16, d_head=4, n_heads=4, n_key_value_heads=n_kv,
                                  d_vocab=12, d_mlp=32, act_fn="silu", gated_mlp=True, normalization_type="RMS",
                                  positional_embedding_type="rotary", rotary_dim=4, device="cpu", seed=seed)
    m = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(m.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return m.eval()


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> TinyDirs:
    return TinyDirs(tmp_path_factory.mktemp("gqa"))


class TinyDirs:
    """Tiny random Hugging Face checkpoints (tests/hf_fixtures.py), written on first use, and their models
    loaded once (the tests leave them as they found them: graph_mode restores its flags)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: dict[str, Path] = {}
        self.models: dict[str, HookedTransformer] = {}

    def __getitem__(self, arch: str) -> Path:
        from tests.hf_fixtures import make_tiny_checkpoint

        if arch not in self.made:
            self.made[arch] = make_tiny_checkpoint(arch, self.root / f"tiny-{arch}")
        return self.made[arch]

    def model(self, arch: str) -> HookedTransformer:
        from analysis.models import load_model

        if arch not in self.models:
            self.models[arch] = load_model(self[arch], device="cpu").model
        return self.models[arch]


# name -> what it brings: the HookedTransformer above, or a tiny checkpoint through the workbench's loader
MODELS = {
    "tl": "GQA, 4 query heads in 2 groups (RMSNorm, rotary, gated MLP)",
    "llama": "GQA 4/2 (Llama 3.x, converted from a transformers checkpoint)",
    "qwen2": "GQA 4/2 with q/k/v biases (repeated with the key/value weights)",
    "qwen3": "GQA 4/2 with a q/k norm per head, head_dim * heads != d_model",
    "mistral": "GQA 4/2 with a sliding window shorter than the longest input",
    "gemma": "multi-query attention (1 key/value head)",
    "gemma2": "GQA 4/2, post-attention norms, attention and logit soft caps, local/global layers",
    "gemma3": "multi-query, post-attention norms, q/k norms, local/global rotary bases",
    "olmo2": "post-norm blocks (no norm before the attention), a q/k norm over all heads",
    "pythia": "parallel attention + MLP, multi-head",
}


def _model(name: str, tiny_dirs: TinyDirs) -> HookedTransformer:
    """A model of :data:`MODELS`."""
    return _tl_gqa() if name == "tl" else tiny_dirs.model(name)


# ---- the naive reference ------------------------------------------------------------------------------------
def _embed(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """[1, T, d] the input node's output (what ``blocks.0.hook_resid_pre`` reads)."""
    with torch.no_grad():
        e = model.embed(tokens)
        if model.cfg.positional_embedding_type == "standard":
            e = e + model.pos_embed(tokens)
    return e


def _kv_weights(attn: Any) -> tuple[torch.Tensor, ...]:
    """The key/value weights as stored: one per key/value head (``_W_K``) under GQA, else per head."""
    if hasattr(attn, "_W_K"):
        return attn._W_K, attn._b_K, attn._W_V, attn._b_V
    return attn.W_K, attn.b_K, attn.W_V, attn.b_V


def naive_forward(model: HookedTransformer, embed: torch.Tensor, override: tuple[str, torch.Tensor] | None = None,
                  patch: dict[str, torch.Tensor] | None = None, grouped: bool = False
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(logits [1, T, V], {node: output [1, T, d]}, {downstream input: its zero leaf}). ``override`` sets one
    node's output; ``patch`` adds a tensor to named downstream inputs. ``grouped``: the heads of a key/value
    group read one shared key (value) input ``a{l}.kv{j}.k`` (``.v``) instead of one each. Post-norm blocks
    (Gemma 2/3, OLMo 2): a head's output is its share ``result_h * w / rms`` of the normalised attention
    output (analysis/circuits/graph.py)."""
    cfg = model.cfg
    olmo = cfg.original_architecture in POST_NORM_ARCHITECTURES  # post-norm: no norm before the attention
    assert cfg.positional_embedding_type in ("standard", "rotary"), "outside what this reference models"
    patch = patch or {}
    outs: dict[str, torch.Tensor] = {}
    leaves: dict[str, torch.Tensor] = {}

    def emit(name: str, value: torch.Tensor) -> torch.Tensor:
        out = override[1] if override is not None and override[0] == name else value
        outs[name] = out
        return out

    def read(name: str, resid: torch.Tensor) -> torch.Tensor:
        if name not in leaves:
            leaves[name] = torch.zeros_like(resid, requires_grad=True)
        return resid + leaves[name] + patch.get(name, 0.0)

    t = embed.shape[1]
    pos = torch.arange(t)
    resid = emit("input", embed)
    n_heads = cfg.n_heads
    per_group = n_heads // (cfg.n_key_value_heads or n_heads)
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        w_k, b_k, w_v, b_v = _kv_weights(attn)
        pre = (lambda x: x) if olmo else block.ln1
        q_, k_, v_ = [], [], []
        for h in range(n_heads):
            j = h // per_group  # the key/value head query head h reads
            names = {x: (f"a{layer}.kv{j}.{x}" if grouped and x != "q" else f"a{layer}.h{h}.{x}") for x in "qkv"}
            q_.append(pre(read(names["q"], resid)) @ attn.W_Q[h] + attn.b_Q[h])
            k_.append(pre(read(names["k"], resid)) @ w_k[j] + b_k[j])
            v_.append(pre(read(names["v"], resid)) @ w_v[j] + b_v[j])
        q, k, v = (torch.stack(x, dim=2) for x in (q_, k_, v_))  # [1, T, heads, d_head]
        if olmo and attn.q_norm is not None:  # OLMo 2: one norm over all heads' projections
            q, k = attn.q_norm(q.flatten(2)).view_as(q), attn.k_norm(k.flatten(2)).view_as(k)
        elif cfg.use_qk_norm:  # Qwen3, Gemma 3: a norm per head
            q, k = attn.q_norm(q), attn.k_norm(k)
        if cfg.positional_embedding_type == "rotary":
            q, k = attn.apply_rotary(q), attn.apply_rotary(k)
        allowed = pos[None, :] <= pos[:, None]
        if attn.attn_type == "local":  # a sliding window
            allowed &= pos[None, :] > pos[:, None] - cfg.window_size
        results = []
        for h in range(n_heads):
            scores = q[:, :, h] @ k[:, :, h].transpose(-1, -2) / attn.attn_scale
            if cfg.attn_scores_soft_cap > 0:
                scores = cfg.attn_scores_soft_cap * torch.tanh(scores / cfg.attn_scores_soft_cap)
            pattern = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
            results.append(pattern @ v[:, :, h] @ attn.W_O[h])
        total = sum(results) + attn.b_O
        norm = block.ln1_post if cfg.use_normalization_before_and_after else block.ln1 if olmo else None
        if norm is None:
            attn_out, shares = total, results
        else:  # what each head adds to the stream: its share of the normalised output
            attn_out = norm(total)
            rms = (total.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
            shares = [r / rms * norm.w for r in results]
        for h, share in enumerate(shares):
            attn_out = attn_out + (emit(f"a{layer}.h{h}", share) - share)
        if cfg.attn_only:
            resid = resid + attn_out
            continue

        def mlp(x: torch.Tensor, block: Any = block) -> torch.Tensor:
            return block.apply_mlp(x if olmo else block.ln2(x))  # OLMo's ln2 comes after the MLP

        if cfg.parallel_attn_mlp:  # the MLP reads the stream before this layer's heads
            resid = resid + attn_out + emit(f"m{layer}", mlp(read(f"m{layer}", resid)))
        else:
            mid = resid + attn_out
            resid = mid + emit(f"m{layer}", mlp(read(f"m{layer}", mid)))
    x = read("logits", resid)
    logits = model.unembed(x if cfg.normalization_type is None else model.ln_final(x))
    if cfg.output_logits_soft_cap > 0:
        logits = cfg.output_logits_soft_cap * torch.tanh(logits / cfg.output_logits_soft_cap)
    return logits, outs, leaves


def _one(pair: tuple[list[int], list[int]]) -> PairBatch:
    return batch_from_ids([pair], pad_id=0, n_ctx=64)


def _corrupted_tokens(batch: PairBatch) -> torch.Tensor:
    return torch.tensor([[CORRUPT.get(int(x), int(x)) for x in row] for row in batch.tokens])


def naive_scores(model: HookedTransformer, pairs: list[tuple[list[int], list[int]]], opts: EAPOptions,
                 reference: list[tuple[list[int], list[int]]] | None = None, grouped: bool = False
                 ) -> list[dict[tuple[str, str], float]]:
    """Per sample {(src, dst): score} of every pair of an upstream node and a downstream input after it (with
    ``grouped``, the shared key/value inputs ``a{l}.kv{j}.k`` / ``.v`` instead of the per-head ones), by the
    definitions: sum over positions of (a_u - b_u) . the mean over the IG steps of dM/dx_v, one step at a time."""
    out: list[dict[tuple[str, str], float]] = []
    for pair in pairs:
        b1 = _one(pair)
        clean = _embed(model, b1.tokens)
        if opts.baseline == "zero":
            base_embed = torch.zeros_like(clean)
        elif opts.baseline == "corrupted":
            base_embed = _embed(model, _corrupted_tokens(b1))
        else:  # mean: the mean input embedding over every position of the reference samples
            assert reference is not None
            embs = torch.cat([_embed(model, _one(r).tokens)[0] for r in reference])
            base_embed = embs.mean(0).expand_as(clean)
        out.append(_naive_sample(model, b1, clean, base_embed, opts, grouped))
    return out


def _naive_sample(model: HookedTransformer, b1: PairBatch, clean: torch.Tensor, base_embed: torch.Tensor,
                  opts: EAPOptions, grouped: bool) -> dict[tuple[str, str], float]:
    """:func:`naive_scores` of one sample (``b1``, its embeddings ``clean``, the baseline's ``base_embed``)."""
    with torch.no_grad():
        _, a, _ = naive_forward(model, clean, grouped=grouped)
        _, b, _ = naive_forward(model, base_embed, grouped=grouped)
    alphas = ig_alphas(opts.steps, opts.points)

    def mean_grads(node: str | None) -> dict[str, torch.Tensor]:
        total: dict[str, torch.Tensor] = {}
        for alpha in alphas:
            if node is None:  # IG over the inputs: the embeddings interpolated, the model run normally
                logits, _, leaves = naive_forward(model, base_embed + alpha * (clean - base_embed), grouped=grouped)
            else:  # IG over the node's activations: its output alone interpolated, on the clean run
                value = b[node] + alpha * (a[node] - b[node])
                logits, _, leaves = naive_forward(model, clean, override=(node, value), grouped=grouped)
            metric = metric_values(logits, b1, opts.metric).sum()
            grads = torch.autograd.grad(metric, list(leaves.values()), allow_unused=True)
            for name, gr in zip(leaves, grads, strict=True):
                gr = torch.zeros_like(leaves[name]) if gr is None else gr
                total[name] = total.get(name, 0.0) + gr.double() / len(alphas)
        return total

    scores: dict[tuple[str, str], float] = {}
    shared = mean_grads(None) if opts.ig_over == "inputs" else {}
    for u in a:
        for v, gr in (shared or mean_grads(u)).items():
            scores[(u, v)] = float(((a[u] - b[u]).double() * gr).sum())
    return scores


def _as_vector(g: Graph, scores: dict[tuple[str, str], float]) -> np.ndarray:
    return np.array([scores[(e.src, e.dst)] for e in g.edges])


def _engine(model: HookedTransformer, pairs: list[tuple[list[int], list[int]]], opts: EAPOptions,
            reference: list[tuple[list[int], list[int]]] | None = None) -> np.ndarray:
    batch = batch_from_ids(pairs, pad_id=0, n_ctx=64)
    ref = batch_from_ids(reference, pad_id=0, n_ctx=64) if reference else None
    return edge_scores(model, batch, opts, corrupted=_corrupted_tokens(batch), reference=ref)


REFERENCE = [([1, 3, 8], [2]), ([1, 7, 4, 9], [5])]
OPTIONS = {
    "inputs-zero-logprob": EAPOptions(metric="logprob", steps=3, baseline="zero"),
    "inputs-mean-margin": EAPOptions(metric="logit_margin", steps=2, baseline="mean"),
    "activations-corrupted-prob": EAPOptions(metric="prob", steps=2, baseline="corrupted", points="endpoint",
                                             ig_over="activations"),
}


# ---- the graph and the flags --------------------------------------------------------------------------------
def test_graph_of_gqa_models(tiny_dirs: TinyDirs) -> None:
    g = Graph.of(_tl_gqa())
    assert (g.n_heads, g.n_kv_heads, g.parallel) == (4, 2, False)
    assert [g.kv_head(h) for h in range(4)] == [0, 0, 1, 1]
    assert [Graph.of(_tl_gqa(n_kv=1)).kv_head(h) for h in range(4)] == [0, 0, 0, 0]
    mha = Graph(2, 4, True)
    assert g.edges == mha.edges and g.n_edges == mha.n_edges == 110  # the query heads' graph, one k/v input each
    assert [mha.kv_head(h) for h in range(4)] == [0, 1, 2, 3]
    assert Graph.of(_model("llama", tiny_dirs)).n_kv_heads == 2
    pythia = Graph.of(_model("pythia", tiny_dirs))
    assert pythia.parallel and pythia.n_kv_heads is None
    # a parallel layer's MLP reads the stream before its heads: no a{l}.h -> m{l} edges
    assert ("a1.h0", "m1") not in {(e.src, e.dst) for e in pythia.edges} and pythia.n_edges == 110 - 2 * 4
    with pytest.raises(AnalysisInputError, match="multiple of n_key_value_heads"):
        Graph(2, 4, True, n_kv_heads=3)
    from transformer_lens.utilities import architectures

    assert POST_NORM_ARCHITECTURES == architectures.POST_NORM_ARCHITECTURES  # the graph's copy of TL's list
    base = {"n_layers": 2, "n_heads": 4, "attn_only": False, "n_key_value_heads": None, "parallel_attn_mlp": False,
            "use_normalization_before_and_after": False, "normalization_type": "RMS"}
    for cfg, refusal in (({"original_architecture": "Gemma2ForCausalLM", "use_normalization_before_and_after": True,
                           "normalization_type": "LN"}, "a LayerNorm after the attention"),
                         ({"original_architecture": "Olmo2ForCausalLM", "n_key_value_heads": 2},
                          "Olmo2ForCausalLM with grouped-query attention")):
        with pytest.raises(AnalysisInputError, match=refusal):
            Graph.of(SimpleNamespace(cfg=SimpleNamespace(**{**base, **cfg})))
        assert Graph.of(SimpleNamespace(cfg=SimpleNamespace(**{**base, **cfg, "normalization_type": "RMS",
                                                                "n_key_value_heads": None}))).n_heads == 4


def test_post_norm_head_outputs_add_up_to_the_attention_output(tiny_dirs: TinyDirs) -> None:
    """In a post-norm block (Gemma 2) a head's output is its share of the normalised attention output: the
    shares add up to hook_attn_out, and differ from the heads' hook_result."""
    from analysis import hooks
    from analysis.circuits.eap import head_outputs, post_norm

    model = _model("gemma2", tiny_dirs)
    assert post_norm(model, 0) is model.blocks[0].ln1_post and post_norm(_tl_gqa(), 0) is None
    tokens = batch_from_ids(PAIRS, pad_id=0, n_ctx=64).tokens
    with graph_mode(model), torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_result", "hook_attn_out")))
    for layer in range(model.cfg.n_layers):
        result = cache[hooks.attn_result(layer)]
        shares = head_outputs(model, layer, result)
        torch.testing.assert_close(shares.sum(2), cache[hooks.attn_out(layer)], atol=1e-5, rtol=1e-5)
        assert (shares - result).abs().max() > 1e-2


def test_graph_mode_ungroups_without_changing_the_forward_and_restores_the_flags() -> None:
    m = _tl_gqa()
    tokens = batch_from_ids(PAIRS, pad_id=0, n_ctx=16).tokens
    flags = ("use_attn_result", "use_split_qkv_input", "use_hook_mlp_in", "ungroup_grouped_query_attention")
    before = {f: getattr(m.cfg, f) for f in flags}
    assert not any(before.values())
    with torch.no_grad():
        plain = m(tokens)
    shapes: dict[str, tuple[int, ...]] = {}
    with graph_mode(m), torch.no_grad():
        assert all(getattr(m.cfg, f) for f in flags)
        logits = m.run_with_hooks(tokens, fwd_hooks=[(n, lambda t, hook: shapes.update({hook.name: t.shape}))
                                                     for n in ("blocks.0.hook_k_input", "blocks.0.hook_v_input")])
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)  # the copies are equal: the same forward
    assert set(shapes.values()) == {(3, tokens.shape[1], 4, 16)}  # one key/value input per query head
    assert {f: getattr(m.cfg, f) for f in flags} == before
    with pytest.raises(RuntimeError, match="boom"), graph_mode(m):
        raise RuntimeError("boom")
    assert {f: getattr(m.cfg, f) for f in flags} == before  # restored when the body raises too
    edge_scores(m, batch_from_ids(PAIRS, pad_id=0, n_ctx=16), EAPOptions(steps=1))
    assert {f: getattr(m.cfg, f) for f in flags} == before


# ---- EAP-IG equals the naive loop ---------------------------------------------------------------------------
@pytest.mark.parametrize("which", list(OPTIONS))
@pytest.mark.parametrize("name", list(MODELS))
def test_eap_ig_equals_the_naive_loop(name: str, which: str, tiny_dirs: TinyDirs) -> None:
    """Batched EAP-IG (every baseline, both IG modes, every metric) equals the per-sample, per-step,
    per-head naive loop to 1e-5 on every model of MODELS: grouped-query, multi-query, post-norm and
    parallel blocks."""
    model, opts = _model(name, tiny_dirs), OPTIONS[which]
    g = Graph.of(model)
    got = _engine(model, PAIRS, opts, REFERENCE)
    want = np.stack([_as_vector(g, s) for s in naive_scores(model, PAIRS, opts, REFERENCE)])
    assert np.abs(want).max() > 1e-3  # scores well above the tolerance: the comparison means something
    diff = np.abs(got - want).max()
    assert diff <= TOL, f"{name} {which}: max |engine - naive| = {diff:.3g}"


def test_kv_edges_of_a_group_sum_to_the_shared_input() -> None:
    """What a k (v) edge into query head h means under GQA: the scores of u's k (v) edges into the heads of
    one key/value group sum to the score of u's edge into the group's shared key (value) input (the naive
    loop with the input shared, as the grouped model computes it), and the heads of a group differ."""
    model = _tl_gqa()
    g = Graph.of(model)
    opts = OPTIONS["inputs-zero-logprob"]
    per_head = _engine(model, PAIRS, opts)
    grouped = naive_scores(model, PAIRS, opts, grouped=True)
    index = {(e.src, e.dst): i for i, e in enumerate(g.edges)}
    spread = 0.0
    for row, shared in enumerate(grouped):
        for (src, dst), want in shared.items():
            if ".kv" not in dst:
                continue
            layer, j, x = int(dst[1]), int(dst.split(".kv")[1][0]), dst[-1]
            heads = [h for h in range(g.n_heads) if g.kv_head(h) == j]
            if (src, f"a{layer}.h{heads[0]}.{x}") not in index:  # not an edge (src after the layer)
                continue
            parts = [per_head[row, index[src, f"a{layer}.h{h}.{x}"]] for h in heads]
            assert abs(sum(parts) - want) <= TOL, (src, dst)
            spread = max(spread, max(parts) - min(parts))
    assert spread > 1e-3  # the heads of a group read the shared keys / values differently


# ---- ablations and faithfulness -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tl", "gemma2"])
def test_one_kv_edge_ablated_equals_the_naive_patch(name: str, tiny_dirs: TinyDirs) -> None:
    """Removing the edge u -> a1.h{h}.k (.v) gives head h alone u's baseline output in its keys (values): the
    naive forward with that head's input patched by -(a_u - b_u); the other head of the group is untouched.
    On gemma2 the heads' outputs are their shares after the post-attention norm."""
    model = _model(name, tiny_dirs)
    g = Graph.of(model)
    pair = PAIRS[0]
    b1 = _one(pair)
    clean = _embed(model, b1.tokens)
    with torch.no_grad():
        _, a, _ = naive_forward(model, clean)
        _, b, _ = naive_forward(model, torch.zeros_like(clean))
        full = metric_values(naive_forward(model, clean)[0], b1, "logprob")
    base = torch.stack([b[n] for n in g.upstream], dim=2)  # [1, T, n_up, d]: the zero run's node outputs
    index = {(e.src, e.dst): i for i, e in enumerate(g.edges)}
    effects = {}
    for src, dst in (("a0.h2", "a1.h0.k"), ("a0.h2", "a1.h1.k"), ("input", "a1.h1.v"), ("m0", "a1.h3.v")):
        keep = np.ones(g.n_edges, dtype=bool)
        keep[index[src, dst]] = False
        got = run_with_edges(model, b1, keep, "logprob", base)
        with torch.no_grad():
            want = metric_values(naive_forward(model, clean, patch={dst: -(a[src] - b[src])})[0], b1, "logprob")
        torch.testing.assert_close(got, want, atol=TOL, rtol=0)
        effects[dst] = float((full - want).abs())
        assert effects[dst] > 1e-4, (src, dst)  # the ablation does something
    assert abs(effects["a1.h0.k"] - effects["a1.h1.k"]) > 1e-5  # two heads of one group, two different edges


def test_faithfulness_of_a_top_n_circuit_on_gqa(tiny_dirs: TinyDirs) -> None:
    """The greedy top-n circuit of a GQA model's scores: faithfulness computed; every edge kept is the full
    model and none kept is the baseline run (known answers from the naive forward)."""
    model = _model("llama", tiny_dirs)
    g = Graph.of(model)
    with torch.no_grad():  # answers the model gives (its top next token), so the circuit has something to keep
        pairs = [(p, [int(model(torch.tensor([p]))[0, -1].argmax())]) for p, _ in PAIRS]
    batch = batch_from_ids(pairs, pad_id=0, n_ctx=64)
    opts = EAPOptions(metric="logprob", steps=3)
    scores = edge_scores(model, batch, opts)
    keep = np.stack([edge_mask(g, greedy_circuit(g, s, 20)) for s in scores])
    f = faithfulness(model, batch, keep, "logprob")
    full, empty = [], []
    for pair in pairs:
        b1 = _one(pair)
        clean = _embed(model, b1.tokens)
        with torch.no_grad():
            full.append(float(metric_values(naive_forward(model, clean)[0], b1, "logprob")))
            empty.append(float(metric_values(naive_forward(model, torch.zeros_like(clean))[0], b1, "logprob")))
    np.testing.assert_allclose(f.full, full, atol=TOL)
    np.testing.assert_allclose(f.empty, empty, atol=TOL)  # every edge ablated to the zero run: that run
    assert all(x is not None and np.isfinite(x) for x in f.faithfulness), f.notes
    assert len(set(np.round(f.circuit, 6))) == len(pairs)  # per-row circuits, per-row metrics
    every = faithfulness(model, batch, np.ones(g.n_edges, dtype=bool), "logprob")
    np.testing.assert_allclose(every.circuit, every.full, atol=TOL)
    np.testing.assert_allclose(every.faithfulness, 1.0, atol=1e-4)


# ---- CUD end to end -----------------------------------------------------------------------------------------
def _gqa_study(tmp: Path, llama_dir: Path) -> Any:
    """A study whose original is the tiny GQA Llama: 8 forget and 4 retain samples, three unlearned models
    (copies of the original; only their recorded difficulty is read) whose trajectories rank the forget
    samples in the same order, so the labels are known."""
    from analysis.study import Study

    names = ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu"]
    rows = [{"id": f"s{i}", "prompt": f"{n} lives in", "answer": f" {'Rome Oslo Lima Baku'.split()[i % 4]}",
             "subject": n, "relation": "home"} for i, n in enumerate(names)]
    (tmp / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    (tmp / "retain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[8:]))
    traj = np.vstack([np.full(8, 0.9), np.linspace(0.1, 0.8, 8), np.linspace(0.05, 0.7, 8)])
    unlearned = {}
    for method in ("ga", "npo", "rmu"):
        d = shutil.copytree(llama_dir, tmp / f"tiny-llama-{method}")
        (d / "unlearning.json").write_text(json.dumps({"forget_ids": [f"s{i}" for i in range(8)],
                                                       "trajectory": traj.tolist()}))
        unlearned[method] = d
    return Study.create(tmp / "study", original=llama_dir, unlearned=unlearned, forget=tmp / "forget.jsonl",
                        retain=tmp / "retain.jsonl")


@pytest.mark.parametrize("setting", ["ours", "reference"])
def test_cud_on_a_gqa_study_equals_the_naive_reference(setting: str, tmp_path: Path,
                                                       tiny_dirs: TinyDirs) -> None:
    """`score_study` on a study whose original is a GQA Llama: the stored per-sample edge scores equal the
    naive loop's to 1e-5, and so do the out-of-fold CUD scores computed from the naive edge scores (greedy
    top-n circuits, circuit vectors, anchors of the setting, cross-validation)."""
    from analysis.circuits.cud import circuit_vectors, cross_validate, mean_anchor, top_n_anchor
    from analysis.circuits.runner import sample_edge_scores, score_study
    from analysis.scoring import encode_pair

    study = _gqa_study(tmp_path, tiny_dirs["llama"])
    opts = CUDOptions(top_n=12, folds=2, setting=setting, eap=EAPOptions(steps=2))  # type: ignore[arg-type]
    rep = score_study(study, opts)
    assert rep.labels == [-1, -1, -1, 0, 0, 1, 1, 1]  # the trajectories' order (quantile 0.3)
    handle = study.load("original")
    g = Graph.of(handle.model)
    assert g.n_kv_heads == 2
    pairs = [encode_pair(handle.tokenizer, s.prompt, s.answer, handle.prepend_bos) for s in study.forget]
    want = np.stack([_as_vector(g, s) for s in naive_scores(handle.model, pairs, opts.scoring_eap)])
    stored = sample_edge_scores(study, "original", rep.ids, opts.scoring_eap)
    got = np.stack([stored[i] for i in rep.ids])
    scale = np.abs(want).max()
    assert scale > 1e-3 and np.abs(got - want).max() <= min(TOL, 1e-3 * scale)  # also relative to the scores
    circuits = [greedy_circuit(g, s, opts.top_n) for s in want]
    vecs = circuit_vectors(want, circuits, opts.vector)
    labels = np.array(rep.labels)
    if setting == "reference":
        def anchor(rows: np.ndarray) -> np.ndarray:
            return top_n_anchor(want[rows], lambda s: greedy_circuit(g, s, opts.top_n), opts.vector)
    else:
        def anchor(rows: np.ndarray) -> np.ndarray:
            return mean_anchor(vecs[rows])
    naive_cud = cross_validate(vecs, labels, opts.distance, folds=opts.folds, seed=opts.seed, anchor=anchor)
    np.testing.assert_allclose(rep.cud, naive_cud, atol=TOL)
    assert rep.options["setting"] == setting and {"spearman", "auroc"} <= set(rep.validation)
    assert len(set(np.round(rep.cud, 6))) > 1  # CUD separates the samples
