"""The batched causal-tracing engine: every (layer, token) cell and noise sample of a trace in as few
forwards as memory allows, each starting where its patch starts.

A *cell* is one row of a heatmap: (kind, layer). Restoring it at token t means:

- ``resid`` at layer l: the hidden state output of block l (``blocks.{l}.hook_resid_post``) at t is set to its
  clean value. Everything before is the corrupted run, so the patched run starts at block l+1 from the
  cached corrupted residual (``blocks.{l+1}.hook_resid_pre``) with position t replaced:
  ``model(resid, start_at_layer=l + 1)`` (l = n_layers - 1 runs only ``ln_final`` + unembed).
- ``mlp`` / ``attn`` at layer l with a window: the outputs (``hook_mlp_out`` / ``hook_attn_out``) of every
  layer of the window at t are set to their clean values. The run starts at the window's first layer a from
  the cached corrupted ``blocks.{a}.hook_resid_pre``, with hooks patching the window.

Cells are grouped by their start layer; each group (all its cells x all prompt tokens x all noise samples)
runs as one batch, chunked to a memory budget. The only Python loop is over start layers (and chunks).
The clean run and the corrupted run are each one forward whose activations are cached. Positions before
the first corrupted token are not run at all (restoring them is a no-op), and the unembedding is applied
only at the positions the metric reads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from transformer_lens import HookedTransformer, TransformerLensKeyValueCacheEntry
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import apply_softcap

from analysis import hooks
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.scoring import PairBatch, answer_logprob, batch_from_ids, default_batch_size
from analysis.subjects import SubjectInput
from analysis.tracing.corruptions import Corrupted
from analysis.tracing.options import KINDS, check_metric, window_layers

# A block's fixed cost per forward, in FLOP at CPU speed: ~1 ms of TransformerLens Python, hooks and small kernels at
# ~40 GFLOP/s, measured on the organism (benchmarks/bench_tracing.py). It only steers how rows are grouped.
FORWARD_OVERHEAD_FLOP = 4e7
# Positional schemes under which a run over positions lo.. with cached keys/values before lo is exact.
KV_REUSE_POS_EMBED = ("standard", "rotary", "shortformer")
_HOOK_LEVEL = 7_000_001  # the hook level local_hooks uses, so it removes only its own hooks
HookFn = Callable[[torch.Tensor, HookPoint], torch.Tensor]


# ---- metrics ------------------------------------------------------------------------------------------
class Metric:
    """The traced quantity per batch row, from the logits of the tail of the sequence (positions from the last
    prompt token on: ``logits[:, metric.tail]``, [B, n_answer + 1, V]) -> [B].

    ``prob``: the length-normalised answer probability, exp(mean log p(answer token)) with the answer
    teacher-forced after the prompt (analysis.scoring.answer_logprob); ROME's p(answer) for one token.
    ``logit_diff_corrupted``: logit of the answer's first token minus the logit of ``other`` (the corrupted
    run's top token other than the answer, from its mean logits over noise samples) at the last prompt position.
    """

    def __init__(self, name: str, inp: SubjectInput, device: torch.device, other_token: int | None = None) -> None:
        self.name = check_metric(name)
        self.pos = inp.prompt_len - 1
        self.n_answer = len(inp.answer_ids)
        self.answer0 = int(inp.answer_ids[0])
        self.other = other_token
        self.tail = slice(self.pos, len(inp.ids))  # the last prompt token and the teacher-forced answer
        # [last prompt token; answer tokens], scored by the one answer-logprob implementation.
        self.window: PairBatch = batch_from_ids([([inp.ids[self.pos]], list(inp.answer_ids))], pad_id=0,
                                                n_ctx=len(inp.ids), device=device)

    def __call__(self, tail_logits: torch.Tensor) -> torch.Tensor:
        if self.name == "prob":
            lg = tail_logits
            b = lg.shape[0]
            w = self.window
            batch = PairBatch(w.tokens.expand(b, -1), w.target_mask.expand(b, -1), w.prompt_lens.expand(b),
                              w.answer_lens.expand(b), w.lengths.expand(b))
            return answer_logprob(lg, batch, "mean").exp()
        if self.other is None:
            raise RuntimeError("logit_diff_corrupted needs the corrupted run's top other token")
        last = tail_logits[:, 0].float()
        return last[:, self.answer0] - last[:, self.other]

    def full(self, logits: torch.Tensor) -> torch.Tensor:
        """The metric from logits over the whole sequence [B, T, V]."""
        return self(logits[:, self.tail])

    @staticmethod
    def top_other(corrupted_logits: torch.Tensor, inp: SubjectInput) -> int:
        mean = corrupted_logits[:, inp.prompt_len - 1].float().mean(0)
        mean[int(inp.answer_ids[0])] = -torch.inf
        return int(mean.argmax())


# ---- cells -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    kind: str
    layer: int
    start: int  # first block run by the patched forward
    hooks: tuple[str, ...]  # hook points whose output at token t is restored
    restore_input: bool  # the residual given to the start block is restored at token t


def make_cells(kinds: Sequence[str], n_layers: int, window: int) -> list[Cell]:
    cells: list[Cell] = []
    for kind in kinds:
        if kind not in KINDS:
            raise AnalysisInputError(f"unknown trace kind {kind!r} (expected one of {', '.join(KINDS)})")
        for layer in range(n_layers):
            if kind == "resid":
                cells.append(Cell(kind, layer, layer + 1, (), True))
            else:
                win = window_layers(layer, window, n_layers)
                cells.append(Cell(kind, layer, win.start, tuple(hooks.kind_hook(kind, j) for j in win), False))
    return cells


@dataclass
class TraceScores:
    clean: float
    corrupted: float
    scores: dict[str, np.ndarray]  # kind -> [n_layers, prompt_len]
    other_token: int | None
    n_forwards: int


def _saver(store: dict[str, torch.Tensor]) -> HookFn:
    def save(act: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        store[hook.name] = act.detach()
        return act

    return save


def _cached_run(handle: ModelHandle, tokens: torch.Tensor, names: Sequence[str],
                embed_delta: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    cache: dict[str, torch.Tensor] = {}
    fwd_hooks: list[tuple[str, HookFn]] = []
    if embed_delta is not None:
        def add_noise(act: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            return act + embed_delta

        fwd_hooks.append((hooks.EMBED, add_noise))
    save = _saver(cache)
    fwd_hooks.extend((n, save) for n in names)
    with local_hooks(handle.model, fwd_hooks):
        logits = handle.model(tokens, return_type="logits", padding_side="right")
    return logits, cache


def _patch_hook(clean: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, offset: int) -> HookFn:
    """Set ``act[rows, pos - offset]`` to the clean activations at absolute positions ``pos`` (the patched run
    holds the positions from ``offset`` on)."""
    values = clean[0, pos]
    rel = pos - offset

    def patch(act: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        act[rows, rel] = values.to(act.dtype)
        return act

    return patch


@contextmanager
def local_hooks(model: HookedTransformer, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
    """Forward hooks on the named hook points only. ``model.hooks()`` does the same but resets every hook
    point of the model on exit, which costs more than a small model's forward."""
    points = [model.hook_dict[name] for name, _ in fwd_hooks]
    try:
        for point, (_, fn) in zip(points, fwd_hooks, strict=True):
            point.add_hook(fn, dir="fwd", level=_HOOK_LEVEL)
        yield
    finally:
        for point in points:
            point.remove_hooks("fwd", level=_HOOK_LEVEL)


