"""Cross-model activation patching, batched: the original model run on forget prompt+answer pairs with its hidden
state after block l (``hook_resid_post`` of layer l) replaced by another model's hidden state at the same
positions, continued from block l+1 (``start_at_layer=l+1``), and the drop of the answer's mean log-prob
(``analysis.scoring.answer_logprob``) relative to the unpatched original. Patching in the reference retrain
control shows where the forget answer depends on knowledge the retrain control lacks; patching in a judged
model and dividing by that gives a per-layer erasure ratio (UDS, arXiv 2605.24614).

Batched: one ``run_with_cache`` of the source model gives its hidden state at every layer, one of the original
gives the unpatched log-prob (and its own hidden states, for answer-only patching), then ONE forward of the
original per start layer over all rows. Right padding is exact (causal attention; analysis.scoring).

The erasure ratios and depth scores (``erasure_ratios``, ``depth_scores``) are numpy functions over stored
curves, so changing the aggregation never reruns a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analysis import hooks
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.patching.options import AGGREGATIONS, POSITIONS
from analysis.scoring import PairBatch, answer_logprob


@dataclass
class PatchCurves:
    """``base[b]``: the original's mean answer log-prob on row b, unpatched; ``patched[b, l]``: the same with the
    source model's hidden state after block l patched in. ``n_forwards``: forwards of the original run."""

    base: np.ndarray  # [B] float64
    patched: np.ndarray  # [B, L] float64
    n_forwards: int = 0

    @property
    def drop(self) -> np.ndarray:
        """[B, L] log-prob drop caused by the patch (positive: the source lacks what the original uses)."""
        return self.base[:, None] - self.patched


def answer_positions(batch: PairBatch) -> torch.Tensor:
    """[B, T] bool: the positions whose logits predict an answer token (``target_mask`` padded to the length)."""
    mask = torch.zeros(batch.tokens.shape, dtype=torch.bool, device=batch.tokens.device)
    n = batch.target_mask.shape[1]
    mask[:, :n] = batch.target_mask[:, : batch.tokens.shape[1]]
    return mask


def check_compatible(original: ModelHandle, source: ModelHandle) -> None:
    """Hidden states of ``source`` can be patched into ``original`` only when the shapes agree."""
    a, b = original.model.cfg, source.model.cfg
    if (a.n_layers, a.d_model) != (b.n_layers, b.d_model):
        raise AnalysisInputError(f"cannot patch {source.name!r} ({b.n_layers} layers, d_model {b.d_model}) into "
                                 f"{original.name!r} ({a.n_layers} layers, d_model {a.d_model}): the shapes differ")


@torch.no_grad()
def patch_logprobs(original: ModelHandle, source: ModelHandle, batch: PairBatch,
                   positions: str = "all") -> PatchCurves:
    """The original's mean answer log-prob on every row of ``batch``, unpatched and with the source's
    ``hook_resid_post`` of each layer patched in (``positions``: "all", or "answer" for the positions predicting
    the answer only). One forward of the original per start layer over all rows."""
    if positions not in POSITIONS:
        raise AnalysisInputError(f"unknown patch positions {positions!r} (expected one of {', '.join(POSITIONS)})")
    check_compatible(original, source)
    model = original.model
    L = original.n_layers
    names = [hooks.resid_post(layer) for layer in range(L)]
    wanted = {*names, hooks.POS_EMBED}
    tokens = batch.tokens.to(original.device)
    src_tokens = batch.tokens.to(source.device)
    _, src = source.model.run_with_cache(src_tokens, names_filter=lambda n: n in wanted, return_type=None)
    shortformer = model.cfg.positional_embedding_type == "shortformer"
    if positions == "answer" or shortformer:
        base_logits, own = model.run_with_cache(tokens, names_filter=lambda n: n in wanted)
    else:
        base_logits, own = model(tokens), None
    on_device = batch.to(original.device)
    base = answer_logprob(base_logits, on_device).double()
    spe = own[hooks.POS_EMBED] if shortformer and own is not None else None
    where = answer_positions(on_device)[..., None] if positions == "answer" else None
    patched = torch.empty((len(tokens), L), dtype=torch.float64, device=original.device)
    for layer in range(L):
        x = src[names[layer]].to(device=original.device, dtype=model.cfg.dtype)
        if where is not None and own is not None:
            x = torch.where(where, x, own[names[layer]])
        logits = model(x, start_at_layer=layer + 1, shortformer_pos_embed=spe)
        patched[:, layer] = answer_logprob(logits, on_device).double()
    return PatchCurves(base=base.cpu().numpy(), patched=patched.cpu().numpy(), n_forwards=L + 1)


def erasure_ratios(drop_model: np.ndarray, drop_reference: np.ndarray, min_drop: float) -> np.ndarray:
    """[N, L] per-layer erasure ratio drop_model / drop_reference clipped to [0, 1], NaN where the reference's
    drop is not above ``min_drop`` (the layer carries nothing the reference lacks: the ratio is undefined)."""
    dm, dr = np.asarray(drop_model, dtype=np.float64), np.asarray(drop_reference, dtype=np.float64)
    if dm.shape != dr.shape:
        raise AnalysisInputError(f"drops of shape {dm.shape} and {dr.shape} do not match")
    defined = dr > min_drop
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.clip(dm / np.where(defined, dr, 1.0), 0.0, 1.0)
    return np.where(defined, ratio, np.nan)


def depth_scores(ratios: np.ndarray, drop_reference: np.ndarray, aggregation: str = "mean") -> np.ndarray:
    """[N] depth score per sample in [0, 1] (1 = as deep as the reference), NaN where no layer is defined.
    "mean": the mean of the defined ratios; "uds": weighted by the reference drop (UDS's aggregation)."""
    if aggregation not in AGGREGATIONS:
        raise AnalysisInputError(f"unknown aggregation {aggregation!r} (expected one of {', '.join(AGGREGATIONS)})")
    r = np.asarray(ratios, dtype=np.float64)
    defined = ~np.isnan(r)
    w = defined.astype(np.float64) if aggregation == "mean" else np.where(defined, np.asarray(drop_reference), 0.0)
    total = w.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (np.where(defined, r, 0.0) * w).sum(-1) / total
    return np.where(total > 0, out, np.nan)
