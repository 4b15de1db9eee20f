"""Membership inference (engine): two per-sample membership scores computed batched from one forward's logits,
their AUROC of forget samples against held-out samples, and each score's percentile among the held-out scores.

Scores (higher = more member-like), over the scored tokens x_t of a sample (the answer, or the whole text):

* **loss**: the negative mean NLL, ``mean_t log p(x_t | x_<t)`` (Yeom et al. 2018; the "loss attack").
* **Min-K%++** (Zhang et al. 2024, "Min-K%++: Improved baseline for detecting pre-training data"): each token's
  log-prob normalised by the model's own next-token distribution at that position,
  ``z_t = (log p(x_t) - mu_t) / sigma_t`` with ``mu_t = E_{v ~ p(.|x_<t)}[log p(v)]`` and
  ``sigma_t^2 = E[(log p(v) - mu_t)^2]`` (the mean and variance of the log-probs under the distribution
  itself), then the mean of the lowest ``max(1, floor(k n))`` of the n token scores (the reference
  implementation's ``int(n * k)``, kept at least one token). A fact the model was trained on sits at a local
  maximum of its likelihood: its token is high *relative to what the model expects* at that position.

AUROC (forget = positive, held-out = negative) is the Mann-Whitney U of the forget scores against the held-out
scores over ``n_forget * n_heldout`` (ties count 1/2); a forget sample's *percentile* is the share of held-out
scores below it (ties 1/2), so the mean percentile over forget samples equals the AUROC exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.scoring import PairBatch, chunks, default_batch_size, encode_pair, make_batch
from analysis.signals import CI_LEVEL, N_BOOTSTRAP

SIGMA_FLOOR = 1e-6  # sigma_t of a (numerically) one-hot next-token distribution; keeps z_t finite


def span_mask(batch: PairBatch, span: Literal["answer", "text"]) -> torch.Tensor:
    """[B, T-1] bool: the logits positions whose next token is scored. ``answer``: the answer tokens (the
    batch's target mask); ``text``: every real token after the first."""
    if span == "answer":
        return batch.target_mask
    pos = torch.arange(batch.target_mask.shape[1], device=batch.tokens.device)
    return pos[None, :] < (batch.lengths[:, None] - 1)


def token_scores(logits: torch.Tensor, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, T-1] log p(x_{t+1}), [B, T-1] Min-K%++ token score z) at every position, in float32."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok = torch.gather(logp, 2, batch.tokens[:, 1:, None]).squeeze(-1)
    p = logp.exp()
    finite = torch.where(torch.isfinite(logp), logp, torch.zeros_like(logp))  # p = 0 there: no 0 * -inf
    mu = (p * finite).sum(-1)
    var = (p * (finite - mu[..., None]).square()).sum(-1)  # E[(log p - mu)^2]: no cancellation, never negative
    sigma = var.sqrt().clamp_min(SIGMA_FLOOR)
    return tok, (tok - mu) / sigma


def lowest_k_mean(z: torch.Tensor, mask: torch.Tensor, k: float) -> torch.Tensor:
    """[B] mean of the lowest ``max(1, floor(k n_b))`` masked values of each row (n_b masked values in row b);
    NaN for a row with none."""
    n = mask.sum(-1)
    n_k = torch.clamp(torch.floor(n.double() * k).long(), min=1)
    ordered = torch.sort(z.masked_fill(~mask, math.inf), dim=-1).values
    keep = torch.arange(z.shape[-1], device=z.device)[None, :] < n_k[:, None]
    total = torch.where(keep, ordered, torch.zeros_like(ordered)).sum(-1)
    out = total / n_k
    return torch.where(n > 0, out, torch.full_like(out, math.nan))


def scores_from_logits(logits: torch.Tensor, batch: PairBatch, k: float,
                       span: Literal["answer", "text"] = "answer") -> tuple[torch.Tensor, torch.Tensor]:
    """([B] loss score, [B] Min-K%++ score) of a batch from its logits."""
    mask = span_mask(batch, span)
    tok, z = token_scores(logits, batch)
    loss = (tok * mask).sum(-1) / mask.sum(-1).clamp_min(1)
    return loss, lowest_k_mean(z, mask, k)


@dataclass
class MembershipScores:
    """Per row: the loss score and the Min-K%++ score (higher = more member-like)."""

    loss: np.ndarray
    mink: np.ndarray


