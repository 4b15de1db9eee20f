"""Gradient difference: ascent on the forget answers' NLL plus ``retain_weight`` x descent on the retain
answers' NLL (Liu et al. 2022; the TOFU baseline)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from analysis.scoring import PairBatch
from analysis.unlearning.base import GradientMethod, UnlearnContext, nll, register, retain_term


@register("grad_diff", label="gradient difference")
class GradDiff(GradientMethod):
    defaults: ClassVar[dict[str, Any]] = {"steps": 100, "lr": 3e-4, "retain_weight": 3.0}

    def loss(
        self,
        ctx: UnlearnContext,
        forget: PairBatch,
        forget_idx: torch.Tensor,
        retain: PairBatch | None,
        retain_idx: torch.Tensor | None,
    ) -> torch.Tensor:
        forget_term = -nll(ctx.model(forget.tokens, return_type="logits"), forget)
        return forget_term + retain_term(ctx, retain)
