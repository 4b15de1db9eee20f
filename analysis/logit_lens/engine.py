"""The logit lens (nostalgebraist 2020), batched, read through a chosen readout: every layer's residual stream
(``hook_resid_post`` of layer l) at the positions that predict the answer tokens, put through the READOUT
model's final norm (``ln_final``) and unembedding (and its logit softcap, as HookedTransformer.forward does),
giving the answer token's probability and rank at every layer. With the original as the readout for every
model, a model that hides the answer by changing only its own readout still shows it here.

One ``run_with_cache`` of the model per batch (its residual stream at every layer, no unembedding), then the
readout on the answer positions only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformer_lens import HookedTransformer
from transformer_lens.utilities import apply_softcap

from analysis import hooks
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.scoring import PairBatch


@dataclass
class LensValues:
    """[B, L] per row and layer: the first answer token's probability and rank (1 = top), and the mean over the
    answer's tokens of the probability and of the rank (teacher-forced: each answer token given the ones before)."""

    first_prob: np.ndarray
    first_rank: np.ndarray
    mean_prob: np.ndarray
    mean_rank: np.ndarray

    def row(self, i: int) -> dict[str, list[float]]:
        return {k: [float(v) for v in getattr(self, k)[i]] for k in ("first_prob", "first_rank", "mean_prob",
                                                                     "mean_rank")}


def readout_logits(readout: HookedTransformer, resid: torch.Tensor) -> torch.Tensor:
    """What HookedTransformer.forward does after its last block (ln_final, unembed, softcap), with ``readout``'s
    weights, on any residual stream ``resid [..., d_model]``."""
    x = resid.to(device=readout.cfg.device, dtype=readout.cfg.dtype)
    if readout.cfg.normalization_type is not None:
        x = readout.ln_final(x)
    return apply_softcap(readout.unembed(x), readout.cfg.output_logits_soft_cap)


@torch.no_grad()
def lens_values(model: ModelHandle, readout: ModelHandle, batch: PairBatch) -> LensValues:
    """The answer's probability and rank at every layer of ``model``, read through ``readout``'s final norm and
    unembedding, for every row of ``batch``."""
    a, b = model.model.cfg, readout.model.cfg
    if a.d_model != b.d_model or a.d_vocab_out != b.d_vocab_out:
        raise AnalysisInputError(f"cannot read {model.name!r} (d_model {a.d_model}) through {readout.name!r}'s "
                                 f"readout (d_model {b.d_model}): the shapes differ")
    L = model.n_layers
    names = [hooks.resid_post(layer) for layer in range(L)]
    wanted = set(names)
    _, cache = model.model.run_with_cache(batch.tokens.to(model.device), names_filter=lambda n: n in wanted,
                                          return_type=None)
    mask = batch.target_mask.to(model.device)
    rows, pos = mask.nonzero(as_tuple=True)  # every (row, position) predicting an answer token, row-major
    target = batch.tokens.to(model.device)[rows, pos + 1]
    prompt_lens = batch.prompt_lens.to(model.device)
    first = pos == prompt_lens[rows] - 1  # the position predicting the first answer token
    n_ans = torch.zeros(len(batch.tokens), dtype=torch.float64, device=model.device).index_add_(
        0, rows, torch.ones_like(rows, dtype=torch.float64))
    B = len(batch.tokens)
    out = {k: torch.zeros((B, L), dtype=torch.float64, device=model.device)
           for k in ("first_prob", "first_rank", "mean_prob", "mean_rank")}
    for layer in range(L):
        logits = readout_logits(readout.model, cache[names[layer]][rows, pos]).float()
        logp = torch.log_softmax(logits, dim=-1)
        tgt = logp.gather(1, target[:, None].to(logp.device)).squeeze(1)
        prob = tgt.exp().double().to(model.device)
        rank = (1 + (logp > tgt[:, None]).sum(-1)).double().to(model.device)
        out["first_prob"][rows[first], layer] = prob[first]
        out["first_rank"][rows[first], layer] = rank[first]
        out["mean_prob"][:, layer] = torch.zeros(B, dtype=torch.float64, device=model.device).index_add_(
            0, rows, prob) / n_ans.clamp(min=1)
        out["mean_rank"][:, layer] = torch.zeros(B, dtype=torch.float64, device=model.device).index_add_(
            0, rows, rank) / n_ans.clamp(min=1)
    return LensValues(**{k: v.cpu().numpy() for k, v in out.items()})
