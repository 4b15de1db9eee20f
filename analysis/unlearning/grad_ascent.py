"""Gradient ascent: maximise the forget answers' NLL. No retain term, so it also damages retained facts
(the expected, realistic failure mode of plain ascent)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from analysis.unlearning.base import GradientMethod, StepBatch, UnlearnContext, nll, register


@register("grad_ascent", label="gradient ascent")
class GradAscent(GradientMethod):
    defaults: ClassVar[dict[str, Any]] = {"steps": 100, "lr": 7e-5}
    needs_retain = False

    def loss(self, ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
        return -nll(ctx.model(step.forget.tokens, return_type="logits"), step.forget)
