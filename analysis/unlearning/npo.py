"""Negative Preference Optimization (Zhang et al. 2024, "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning").

Forget term, per sample, with ``log p`` the *summed* answer-token log-prob and the reference the frozen
original model::

    L_NPO = -(2 / beta) * logsigmoid(-beta * (log p_theta(y|x) - log p_ref(y|x)))

plus ``retain_weight`` x the retain answers' NLL. Unlike gradient ascent the forget term is bounded: its
gradient fades once ``p_theta << p_ref``. The reference log-probs are computed once, before training
(the reference is frozen), so no second model is kept in memory.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from analysis.scoring import answer_logprob
from analysis.unlearning.base import (
    GradientMethod,
    StepBatch,
    UnlearnContext,
    forget_logprob,
    register,
    retain_term,
)


def npo_loss(logp: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over rows of ``-(2/beta) logsigmoid(-beta (logp - logp_ref))``."""
    return (-(2.0 / beta) * F.logsigmoid(-beta * (logp - logp_ref))).mean()


@torch.no_grad()
def reference_logprobs(ctx: UnlearnContext) -> torch.Tensor:
    """[n_forget] summed answer log-prob of every forget sample under the original (frozen) model."""
    logits = ctx.original.model(ctx.forget_batch.tokens, return_type="logits")
    return answer_logprob(logits, ctx.forget_batch, "sum").detach()


@register("npo", label="NPO (negative preference optimization)")
class NPO(GradientMethod):
    defaults: ClassVar[dict[str, Any]] = {"steps": 100, "lr": 3e-4, "retain_weight": 1.0}

    def prepare(self, ctx: UnlearnContext) -> None:
        self.ref = reference_logprobs(ctx)

    def loss(self, ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
        logp = forget_logprob(ctx, step)
        forget_term = npo_loss(logp, self.ref[step.forget_idx.to(self.ref.device)], ctx.cfg.npo_beta)
        return forget_term + retain_term(ctx, step.retain)