@torch.no_grad()
def membership_scores(handle: ModelHandle, prompts: Sequence[str], answers: Sequence[str], k: float,
                      span: Literal["answer", "text"] = "answer", batch_size: int | None = None) -> MembershipScores:
    """Both scores of every (prompt, answer) row under one model: one forward per batch of rows."""
    if len(prompts) != len(answers):
        raise AnalysisInputError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        raise AnalysisInputError("no samples to score")
    bs = batch_size or default_batch_size(handle)
    loss, mink = [], []
    for sl in chunks(len(prompts), bs):
        batch = make_batch(handle, prompts[sl], answers[sl])
        lo, mk = scores_from_logits(handle.model(batch.tokens, return_type="logits"), batch, k, span)
        loss.append(lo.double().cpu())
        mink.append(mk.double().cpu())
    return MembershipScores(loss=torch.cat(loss).numpy(), mink=torch.cat(mink).numpy())


@torch.no_grad()
def membership_scores_naive(handle: ModelHandle, prompts: Sequence[str], answers: Sequence[str], k: float,
                            span: Literal["answer", "text"] = "answer") -> MembershipScores:
    """The reference of the tests and the benchmark: one unpadded forward per row, then each scored token's
    mu, sigma and z one at a time in float64 numpy, sorted and averaged in Python."""
    loss, mink = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        p_ids, a_ids = encode_pair(handle.tokenizer, prompt, answer, handle.prepend_bos)
        ids = p_ids + a_ids
        logits = handle.model(torch.tensor([ids], device=handle.device), return_type="logits")[0]
        logp_all = torch.log_softmax(logits.float(), -1).double().cpu().numpy()
        first = len(p_ids) if span == "answer" else 1
        toks, zs = [], []
        for t in range(first, len(ids)):
            lp = logp_all[t - 1]
            probs = np.exp(lp)
            mu = float(np.sum(probs * lp))
            sigma = max(math.sqrt(float(np.sum(probs * (lp - mu) ** 2))), SIGMA_FLOOR)
            toks.append(float(lp[ids[t]]))
            zs.append((float(lp[ids[t]]) - mu) / sigma)
        n_k = max(1, int(len(zs) * k))
        loss.append(sum(toks) / len(toks))
        mink.append(sum(sorted(zs)[:n_k]) / n_k)
    return MembershipScores(loss=np.array(loss), mink=np.array(mink))


# ---- forget against held-out ---------------------------------------------------------------------------------
def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    xs = np.asarray(values, dtype=np.float64).reshape(-1)
    return xs[np.isfinite(xs)]


def percentiles(scores: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray) -> np.ndarray:
    """Each score's percentile among ``reference`` in [0, 1]: the share of reference values below it, ties
    counting 1/2 (NaN for a NaN score, or with no finite reference value)."""
    ref = np.sort(_clean(reference))
    s = np.asarray(scores, dtype=np.float64)
    if not len(ref):
        return np.full(s.shape, np.nan)
    below = np.searchsorted(ref, s, side="left")
    tied = np.searchsorted(ref, s, side="right") - below
    out = (below + 0.5 * tied) / len(ref)
    return np.where(np.isfinite(s), out, np.nan)


def auroc(positive: Sequence[float] | np.ndarray, negative: Sequence[float] | np.ndarray) -> float | None:
    """AUROC of ``positive`` (forget) against ``negative`` (held-out): Mann-Whitney U / (n_pos n_neg), ties 1/2
    (``scipy.stats.mannwhitneyu``); None when either side has no finite value."""
    from scipy.stats import mannwhitneyu

    pos, neg = _clean(positive), _clean(negative)
    if not len(pos) or not len(neg):
        return None
    if np.ptp(np.concatenate([pos, neg])) == 0:
        return 0.5  # every score tied: U is n_pos n_neg / 2 by definition
    return float(mannwhitneyu(pos, neg, alternative="two-sided").statistic) / (len(pos) * len(neg))


def _u_auroc(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
    """The rank formula of the AUROC over ``axis`` (vectorised over resamples): (R_pos - n_pos (n_pos + 1) / 2)
    / (n_pos n_neg), with mid-ranks for ties."""
    from scipy.stats import rankdata

    pos, neg = np.moveaxis(pos, axis, -1), np.moveaxis(neg, axis, -1)
    n_pos, n_neg = pos.shape[-1], neg.shape[-1]
    ranks = rankdata(np.concatenate([pos, neg], axis=-1), axis=-1)
    return (ranks[..., :n_pos].sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc_ci(positive: Sequence[float] | np.ndarray, negative: Sequence[float] | np.ndarray, seed: int = 0,
             n_resamples: int = N_BOOTSTRAP, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the AUROC, resampling the forget and the held-out scores separately
    (``scipy.stats.bootstrap``, ``paired=False``, seeded); None with fewer than 2 values on either side."""
    from scipy.stats import bootstrap

    pos, neg = _clean(positive), _clean(negative)
    if len(pos) < 2 or len(neg) < 2:
        return None
    if np.ptp(np.concatenate([pos, neg])) == 0:
        return (0.5, 0.5)
    res = bootstrap((pos, neg), _u_auroc, n_resamples=n_resamples, confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True, paired=False)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None
