"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
Unlearning"): NPO without the reference model, on the length-normalised log-prob::

    L_SimNPO = -(2 / beta) * logsigmoid(-(beta / |y|) * log p_theta(y|x) - gamma)

with ``|y|`` the answer's token count and ``log p`` summed over its tokens, plus ``retain_weight`` x the
retain answers' NLL.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from analysis.unlearning.base import (
    GradientMethod,
    StepBatch,
    UnlearnContext,
    forget_logprob,
    register,
    retain_term,
)


def simnpo_loss(logp_sum: torch.Tensor, answer_lens: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Mean over rows of ``-(2/beta) logsigmoid(-(beta/|y|) logp_sum - gamma)``."""
    norm = logp_sum / answer_lens.clamp(min=1).to(logp_sum.dtype)
    return (-(2.0 / beta) * F.logsigmoid(-beta * norm - gamma)).mean()


@register("simnpo", label="SimNPO (reference-free NPO)")
class SimNPO(GradientMethod):
    defaults: ClassVar[dict[str, Any]] = {"steps": 100, "lr": 3e-4, "retain_weight": 1.0}

    def loss(self, ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
        logp = forget_logprob(ctx, step)
        forget_term = simnpo_loss(logp, step.forget.answer_lens, ctx.cfg.simnpo_beta, ctx.cfg.simnpo_gamma)
        return forget_term + retain_term(ctx, step.retain)
