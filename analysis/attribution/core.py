"""The attribution engine: leave-one-out contributions of every prompt token of many prompts in as few
batched forwards as memory allows, the gradient views (input x gradient, integrated gradients) written
with torch autograd, and the KeyTokens rule. The attribution methods (``loo``, ``grad``, ``ig``) and the
leave-one-out ablations (``delete``, ``replace``) are registered here, into the registries declared in
analysis.attribution.options (ATTRIBUTION_METHODS, ABLATIONS).

Token ids come from analysis.scoring.encode_pair and rows are built with analysis.scoring.batch_from_ids
(right-padded; exact for causal models), so an ablated prompt is scored exactly as the clean one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformer_lens.hook_points import HookPoint

from analysis.attribution.options import (
    ABLATION_LABELS,
    ABLATIONS,
    ATTRIBUTION_METHODS,
    AttributionOptions,
    neutral_token_id,
)
from analysis.errors import AnalysisInputError
from analysis.hooks import EMBED
from analysis.models.handle import ModelHandle
from analysis.scoring import (
    PairBatch,
    answer_correct,
    answer_logprob,
    batch_from_ids,
    default_batch_size,
    encode_pair,
    pad_id,
)

HookFn = Callable[[torch.Tensor, HookPoint], torch.Tensor]
# Hooks for one chunk of rows: (row indices into the scored list, the chunk's batch) -> TransformerLens hooks.
HooksFor = Callable[[Sequence[int], PairBatch], list[tuple[str, HookFn]]]
Pair = tuple[list[int], list[int]]


@dataclass(frozen=True)
class PromptIds:
    """A (prompt, answer) pair as token ids. The first ``n_fixed`` prompt tokens (BOS) are never ablated."""

    prompt: tuple[int, ...]
    answer: tuple[int, ...]
    n_fixed: int

    @property
    def positions(self) -> range:
        """Prompt positions that are attributed (every prompt token but BOS)."""
        return range(self.n_fixed, len(self.prompt))

    def pair(self) -> Pair:
        return list(self.prompt), list(self.answer)


def prompt_ids(handle: ModelHandle, prompt: str, answer: str, label: str = "") -> PromptIds:
    """Token ids of a pair for attribution; AnalysisInputError for pairs that cannot be attributed (empty
    prompt or answer, fewer than two attributable prompt tokens, longer than the model's context)."""
    where = f"sample {label!r}: " if label else ""
    try:
        p, a = encode_pair(handle.tokenizer, prompt, answer, handle.prepend_bos)
    except AnalysisInputError as e:
        raise AnalysisInputError(f"{where}{e}") from None
    n_fixed = 1 if handle.prepend_bos else 0
    if len(p) - n_fixed < 2:
        raise AnalysisInputError(f"{where}the prompt {prompt!r} has {len(p) - n_fixed} token(s); attributing an "
                                 "answer to prompt tokens needs at least two")
    if len(p) + len(a) > handle.model.cfg.n_ctx:
        raise AnalysisInputError(f"{where}prompt + answer is {len(p) + len(a)} tokens, longer than the model's "
                                 f"context of {handle.model.cfg.n_ctx}")
    return PromptIds(tuple(p), tuple(a), n_fixed)


# ---- batched scoring of id pairs --------------------------------------------------------------------------
@dataclass
class PairScores:
    logprob: np.ndarray  # [N] mean log-prob of the answer tokens (LP)
    logprob_sum: np.ndarray  # [N]
    correct: np.ndarray  # [N] bool, every answer token top-1 under teacher forcing

    @property
    def prob(self) -> np.ndarray:
        return np.exp(self.logprob_sum)


def rows_per_forward(handle: ModelHandle, seq_len: int, batch_size: int | None = None, backward: bool = False) -> int:
    """Rows per forward: ``batch_size`` if given, else what keeps activations within the scoring budget
    (a third of it when a backward pass keeps them alive)."""
    if batch_size is not None:
        return max(1, int(batch_size))
    n = default_batch_size(handle, seq_len=max(1, seq_len))
    return max(1, n // 3) if backward else n


@torch.no_grad()
def score_pairs(handle: ModelHandle, pairs: Sequence[Pair], batch_size: int | None = None,
                hooks_for: HooksFor | None = None) -> PairScores:
    """Score many (prompt ids, answer ids) rows: rows are sorted by length (less padding), chunked to the
    memory budget, and each chunk is one forward (with ``hooks_for(rows, batch)`` hooks when given)."""
    if not pairs:
        raise AnalysisInputError("no rows to score")
    n = len(pairs)
    order = sorted(range(n), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    longest = len(pairs[order[0]][0]) + len(pairs[order[0]][1])
    bs = rows_per_forward(handle, longest, batch_size)
    lp, lps, corr = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
    pid, n_ctx = pad_id(handle.tokenizer), handle.model.cfg.n_ctx
    for start in range(0, n, bs):
        idx = order[start: start + bs]
        batch = batch_from_ids([pairs[i] for i in idx], pad_id=pid, n_ctx=n_ctx, device=handle.device)
        hooks = hooks_for(idx, batch) if hooks_for is not None else []
        if hooks:
            logits = handle.model.run_with_hooks(batch.tokens, return_type="logits", fwd_hooks=hooks)
        else:
            logits = handle.model(batch.tokens, return_type="logits")
        lp[idx] = answer_logprob(logits, batch, "mean").double().cpu().numpy()
        lps[idx] = answer_logprob(logits, batch, "sum").double().cpu().numpy()
        corr[idx] = answer_correct(logits, batch).cpu().numpy()
    return PairScores(lp, lps, corr)


# ---- leave-one-out ------------------------------------------------------------------------------------------
@ABLATIONS.register("delete", label=ABLATION_LABELS["delete"])
def _delete(prompt: list[int], position: int, neutral_id: int | None) -> list[int]:
    return prompt[:position] + prompt[position + 1:]


@ABLATIONS.register("replace", label=ABLATION_LABELS["replace"])
def _replace(prompt: list[int], position: int, neutral_id: int | None) -> list[int]:
    if neutral_id is None:
        raise AnalysisInputError("replacement ablation needs a neutral token id")
    return [*prompt[:position], int(neutral_id), *prompt[position + 1:]]


def ablate(item: PromptIds, position: int, ablation: str, neutral_id: int | None = None) -> Pair:
    """The pair with prompt token ``position`` ablated by ``ablation`` (a name in ABLATIONS): deleted, or
    replaced by ``neutral_id`` (positions kept)."""
    if position < item.n_fixed or position >= len(item.prompt):
        raise AnalysisInputError(f"position {position} cannot be ablated (BOS or outside the prompt)")
    return ABLATIONS.get(ablation)(list(item.prompt), position, neutral_id), list(item.answer)


@dataclass
class LOOResult:
    logprob: float  # LP(x, y)
    ablated: list[float | None]  # LP(x without x_i, y) per prompt position (None for BOS)
    contributions: list[float | None]  # LP(x, y) - LP(x without x_i, y)


def loo_contributions(handle: ModelHandle, items: Sequence[PromptIds], ablation: str = "delete",
                      neutral_id: int | None = None, batch_size: int | None = None) -> list[LOOResult]:
    """Leave-one-out contributions of every attributable token of every item. All [n_items x (n_tokens + 1)]
    rows (the clean row, then one row per ablated token) are scored together by ``score_pairs``."""
    rows: list[Pair] = []
    spans: list[tuple[int, range]] = []  # row index of each item's clean row, its attributed positions
    for it in items:
        spans.append((len(rows), it.positions))
        rows.append(it.pair())
        rows.extend(ablate(it, i, ablation, neutral_id) for i in it.positions)
    scores = score_pairs(handle, rows, batch_size).logprob
    out: list[LOOResult] = []
    for it, (r0, positions) in zip(items, spans, strict=True):
        full = float(scores[r0])
        ablated: list[float | None] = [None] * len(it.prompt)
        contrib: list[float | None] = [None] * len(it.prompt)
        for k, pos in enumerate(positions, 1):
            ablated[pos] = float(scores[r0 + k])
            contrib[pos] = full - float(scores[r0 + k])
        out.append(LOOResult(full, ablated, contrib))
    return out


# ---- gradient views ------------------------------------------------------------------------------------------
@dataclass
class GradResult:
    logprob: float  # LP(x, y)
    contributions: list[float | None]
    baseline_logprob: float | None = None  # integrated gradients: LP with the attributed embeddings at zero


def _prompt_position_mask(items: Sequence[PromptIds], batch: PairBatch) -> torch.Tensor:
    mask = torch.zeros(batch.tokens.shape, dtype=torch.bool, device=batch.tokens.device)
    for r, it in enumerate(items):
        mask[r, it.n_fixed: len(it.prompt)] = True
    return mask


def grad_contributions(handle: ModelHandle, items: Sequence[PromptIds], method: str = "grad", steps: int = 16,
                       batch_size: int | None = None) -> list[GradResult]:
    """Gradient attributions of LP(x, y) to the prompt tokens' embeddings (the output of ``hook_embed``):

    - ``grad``: input x gradient, sum_d e_{i,d} * dLP/de_{i,d} (a first-order estimate of LP(x) - LP(x with
      e_i = 0));
    - ``ig``: integrated gradients from the zero embedding at the attributed positions (BOS and answer
      tokens kept), midpoint Riemann sum over ``steps`` points; the attributions add up to
      LP(x) - LP(baseline) (completeness) up to the discretisation error.

    Batched: every item (times ``steps`` for IG) in chunks; one backward per chunk with torch.autograd.grad
    (parameter gradients are never accumulated)."""
    if method not in ("grad", "ig"):
        raise AnalysisInputError(f"unknown gradient method {method!r} (expected grad or ig)")
    n_steps = steps if method == "ig" else 1
    alphas = [(k + 0.5) / n_steps for k in range(n_steps)] if method == "ig" else [1.0]
    rows = [(i, a) for i in range(len(items)) for a in alphas]
    longest = max(len(it.prompt) + len(it.answer) for it in items)
    bs = rows_per_forward(handle, longest, batch_size, backward=True)
    attr = [np.zeros(len(it.prompt)) for it in items]
    lp_full = np.zeros(len(items))
    model, pid, n_ctx = handle.model, pad_id(handle.tokenizer), handle.model.cfg.n_ctx
    for start in range(0, len(rows), bs):
        chunk = rows[start: start + bs]
        its = [items[i] for i, _ in chunk]
        batch = batch_from_ids([it.pair() for it in its], pad_id=pid, n_ctx=n_ctx, device=handle.device)
        mask = _prompt_position_mask(its, batch)
        scale = torch.ones(batch.tokens.shape, device=handle.device)
        alpha_t = torch.tensor([a for _, a in chunk], device=handle.device)
        scale = torch.where(mask, alpha_t[:, None].expand_as(scale), scale)
        with torch.no_grad():
            emb = model.hook_embed(model.embed(batch.tokens)).detach()
        x = (emb * scale[..., None].to(emb.dtype)).detach().requires_grad_(True)

        def put(act: torch.Tensor, hook: HookPoint, _x: torch.Tensor = x) -> torch.Tensor:
            return _x

        with torch.enable_grad():
            logits = model.run_with_hooks(batch.tokens, return_type="logits", fwd_hooks=[(EMBED, put)])
            lp = answer_logprob(logits, batch, "mean")
            (grad,) = torch.autograd.grad(lp.sum(), x)
        contrib = (grad.float() * emb.float()).sum(-1) * mask  # [B, T]
        contrib = contrib.detach().double().cpu().numpy()
        for r, (i, a) in enumerate(chunk):
            attr[i] += contrib[r, : len(items[i].prompt)] / n_steps
            if a == 1.0:
                lp_full[i] = float(lp[r].detach())
    if method == "ig":  # LP(x) and LP(baseline) for completeness
        full = score_pairs(handle, [it.pair() for it in items], batch_size).logprob
        lp_full[:] = full
        base = _baseline_logprob(handle, items, batch_size)
    out: list[GradResult] = []
    for k, it in enumerate(items):
        contrib_list: list[float | None] = [None] * len(it.prompt)
        for pos in it.positions:
            contrib_list[pos] = float(attr[k][pos])
        out.append(GradResult(float(lp_full[k]), contrib_list, float(base[k]) if method == "ig" else None))
    return out


@torch.no_grad()
def _baseline_logprob(handle: ModelHandle, items: Sequence[PromptIds], batch_size: int | None) -> np.ndarray:
    """LP(y) with the attributed prompt embeddings set to zero (the integrated-gradients baseline)."""
    pairs = [it.pair() for it in items]
    rows: dict[int, PromptIds] = dict(enumerate(items))

    def hooks_for(idx: Sequence[int], batch: PairBatch) -> list[tuple[str, HookFn]]:
        mask = _prompt_position_mask([rows[i] for i in idx], batch)

        def zero(act: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            return act * (~mask)[..., None].to(act.dtype)

        return [(EMBED, zero)]

    return score_pairs(handle, pairs, batch_size, hooks_for=hooks_for).logprob


# ---- the methods ---------------------------------------------------------------------------------------------
@dataclass
class MethodOutput:
    """What an attribution method gives for one prompt: LP(x, y), each prompt token's contribution (None for
    tokens that are never attributed, BOS) and the method's own extra reading."""

    logprob: float
    contributions: list[float | None]
    ablated_logprob: list[float | None] | None = None  # loo: LP(x without x_i, y)
    baseline_logprob: float | None = None  # ig: LP with the attributed embeddings at zero


@ATTRIBUTION_METHODS.register("loo", label="leave-one-out")
def _loo(handle: ModelHandle, items: Sequence[PromptIds], opts: AttributionOptions) -> list[MethodOutput]:
    neutral = neutral_token_id(handle.tokenizer, opts.neutral) if opts.uses_neutral else None
    return [MethodOutput(r.logprob, r.contributions, ablated_logprob=r.ablated)
            for r in loo_contributions(handle, items, opts.ablation, neutral, opts.batch_size)]


def _gradient(method: str) -> Callable[[ModelHandle, Sequence[PromptIds], AttributionOptions], list[MethodOutput]]:
    def run(handle: ModelHandle, items: Sequence[PromptIds], opts: AttributionOptions) -> list[MethodOutput]:
        return [MethodOutput(g.logprob, g.contributions, baseline_logprob=g.baseline_logprob)
                for g in grad_contributions(handle, items, method, opts.ig_steps, opts.batch_size)]

    return run


ATTRIBUTION_METHODS.add("grad", _gradient("grad"), label="input × gradient")
ATTRIBUTION_METHODS.add("ig", _gradient("ig"), label="integrated gradients")


# ---- KeyTokens --------------------------------------------------------------------------------------------
def key_tokens(contributions: Sequence[float | None], alpha: float, beta: int) -> list[int]:
    """unPact's KeyTokens: positions with positive contribution if there are fewer than ``beta`` of them;
    otherwise those whose normalised positive contribution C_i / sum_{j: C_j > 0} C_j exceeds ``alpha``."""
    positive = [(i, float(c)) for i, c in enumerate(contributions)
                if c is not None and not math.isnan(c) and c > 0]
    if len(positive) < beta:
        return [i for i, _ in positive]
    total = sum(c for _, c in positive)
    return [i for i, c in positive if c / total > alpha]
