"""Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark").

At layer ``l = cfg.rmu_layer`` (default: the middle layer, ``n_layers // 2``) the residual stream after
the block (``hooks.resid_post(l)`` = ``blocks.{l}.hook_resid_post``, recorded in ``result.extra["rmu_hook"]``;
computed with ``stop_at_layer=l+1``, which returns exactly that activation and skips the later layers) is

* pushed, on forget inputs, toward a fixed random direction: ``MSE(act_forget, c * u)`` with ``u`` a
  unit vector drawn once from ``torch.rand`` (as in the reference implementation) with the run's seeded
  generator and ``c = cfg.rmu_coeff``;
* held, on retain inputs, at the frozen original's activation:
  ``retain_weight * rmu_alpha * MSE(act_retain, act_retain_orig)``.

Positions. The forget term is taken at the answer-predicting positions (``PairBatch.target_mask``: the
last prompt token and every answer token but the last), where the fact is read out; template and BOS
positions are shared with retain prompts, and steering them too would fight the retain term. The retain
term is taken at every real (non-pad) position of the retain rows.

Parameters. As in RMU, only MLPs just below the steered layer are updated: every parameter of
``blocks[i].mlp`` for ``i`` in ``max(0, l-2) .. l`` (the reference implementation updates layers
l-2..l of a 7B model; with the organism's 4 layers and l = 2 that is the MLPs of layers 0, 1, 2).
Attention, embeddings, layer norms, later layers and the unembedding stay bit-identical.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from analysis import hooks
from analysis.errors import AnalysisInputError
from analysis.unlearning.base import GradientMethod, StepBatch, UnlearnContext, real_positions, register

UPDATE_SPAN = 3  # MLPs of layers l-2, l-1, l


def rmu_layer(ctx: UnlearnContext) -> int:
    n_layers = int(ctx.model.cfg.n_layers)
    layer = ctx.cfg.rmu_layer if ctx.cfg.rmu_layer is not None else n_layers // 2
    if not 0 <= layer < n_layers:
        raise AnalysisInputError(f"rmu_layer {layer} is out of range for a model with {n_layers} layers")
    return layer


def resid_post_activation(model: torch.nn.Module, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """[B, T, d_model] float32 activation at ``hooks.resid_post(layer)`` (the forward stops after that block)."""
    return model(tokens, stop_at_layer=layer + 1).float()


@register("rmu", label="RMU (representation misdirection)")
class RMU(GradientMethod):
    defaults: ClassVar[dict[str, Any]] = {"steps": 100, "lr": 3e-3, "retain_weight": 1.0}

    def prepare(self, ctx: UnlearnContext) -> None:
        self.layer = rmu_layer(ctx)
        d_model = int(ctx.model.cfg.d_model)
        u = torch.rand(d_model, generator=ctx.generator, dtype=torch.float32)
        self.target = (ctx.cfg.rmu_coeff * u / u.norm()).to(ctx.device)
        assert ctx.retain_batch is not None
        with torch.no_grad():
            self.retain_ref = resid_post_activation(ctx.original.model, ctx.retain_batch.tokens, self.layer).detach()
        ctx.extra["rmu_layer"] = self.layer
        ctx.extra["rmu_hook"] = hooks.resid_post(self.layer)
        ctx.extra["rmu_updated_layers"] = list(range(max(0, self.layer - UPDATE_SPAN + 1), self.layer + 1))

    def trainable(self, ctx: UnlearnContext) -> list[torch.nn.Parameter]:
        blocks = ctx.model.blocks
        return [p for i in ctx.extra["rmu_updated_layers"] for p in blocks[i].mlp.parameters()]

    def loss(self, ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
        forget, retain = step.forget, step.retain
        assert retain is not None and step.retain_idx is not None
        act_f = resid_post_activation(ctx.model, forget.tokens, self.layer)[:, :-1][forget.target_mask]
        forget_term = ((act_f - self.target) ** 2).mean()
        act_r = resid_post_activation(ctx.model, retain.tokens, self.layer)
        ref_r = self.retain_ref[step.retain_idx.to(self.retain_ref.device), : retain.tokens.shape[1]]
        mask = real_positions(retain)
        retain_term = ((act_r[mask] - ref_r[mask]) ** 2).mean()
        return forget_term + ctx.cfg.retain_weight * ctx.cfg.rmu_alpha * retain_term