def suffix_groups(t0: int, prompt_len: int, seq_len: int, rows_per_token: int,
                  overhead_rows: float) -> list[tuple[int, int]]:
    """Split the restored tokens t0 .. prompt_len-1 into contiguous groups [lo, hi), each run as its own
    forward. Restoring token t changes only positions >= t (causal attention), so a group's run computes
    positions lo.. only and attends to the corrupted run's cached keys/values before lo. More groups compute
    fewer positions but each costs a forward; the split minimises per block
    sum over groups of (rows x positions + overhead_rows), where overhead_rows is one forward's fixed cost
    expressed in token-rows of compute."""
    n_tok = prompt_len - t0
    best: tuple[float, list[tuple[int, int]]] = (float("inf"), [])
    for k in range(1, n_tok + 1):
        bounds = sorted({t0 + round(i * n_tok / k) for i in range(k + 1)})
        groups = list(zip(bounds[:-1], bounds[1:], strict=True))
        cost = sum((hi - lo) * rows_per_token * (seq_len - lo) + overhead_rows for lo, hi in groups)
        if cost < best[0]:
            best = (cost, groups)
    return best[1]


def overhead_rows(model: HookedTransformer) -> float:
    """One block's fixed per-forward cost (Python, hooks, kernel launches; ~FORWARD_OVERHEAD_FLOP) in token-rows
    of that block's compute (~2 FLOP per parameter per token)."""
    block_params = sum(p.numel() for p in model.blocks[0].parameters())
    return FORWARD_OVERHEAD_FLOP / (2 * block_params)


