"""Edge attribution patching with integrated gradients (EAP-IG; Hanna et al. 2024), per sample, batched.

Score of edge ``u -> v`` for one sample::

    score(u -> v) = sum_t (a_u[t] - b_u[t]) . mean_k dM/dx_v[t] |_(alpha_k)

``a_u`` is node ``u``'s output on the clean run, ``b_u`` its baseline (``zero``: 0; ``mean``: the mean
output over the valid positions of a reference batch; ``corrupted``: its output on a corrupted run of the
same shape), ``x_v`` the downstream input (see :mod:`analysis.circuits.graph`) and ``M`` the metric.

Integrated gradients over the input (``ig_over="inputs"``, Hanna et al.'s EAP-IG over inputs, the
default): at step ``k`` the embeddings are set to ``e_b + alpha_k (e - e_b)`` and the model runs normally;
the gradient of the metric at every downstream input is taken by one batched backward per step and
averaged. The baseline run is the model on the baseline input (``zero``: all-zero embeddings; ``mean``:
the mean embedding over the valid positions of a reference batch; ``corrupted``: a corrupted batch of the
same shape), and ``b_u`` is node ``u``'s output in that run.

Integrated gradients over activations (``ig_over="activations"``, the CUD reference code's): node by
node, the clean run with node ``u``'s output alone set to ``b_u + alpha_k (a_u - b_u)`` (every node
after it recomputed); the gradients at the downstream inputs, averaged over the steps, score the edges
out of ``u``. One IG run per upstream node, so ``len(Graph.upstream)`` times the cost. For the input node
it is the same run as IG over inputs, so the edges out of ``input`` are equal in both. Completeness
(tested): the scores of all edges out of ``u`` sum to ``M(clean) - M(clean with u's output set to b_u)``,
because the gradient at ``u``'s output is the sum of the gradients at every later downstream input.

Interpolation points (``points``): ``midpoint``: ``alpha_k = (k + 1/2) / steps``, k = 0..steps-1 (the
default); ``endpoint``: ``alpha_k = k / steps``, k = 1..steps (the EAP-IG and CUD reference code's).

Completeness (tested): the input feeds every downstream input directly, so the scores of all edges out
of ``input`` sum to the integrated gradient of the embeddings, i.e. ``M(clean) - M(baseline run)`` up to
the quadrature error of the midpoint rule. With LayerNorm and the zero baseline most of the change
happens at very small ``alpha`` (LayerNorm undoes the scale), so a few steps approximate that integral
poorly; the CUD paper uses it anyway (5 steps, zero baseline), and so do the defaults here.

Grouped-query attention: while attributing, :func:`graph_mode` ungroups the key/value heads, so every query
head has its own key and value input (what a k / v edge into a query head means, and how the scores relate to
the shared key/value input: analysis.circuits.graph, "Grouped-query attention"). The forward is unchanged.
Blocks with a post-attention norm (Gemma 2/3, OLMo 2): a head's output is its share of the normalised
attention output (:func:`head_outputs`), and IG over a head's activations sets that share.

Positions are summed within a sample only; the metric of a row depends only on that row (causal
attention, right padding), so the scores of a batch equal the scores of the samples one at a time.

Metrics (higher = the model gives the answer more strongly):
``logprob``: mean log-prob of the answer tokens; ``prob``: length-normalised probability
``exp(mean log-prob)`` (the CUD paper's metric); ``logit_margin``: mean over answer tokens of the answer
token's logit minus the largest other logit. Each is one function registered in :data:`METRICS`; the
baselines are registered in :data:`BASELINES` (labels and option types: analysis.circuits.options).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from analysis import hooks
from analysis.circuits.graph import POST_NORM_ARCHITECTURES, QKV, Graph
from analysis.circuits.options import BASELINE_LABELS, METRIC_LABELS, EAPOptions
from analysis.circuits.result import Faithfulness
from analysis.errors import AnalysisInputError
from analysis.registry import Registry
from analysis.scoring import PairBatch, answer_logprob

MetricFn = Callable[[torch.Tensor, PairBatch], torch.Tensor]  # (logits [B, T, V], batch) -> [B], differentiable
METRICS: Registry[MetricFn] = Registry("metric")


@METRICS.register("prob", label=METRIC_LABELS["prob"])
def answer_prob(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """Length-normalised answer probability ``exp(mean log-prob of the answer tokens)`` (the CUD paper's)."""
    return answer_logprob(logits, batch, "mean").exp()


@METRICS.register("logprob", label=METRIC_LABELS["logprob"])
def answer_mean_logprob(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """Mean log-prob of the answer tokens."""
    return answer_logprob(logits, batch, "mean")


@METRICS.register("logit_margin", label=METRIC_LABELS["logit_margin"])
def logit_margin(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """Mean over the answer tokens of the answer token's logit minus the largest other logit."""
    lg = logits[:, :-1].float()
    tgt = batch.tokens[:, 1:]
    right = torch.gather(lg, 2, tgt[..., None]).squeeze(-1)
    other = lg.scatter(2, tgt[..., None], float("-inf")).max(-1).values
    margin = (right - other) * batch.target_mask
    return margin.sum(-1) / batch.answer_lens.clamp(min=1)


def metric_values(logits: torch.Tensor, batch: PairBatch, metric: str) -> torch.Tensor:
    """[B] the metric of each row (a name in :data:`METRICS`). Differentiable."""
    return METRICS.get(metric)(logits, batch)


@contextmanager
def graph_mode(model: Any) -> Iterator[None]:
    """Per-head results, split q/k/v inputs and the MLP-input hook on, and grouped key/value heads ungrouped
    (one key and one value input per query head: analysis.circuits.graph, "Grouped-query attention");
    every flag restored afterwards, also when the body raises (the model object may be shared)."""
    cfg = model.cfg
    old = (cfg.use_attn_result, cfg.use_split_qkv_input, cfg.use_hook_mlp_in,
           getattr(cfg, "ungroup_grouped_query_attention", False))
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    if not cfg.attn_only:
        model.set_use_hook_mlp_in(True)
    if getattr(cfg, "n_key_value_heads", None) is not None:
        cfg.ungroup_grouped_query_attention = True  # TL's set_ungroup_grouped_query_attention sets only this
    try:
        yield
    finally:
        model.set_use_attn_result(old[0])
        model.set_use_split_qkv_input(old[1])
        if not cfg.attn_only:
            model.set_use_hook_mlp_in(old[2])
        if getattr(cfg, "n_key_value_heads", None) is not None:
            cfg.ungroup_grouped_query_attention = old[3]


def _down_starts(g: Graph) -> list[int]:
    """Per layer: the downstream index of its first q input."""
    per = 3 * g.n_heads + int(g.has_mlp)
    return [layer * per for layer in range(g.n_layers)]


def post_norm(model: Any, layer: int) -> Any | None:
    """The RMS norm a block applies to its attention output before adding it to the residual stream (Gemma
    2/3's ``ln1_post``, OLMo 2's post-norm ``ln1``), or None (the usual pre-norm block)."""
    cfg, block = model.cfg, model.blocks[layer]
    if getattr(cfg, "use_normalization_before_and_after", False):
        return block.ln1_post
    if getattr(cfg, "original_architecture", None) in POST_NORM_ARCHITECTURES:
        return block.ln1
    return None


def head_outputs(model: Any, layer: int, result: torch.Tensor) -> torch.Tensor:
    """[B, T, heads, d] what each head of ``layer`` adds to the residual stream, from its ``hook_result``
    ``result``: that itself, or in a block with a post-attention RMS norm (:func:`post_norm`) the head's share
    of the normalised output, ``result_h * w / rms(sum_h result_h + b_O)`` with this run's rms (the shares
    and the bias's share ``b_O * w / rms``, zero in Gemma 2/3 and OLMo 2, add up to the attention output)."""
    norm = post_norm(model, layer)
    if norm is None:
        return result
    x = result.float().sum(2) + model.blocks[layer].attn.b_O.float()
    out = result.float() / (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()[:, :, None]
    w = getattr(norm, "w", None)  # RMSNormPre (weights folded) has none
    return (out if w is None else out * w.float()).to(result.dtype)


@torch.no_grad()
def node_outputs(model: Any, g: Graph, tokens: torch.Tensor, embed: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T, n_up, d_model] float32 outputs of every upstream node on a forward of ``tokens`` (with the
    embeddings replaced by ``embed`` [B, T, d] or [d] if given)."""
    first = hooks.resid_pre(0)  # the embeddings: hook_embed + hook_pos_embed
    names: set[str] = set()
    for layer in range(g.n_layers):
        names.add(hooks.attn_result(layer))
        if g.has_mlp:
            names.add(hooks.mlp_out(layer))
    cache: dict[str, torch.Tensor] = {}

    def keep(t: torch.Tensor, hook: Any) -> None:
        cache[hook.name] = t

    def set_embed(t: torch.Tensor, hook: Any) -> torch.Tensor:
        assert embed is not None
        cache[hook.name] = embed.to(t).expand_as(t)
        return cache[hook.name]

    fwd: list[tuple[str, Callable[..., Any]]] = [(first, keep if embed is None else set_embed)]
    fwd += [(n, keep) for n in sorted(names)]
    with graph_mode(model):
        model.run_with_hooks(tokens, fwd_hooks=fwd, return_type=None)
    parts = [cache[first][:, :, None]]
    for layer in range(g.n_layers):
        parts.append(head_outputs(model, layer, cache[hooks.attn_result(layer)]))
        if g.has_mlp:
            parts.append(cache[hooks.mlp_out(layer)][:, :, None])
    return torch.cat(parts, dim=2).float()


@dataclass(frozen=True)
class BaselineRun:
    """One EAP-IG baseline: ``outputs(model, g, batch, corrupted, reference)`` gives the [B, T, n_up, d] node
    outputs of its run, and the flags say what it needs besides the clean batch (the runner prepares it:
    corrupted tokens of the batch's shape, or a reference batch to average over)."""

    outputs: Callable[[Any, Graph, PairBatch, torch.Tensor | None, PairBatch | None], torch.Tensor]
    needs_corrupted: bool = False
    needs_reference: bool = False


BASELINES: Registry[BaselineRun] = Registry("baseline")


def _zero_run(model: Any, g: Graph, batch: PairBatch, corrupted: torch.Tensor | None,
              reference: PairBatch | None) -> torch.Tensor:
    return node_outputs(model, g, batch.tokens, torch.zeros(int(model.cfg.d_model)))


def _mean_run(model: Any, g: Graph, batch: PairBatch, corrupted: torch.Tensor | None,
              reference: PairBatch | None) -> torch.Tensor:
    if reference is None:
        raise AnalysisInputError("the mean baseline needs a reference batch to average over")
    emb = node_outputs(model, g, reference.tokens)[:, :, 0]
    valid = (torch.arange(emb.shape[1], device=emb.device)[None] < reference.lengths[:, None]).float()
    mean = (emb * valid[:, :, None]).sum((0, 1)) / valid.sum().clamp(min=1)
    return node_outputs(model, g, batch.tokens, mean)


def _corrupted_run(model: Any, g: Graph, batch: PairBatch, corrupted: torch.Tensor | None,
                   reference: PairBatch | None) -> torch.Tensor:
    if corrupted is None or corrupted.shape != batch.tokens.shape:
        raise AnalysisInputError("the corrupted baseline needs corrupted tokens of the clean batch's shape")
    return node_outputs(model, g, corrupted.to(batch.tokens.device))


BASELINES.add("zero", BaselineRun(_zero_run), label=BASELINE_LABELS["zero"])
BASELINES.add("mean", BaselineRun(_mean_run, needs_reference=True), label=BASELINE_LABELS["mean"])
BASELINES.add("corrupted", BaselineRun(_corrupted_run, needs_corrupted=True), label=BASELINE_LABELS["corrupted"])


def baseline_outputs(model: Any, g: Graph, batch: PairBatch, baseline: str, corrupted: torch.Tensor | None = None,
                     reference: PairBatch | None = None) -> torch.Tensor:
    """[B, T, n_up, d] node outputs of the baseline run (a name in :data:`BASELINES`; see the module
    docstring)."""
    return BASELINES.get(baseline).outputs(model, g, batch, corrupted, reference)


def node_site(g: Graph, u: int) -> tuple[str, int | None]:
    """Where upstream node ``u`` (an index into ``g.upstream``) writes its output: the hook name and, for an
    attention head, its head index in that hook's ``[B, T, heads, d]`` tensor (None otherwise)."""
    name = g.upstream[u]
    if name == "input":
        return hooks.resid_pre(0), None
    if name.startswith("m"):
        return hooks.mlp_out(int(name[1:])), None
    layer, head = name[1:].split(".h")
    return hooks.attn_result(int(layer)), int(head)


def ig_gradients(model: Any, g: Graph, batch: PairBatch, base_out: torch.Tensor, delta_out: torch.Tensor,
                 alphas: Sequence[float], metric: str, node: int = 0) -> torch.Tensor:
    """[B, T, n_down, d] sum over ``alphas`` of the gradients of the metric at every downstream input, with
    the output of upstream node ``node`` (default 0, the input embeddings) set to
    ``base_out + alpha * delta_out`` ([B, T, d] each) and the rest of the model run normally: all alphas in
    one batched forward and backward (rows stacked alpha-major). Downstream inputs that do not depend on the
    node (those before it) get a zero gradient."""
    k, b = len(alphas), batch.tokens.shape[0]
    a = torch.tensor(list(alphas), dtype=delta_out.dtype, device=delta_out.device)
    interp = (base_out[None] + a[:, None, None, None] * delta_out[None]).reshape(k * b, *delta_out.shape[1:])
    big = batch.repeat(k) if k > 1 else batch
    stored: dict[str, torch.Tensor] = {}
    site, head = node_site(g, node)
    node_layer = g.node_layer(g.upstream[node])  # -1 for the input
    normed = head is not None and post_norm(model, node_layer) is not None

    def set_node(t: torch.Tensor, hook: Any) -> torch.Tensor:
        x = interp.to(t.dtype).detach().requires_grad_(True)
        if head is None:
            return x
        out = t.clone()
        out[:, :, head] = x
        return out

    def keep_result(t: torch.Tensor, hook: Any) -> None:
        stored["result"] = t

    def set_share(t: torch.Tensor, hook: Any) -> torch.Tensor:
        """After a post-attention norm: the attention output with the head's share replaced."""
        share = head_outputs(model, node_layer, stored["result"])[:, :, head]
        return t - share.to(t.dtype) + interp.to(t.dtype)

    def keep(t: torch.Tensor, hook: Any) -> None:
        stored[hook.name] = t

    fwd: list[tuple[str, Callable[..., Any]]] = (
        [(site, keep_result), (hooks.attn_out(node_layer), set_share)] if normed else [(site, set_node)])
    order: list[str] = []
    wanted: list[str] = []  # the downstream inputs after the node (the only ones it feeds)
    for layer in range(g.n_layers):
        qkv = [hooks.attn_input(layer, x) for x in QKV]
        mlp = [hooks.mlp_in(layer)] if g.has_mlp else []
        fwd += [(n, keep) for n in qkv + mlp]
        order += qkv + mlp
        # a head feeds its layer's MLP, unless the two run in parallel
        mlp_after = layer > node_layer or (head is not None and layer == node_layer and not g.parallel)
        wanted += (qkv if layer > node_layer else []) + (mlp if mlp_after else [])
    last = hooks.resid_post(g.n_layers - 1)
    fwd.append((last, keep))
    order.append(last)
    wanted.append(last)
    with torch.enable_grad():
        logits = model.run_with_hooks(big.tokens, fwd_hooks=fwd, return_type="logits")
        total = metric_values(logits, big, metric).sum()
        got = dict(zip(wanted, torch.autograd.grad(total, [stored[n] for n in wanted], allow_unused=True),
                       strict=True))
    parts = []
    for name in order:
        gr = got.get(name)
        t = torch.zeros_like(stored[name]) if gr is None else gr
        parts.append(t.float() if t.dim() == 4 else t.float()[:, :, None])
    return torch.cat(parts, dim=2).reshape(k, b, *parts[0].shape[1:2], -1, parts[0].shape[-1]).sum(0)


def ig_alphas(steps: int, points: str = "midpoint") -> list[float]:
    """The interpolation points: ``midpoint`` (k + 1/2) / steps for k = 0..steps-1, ``endpoint`` k / steps
    for k = 1..steps (the reference code's)."""
    if points == "midpoint":
        return [(k + 0.5) / steps for k in range(steps)]
    if points == "endpoint":
        return [k / steps for k in range(1, steps + 1)]
    raise AnalysisInputError(f"unknown IG points {points!r} (expected one of midpoint, endpoint)")


def edge_scores(model: Any, batch: PairBatch, options: EAPOptions | None = None,
                corrupted: torch.Tensor | None = None, reference: PairBatch | None = None,
                max_rows: int | None = None) -> np.ndarray:
    """[B, E] EAP-IG scores of every edge (in :attr:`Graph.edges` order), one row per sample. The IG steps
    run stacked into as few forward/backward passes as ``max_rows`` rows allow (default: 64 rows on the
    CPU, where larger stacks ran slower on the organism — 0.62 s vs 0.44 s for 32 samples x 5 steps — and
    4096 on a GPU, where a pass is launch-bound)."""
    opts = options or EAPOptions()
    g = Graph.of(model)
    clean = node_outputs(model, g, batch.tokens)
    base = baseline_outputs(model, g, batch, opts.baseline, corrupted, reference)
    delta = clean - base
    alphas = ig_alphas(opts.steps, opts.points)
    rows = max_rows or (4096 if batch.tokens.is_cuda else 64)
    per_pass = max(1, rows // max(1, batch.tokens.shape[0]))

    def mean_gradients(node: int) -> torch.Tensor:
        """[B, T, n_down, d] the gradients averaged over the steps, IG over node ``node``'s output."""
        grad_sum: torch.Tensor | None = None
        with graph_mode(model):
            for i in range(0, len(alphas), per_pass):
                gk = ig_gradients(model, g, batch, base[:, :, node], delta[:, :, node], alphas[i:i + per_pass],
                                  opts.metric, node=node)
                grad_sum = gk if grad_sum is None else grad_sum + gk
        assert grad_sum is not None
        return (grad_sum / opts.steps).double()

    if opts.ig_over == "inputs":  # one IG run over the embeddings scores every edge
        full = torch.einsum("btud,btvd->buv", delta.double(), mean_gradients(0))  # [B, n_up, n_down]
    else:  # node by node: IG over node u's output scores the edges out of u
        full = torch.stack([torch.einsum("btd,btvd->bv", delta[:, :, u].double(), mean_gradients(u))
                            for u in range(len(g.upstream))], dim=1)
    pairs = torch.as_tensor(g.edge_pairs, device=full.device)
    return full[:, pairs[:, 0], pairs[:, 1]].cpu().numpy()


@torch.no_grad()
def run_with_edges(model: Any, batch: PairBatch, keep: np.ndarray | torch.Tensor, metric: str = "prob",
                   base: torch.Tensor | None = None) -> torch.Tensor:
    """[B] metric with every edge *not* kept ablated: along such an edge ``u -> v`` the input of ``v``
    receives ``u``'s baseline output instead of its current one (``x_v - (a_u - b_u)``, with ``a_u`` the
    output in this very run, so ablations upstream propagate). ``keep``: [E] or [B, E] bool.
    ``base``: baseline node outputs (default zero)."""
    g = Graph.of(model)
    dev = batch.tokens.device
    keep_t = torch.as_tensor(np.asarray(keep), dtype=torch.bool, device=dev)
    if keep_t.dim() == 1:
        keep_t = keep_t[None].expand(batch.tokens.shape[0], -1)
    if keep_t.shape[-1] != g.n_edges:
        raise AnalysisInputError(f"edge mask has {keep_t.shape[-1]} entries, the graph has {g.n_edges} edges")
    off = torch.zeros((keep_t.shape[0], len(g.upstream), len(g.downstream)), device=dev)
    pairs = torch.as_tensor(g.edge_pairs, device=dev)
    off[:, pairs[:, 0], pairs[:, 1]] = (~keep_t).float()
    outs: list[torch.Tensor] = []
    starts = _down_starts(g)

    def diff(n: int) -> torch.Tensor:
        cur = torch.cat(outs, dim=2)[:, :, :n].float()
        return cur if base is None else cur - base[:, :, :n].to(cur)

    def rec_input(t: torch.Tensor, hook: Any) -> None:
        outs.append(t[:, :, None])

    def rec_heads(layer: int) -> Callable[[torch.Tensor, Any], None]:
        def fn(t: torch.Tensor, hook: Any) -> None:
            outs.append(head_outputs(model, layer, t))
        return fn

    def rec_mlp(t: torch.Tensor, hook: Any) -> None:
        outs.append(t[:, :, None])

    def patch_qkv(layer: int, x: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        j0 = starts[layer] + x * g.n_heads

        def fn(t: torch.Tensor, hook: Any) -> torch.Tensor:
            n = g.n_up_before(f"a{layer}.h0.q")
            d = torch.einsum("btud,buh->bthd", diff(n), off[:, :n, j0: j0 + g.n_heads])
            return t - d.to(t.dtype)
        return fn

    def patch_single(j: int, name: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        def fn(t: torch.Tensor, hook: Any) -> torch.Tensor:
            n = g.n_up_before(name)
            d = torch.einsum("btud,bu->btd", diff(n), off[:, :n, j])
            return t - d.to(t.dtype)
        return fn

    fwd: list[tuple[str, Callable[..., Any]]] = [(hooks.resid_pre(0), rec_input)]
    for layer in range(g.n_layers):
        for x, name in enumerate(QKV):
            fwd.append((hooks.attn_input(layer, name), patch_qkv(layer, x)))
        fwd.append((hooks.attn_result(layer), rec_heads(layer)))
        if g.has_mlp:
            fwd.append((hooks.mlp_in(layer), patch_single(g.down_index[f"m{layer}"], f"m{layer}")))
            fwd.append((hooks.mlp_out(layer), rec_mlp))
    fwd.append((hooks.resid_post(g.n_layers - 1), patch_single(len(g.downstream) - 1, "logits")))
    with graph_mode(model):
        logits = model.run_with_hooks(batch.tokens, fwd_hooks=fwd, return_type="logits")
    return metric_values(logits, batch, metric)


# The smallest (full - empty) metric gap for which faithfulness is reported. Below it the model does not
# produce the metric above the all-ablated level (e.g. an unlearned model that no longer gives the answer),
# there is nothing for a circuit to recover, and the ratio is noise (it reached -24 on such models).
MIN_GAP: dict[str, float] = {"prob": 0.01, "logprob": 0.1, "logit_margin": 0.1}


def faithfulness(model: Any, batch: PairBatch, keep: np.ndarray, metric: str = "prob",
                 base: torch.Tensor | None = None) -> Faithfulness:
    """The :class:`~analysis.circuits.result.Faithfulness` of the circuit ``keep`` ([E] or [B, E] bool) per
    row, edges outside it ablated to ``base`` (default zero)."""
    g = Graph.of(model)
    n = batch.tokens.shape[0]
    with torch.no_grad():
        full = metric_values(model(batch.tokens, return_type="logits"), batch, metric)
    circ = run_with_edges(model, batch, keep, metric, base)
    empty = run_with_edges(model, batch, np.zeros((n, g.n_edges), dtype=bool), metric, base)
    f, c, e = (x.double().cpu().numpy() for x in (full, circ, empty))
    faith: list[float | None] = []
    notes: list[str | None] = []
    for fi, ci, ei in zip(f, c, e, strict=True):
        if fi - ei < MIN_GAP[metric]:
            faith.append(None)
            notes.append(f"undefined: the model's {metric} ({fi:.3g}) is not above the all-edges-ablated "
                         f"{metric} ({ei:.3g}) by {MIN_GAP[metric]:g}, so there is nothing for a circuit to recover")
        else:
            faith.append(float((ci - ei) / (fi - ei)))
            notes.append(None)
    return Faithfulness(f.tolist(), c.tolist(), e.tolist(), faith, notes)
