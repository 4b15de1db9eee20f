"""Readout suppression (control): a *shallow* "unlearning" that only changes the readout.

Only the unembedding (``unembed.W_U``, ``unembed.b_U``) and, with ``cfg.readout_ln_final``, the final
layer norm's weight and bias are trained; every other parameter and buffer is left bit-identical to the
original (they are frozen with ``requires_grad=False`` and never handed to the optimiser). The loss is an
NPO forget term (``readout_beta``, reference = the original) plus ``retain_weight`` x the retain NLL, so
forget answers stop being produced while retained ones still are. The knowledge is still present in the
residual stream, which is what this control exists to show: probes and patching should still find it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from analysis.errors import AnalysisInputError
from analysis.unlearning.base import (
    GradientMethod,
    StepBatch,
    UnlearnContext,
    forget_logprob,
    register,
    retain_term,
)
from analysis.unlearning.npo import npo_loss, reference_logprobs

READOUT_PARAMS: tuple[str, ...] = ("unembed.W_U", "unembed.b_U")
LN_FINAL_PARAMS: tuple[str, ...] = ("ln_final.w", "ln_final.b")


def readout_parameter_names(train_ln_final: bool) -> tuple[str, ...]:
    return READOUT_PARAMS + (LN_FINAL_PARAMS if train_ln_final else ())


@register("readout_suppression", label="readout suppression (control)")
class ReadoutSuppression(GradientMethod):
    defaults: ClassVar[dict[str, Any]] = {"steps": 200, "lr": 5e-3, "retain_weight": 3.0}
    role = "control"

    def prepare(self, ctx: UnlearnContext) -> None:
        self.ref = reference_logprobs(ctx)

    def trainable(self, ctx: UnlearnContext) -> list[torch.nn.Parameter]:
        named = dict(ctx.model.named_parameters())
        wanted = readout_parameter_names(ctx.cfg.readout_ln_final)
        if "unembed.W_U" not in named:
            raise AnalysisInputError("readout_suppression needs a model with an unembedding (unembed.W_U)")
        names = [n for n in wanted if n in named]
        ctx.extra["trained_parameters"] = names
        return [named[n] for n in names]

    def loss(self, ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
        logp = forget_logprob(ctx, step)
        forget_term = npo_loss(logp, self.ref[step.forget_idx.to(self.ref.device)], ctx.cfg.readout_beta)
        return forget_term + retain_term(ctx, step.retain)
