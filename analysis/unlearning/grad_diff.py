"""Gradient difference: ascent on the forget answers' NLL plus ``retain_weight`` x descent on the retain
answers' NLL (Liu et al. 2022; the TOFU baseline)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from analysis.unlearning.base import GradientMethod, StepBatch, UnlearnContext, nll, register, retain_term


@register("grad_diff", label="gradient difference")
class GradDiff(GradientMethod):
    defaults: ClassVar[dict[str, Any]] = {"steps": 100, "lr": 3e-4, "retain_weight": 3.0}

    def loss(self, ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
        forget_term = -nll(ctx.model(step.forget.tokens, return_type="logits"), step.forget)
        return forget_term + retain_term(ctx, step.retain)