def first_corrupted_position(inp: SubjectInput, corrupted: Corrupted) -> int:
    """The first position where a corrupted input differs from the clean one. Before it, clean and corrupted
    activations are equal at every layer (causal attention), so restoring them is a no-op."""
    clean = inp.tensor(corrupted.tokens.device)
    changed = (corrupted.tokens != clean[None]).any(0)
    if corrupted.embed_delta is not None:
        changed |= (corrupted.embed_delta != 0).any(-1).any(0)
    idx = changed.nonzero()
    return int(idx[0, 0]) if len(idx) else len(inp.ids)


def _unembed(model: HookedTransformer, resid: torch.Tensor) -> torch.Tensor:
    """What HookedTransformer.forward does after its last block (ln_final, unembed, softcap), here applied to
    the metric's positions only."""
    if model.cfg.normalization_type is not None:
        resid = model.ln_final(resid)
    return apply_softcap(model.unembed(resid), model.cfg.output_logits_soft_cap)


@torch.no_grad()
def run_trace(handle: ModelHandle, inp: SubjectInput, corrupted: Corrupted, kinds: Sequence[str], metric: str,
              window: int, budget_bytes: int | None = None) -> TraceScores:
    """Scores [n_layers, prompt_len] per kind: the metric with the cell restored at each prompt token,
    averaged over the corrupted inputs (noise samples)."""
    model = handle.model
    L, P, T, n = int(model.cfg.n_layers), inp.prompt_len, len(inp.ids), corrupted.n
    dev = handle.device
    if any(k != "resid" for k in kinds) and window > L:
        raise AnalysisInputError(f"window of {window} layers is larger than the model's {L} layers")
    if corrupted.tokens.shape[1] != T:
        raise AnalysisInputError("corrupted input has a different length from the clean input")
    shortformer = model.cfg.positional_embedding_type == "shortformer"
    cells = make_cells(kinds, L, window)

    # Clean run: the values to restore.
    clean_names = {hooks.resid_post(c.start - 1) for c in cells if c.restore_input}
    clean_names |= {h for c in cells for h in c.hooks}
    if shortformer:
        clean_names.add(hooks.POS_EMBED)
    clean_logits, clean = _cached_run(handle, inp.tensor(dev)[None], sorted(clean_names), None)

    # Positions before the first corrupted one are never changed: their cells are the corrupted metric.
    t0 = min(first_corrupted_position(inp, corrupted), P)
    starts = sorted({c.start for c in cells})
    # Rows per patched forward: the project's batch-size rule under this trace's memory budget (default:
    # analysis.models.device.memory_budget).
    max_rows = default_batch_size(handle, seq_len=T, budget_bytes=budget_bytes)
    by_start: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(cells):
        by_start[c.start].append(i)
    # Token groups per start layer (see suffix_groups); runs of a group starting past position 0 reuse the
    # corrupted run's keys/values, so the corrupted run caches them for the layers those runs cover.
    reuse_kv = model.cfg.clip_qkv is None and model.cfg.positional_embedding_type in KV_REUSE_POS_EMBED
    overhead = overhead_rows(model)
    groups = {s: suffix_groups(t0, P, T, len(by_start[s]) * n, overhead) if reuse_kv else [(t0, P)]
              for s in starts}
    kv_from = min((s for s in starts if s < L and any(lo > 0 for lo, _ in groups[s])), default=L)
    kv_names = [name for j in range(kv_from, L) for name in (hooks.attn_k(j), hooks.attn_v(j))]

    # Corrupted run: its residual at every start layer is the prefix the patched runs resume from.
    corr_names = [hooks.resid_pre(s) if s < L else hooks.resid_post(L - 1) for s in starts]
    corr_logits, corr = _cached_run(handle, corrupted.tokens, corr_names + kv_names, corrupted.embed_delta)
    start_resid = dict(zip(starts, (corr[nm] for nm in corr_names), strict=True))

    other = Metric.top_other(corr_logits, inp) if metric == "logit_diff_corrupted" else None
    fn = Metric(metric, inp, dev, other)
    clean_value = float(fn.full(clean_logits)[0])
    corr_rows = fn.full(corr_logits).double()
    corrupted_value = float(corr_rows.mean())

    acc = torch.zeros(len(cells) * P, dtype=torch.float64, device=dev)
    acc.view(len(cells), P)[:, :t0] = corr_rows.mean()
    n_forwards = 2
    spe = clean[hooks.POS_EMBED] if shortformer else None
    for s in starts if t0 < P else []:
        group = torch.tensor(by_start[s], device=dev)
        gcells = [cells[i] for i in by_start[s]]
        restore_in = torch.tensor([c.restore_input for c in gcells], device=dev)
        hook_names = sorted({h for c in gcells for h in c.hooks})
        member = {h: torch.tensor([h in c.hooks for c in gcells], device=dev) for h in hook_names}
        for lo, hi in groups[s]:
            # Rows: (cell of this start layer, token in [lo, hi), noise sample), flattened; positions lo.. only.
            n_tok, total = hi - lo, len(gcells) * (hi - lo) * n
            tail = slice(fn.tail.start - lo, fn.tail.stop - lo)
            for c0 in range(0, total, max_rows):
                r = torch.arange(c0, min(total, c0 + max_rows), device=dev)
                ci, ti, ki = r // (n_tok * n), lo + (r // n) % n_tok, r % n
                x = start_resid[s][ki, lo:]  # [B, T - lo, d] (a gathered copy of the corrupted prefix)
                sel = restore_in[ci].nonzero().squeeze(-1)
                if len(sel):
                    x[sel, ti[sel] - lo] = clean[hooks.resid_post(s - 1)][0, ti[sel]].to(x.dtype)
                fwd_hooks: list[tuple[str, HookFn]] = []
                for h in hook_names:
                    rows = member[h][ci].nonzero().squeeze(-1)
                    if len(rows):
                        fwd_hooks.append((h, _patch_hook(clean[h], rows, ti[rows], lo)))
                past = None
                if lo > 0 and s < L:
                    past = [None] * s + [TransformerLensKeyValueCacheEntry(
                        corr[hooks.attn_k(j)][ki, :lo], corr[hooks.attn_v(j)][ki, :lo],
                        frozen=True) for j in range(s, L)]
                with local_hooks(model, fwd_hooks):
                    resid = model(x, start_at_layer=s, stop_at_layer=L, past_kv_cache=past,
                                  shortformer_pos_embed=None if spe is None else spe[:, lo:].expand(len(r), -1, -1))
                n_forwards += 1
                values = fn(_unembed(model, resid[:, tail]))
                acc.index_add_(0, group[ci] * P + ti, values.double() / n)
    scores = acc.view(len(cells), P).cpu().numpy()
    out: dict[str, np.ndarray] = {}
    for kind in dict.fromkeys(c.kind for c in cells):
        idx = [i for i, c in enumerate(cells) if c.kind == kind]
        out[kind] = scores[idx]
    return TraceScores(clean=clean_value, corrupted=corrupted_value, scores=out, other_token=other,
                       n_forwards=n_forwards)
