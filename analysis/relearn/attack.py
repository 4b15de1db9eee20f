"""The relearning attack (engine): a few seeded, full-batch fine-tuning steps on a *copy* of a model, with the
held-out forget samples' top-1 correctness recorded after every step, and the recovered share that compares an
attacked model with the same attack on the reference retrain control.

Why: a model that only suppresses a fact gives it back after a little unrelated fine-tuning (Lynch et al.
2024, "Eight methods to evaluate robust unlearning"; Hu et al. 2024, "Jogging the memory of unlearned LLMs");
a model that never held it cannot. Training on one half of the forget set and measuring the *other* half
separates recovery from re-teaching: the held-out facts are never shown. The same attack on the retrain control
(which never saw any forget fact) is the baseline: whatever it learns about the held-out half (a shared answer
prior, e.g. a profession that many people have) is not recovered knowledge.

Recovered share of sample i (held out), for one variant::

    share_i = clip((acc_attacked_model_i - acc_attacked_retrain_i) / (acc_original_i - acc_retrain_i), 0, 1)

with acc the top-1 correctness of the answer (``analysis.scoring.answer_correct``), ``acc_retrain_i`` the retrain
control's before any attack; undefined (NaN) where the denominator is not positive (the original did not know
the sample, or the retrain control already answers it). 1 = the attack brings back everything the original
knew beyond what the attack teaches a model that never knew; 0 = nothing beyond the baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.data.schema import Sample
from analysis.determinism import deterministic
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.scoring import PairBatch, answer_correct, answer_logprob, make_batch


def forget_folds(ids: Sequence[str], seed: int) -> list[tuple[list[str], list[str]]]:
    """The two folds of the forget-half attack: ``[(train, held_out), (held_out, train)]`` from a seeded
    permutation of ``ids`` cut in half (the first half has ``len // 2`` ids). Every id is held out in exactly
    one fold. Needs at least 2 ids."""
    ids = list(ids)
    if len(ids) < 2:
        raise AnalysisInputError(f"the relearning attack needs at least 2 forget samples (one to train on, one to "
                                 f"measure), got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    half = len(ids) // 2
    a, b = [ids[i] for i in order[:half]], [ids[i] for i in order[half:]]
    return [(a, b), (b, a)]


def retain_subset(ids: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` of ``ids`` (all when there are fewer), a seeded choice kept in the order given."""
    ids = list(ids)
    if n >= len(ids):
        return ids
    keep = np.sort(np.random.default_rng(seed).choice(len(ids), size=n, replace=False))
    return [ids[i] for i in keep]


@dataclass
class AttackRun:
    """One attack on one model. ``correct[t, i]``: held-out sample i answered top-1 after t steps (row 0 = the
    model as it is); ``logprob[t, i]`` its mean answer-token log-prob; ``losses[t]`` the training loss of step
    t + 1."""

    correct: np.ndarray  # [steps + 1, n_eval] bool
    logprob: np.ndarray  # [steps + 1, n_eval] float64
    losses: list[float] = field(default_factory=list)


@torch.no_grad()
def _measure(model: torch.nn.Module, batch: PairBatch) -> tuple[np.ndarray, np.ndarray]:
    logits = model(batch.tokens, return_type="logits")
    return (answer_correct(logits, batch).cpu().numpy(),
            answer_logprob(logits, batch, "mean").double().cpu().numpy())


def relearn_attack(handle: ModelHandle, train: Sequence[Sample], evaluate: Sequence[Sample], steps: int, lr: float,
                   seed: int = 0, max_grad_norm: float = 1.0) -> AttackRun:
    """Fine-tune a deep copy of ``handle.model`` for ``steps`` full-batch Adam steps on ``train`` (every row
    every step: mean over rows of the length-normalised answer NLL), recording ``evaluate``'s correctness and
    answer log-prob before the first step and after each. The handle's own model is never modified (its weights,
    its ``requires_grad`` flags). The same inputs and seed give bit-identical numbers on one device."""
    if not evaluate:
        raise AnalysisInputError("the relearning attack has no sample to measure")
    if steps > 0 and not train:
        raise AnalysisInputError("the relearning attack has no sample to train on")
    eval_batch = make_batch(handle, [s.prompt for s in evaluate], [s.answer for s in evaluate])
    c0, lp0 = _measure(handle.model, eval_batch)
    correct, logprob, losses = [c0], [lp0], []
    if steps > 0:
        train_batch = make_batch(handle, [s.prompt for s in train], [s.answer for s in train])
        model = copy.deepcopy(handle.model)
        model.eval()  # HookedTransformer has no dropout; eval keeps any other model deterministic
        params = list(model.parameters())
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr, weight_decay=0.0)
        with torch.random.fork_rng(devices=[]), deterministic():
            torch.manual_seed(seed)  # nothing here draws from it; any op that would is seeded all the same
            for _ in range(steps):
                logits = model(train_batch.tokens, return_type="logits")
                loss = -answer_logprob(logits, train_batch, "mean").mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                opt.step()
                losses.append(float(loss.detach()))
                c, lp = _measure(model, eval_batch)
                correct.append(c)
                logprob.append(lp)
        del model, opt
    return AttackRun(correct=np.stack(correct).astype(bool), logprob=np.stack(logprob), losses=losses)


def recovered_share(attacked: Sequence[float], attacked_reference: Sequence[float], before: Sequence[float],
                    reference_before: Sequence[float]) -> np.ndarray:
    """Per sample: ``(attacked - attacked_reference) / (before - reference_before)`` clipped to [0, 1]; NaN where
    the denominator is not positive. ``before`` is the original's accuracy, ``reference_before`` the retrain
    control's before any attack, ``attacked*`` after the same attack on the judged model / the retrain control."""
    a, ar, b, rb = (np.asarray(x, dtype=np.float64) for x in (attacked, attacked_reference, before, reference_before))
    if not (a.shape == ar.shape == b.shape == rb.shape):
        raise AnalysisInputError(f"recovered share: shapes differ {a.shape}, {ar.shape}, {b.shape}, {rb.shape}")
    den = b - rb
    out = np.full(a.shape, np.nan)
    ok = den > 0
    out[ok] = np.clip((a[ok] - ar[ok]) / den[ok], 0.0, 1.0)
    return out


def pooled_share(attacked: Sequence[float], attacked_reference: Sequence[float], before: Sequence[float],
                 reference_before: Sequence[float]) -> float | None:
    """The same ratio on the means over samples (the model-level accuracies), clipped to [0, 1]; None when the
    original is not more accurate than the retrain control on these samples."""
    a, ar, b, rb = (float(np.mean(np.asarray(x, dtype=np.float64))) for x in
                    (attacked, attacked_reference, before, reference_before))
    return float(np.clip((a - ar) / (b - rb), 0.0, 1.0)) if b - rb > 0 else None
