"""The method instance `erasure unlearn` runs for each ``CheckpointMethod``, and the one method of its own: the
retrain control on a checkpoint ("retrain from a base").

The organism's ``retrain`` control trains a new organism on its synthetic corpus minus the forget facts; a user's
checkpoint has no such corpus. Its counterpart here is how TOFU builds its retain models: the BASE model (the
one before it learned the forget set) fine-tuned on the retain set only (open-unlearning
configs/experiment/finetune/tofu/default.yaml: lr 1e-5, 5 epochs). :class:`RetainFinetune` is that fine-tune
in the shared loop: the retain answers' NLL, every parameter trained, the forget set recorded in the trajectory
(its answer probabilities under the base as it trains) but never trained on.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from analysis.errors import AnalysisInputError
from analysis.unlearning.base import GradientMethod, StepBatch, UnlearnContext, UnlearnMethod, get_method, nll


class RetainFinetune(GradientMethod):
    """Fine-tune on the retain set only (the retrain control on a checkpoint, from a base). The step's forget rows
    are drawn (so the batch order follows the shared loop) but not used."""

    name: ClassVar[str] = "retrain"
    label: ClassVar[str] = "retrain from a base: fine-tuned on the retain set only (control)"
    role = "control"
    defaults: ClassVar[dict[str, Any]] = {"steps": 100, "lr": 1e-3}  # the organism preset (a from-scratch rate)

    def loss(self, ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
        assert step.retain is not None, "the retain fine-tune needs a retain batch"
        return nll(ctx.model(step.retain.tokens, return_type="logits"), step.retain)


def method_for(method: str, depth_loss: str = "npo", layer: int | None = None, n_layers: int | None = None
               ) -> UnlearnMethod:
    """A fresh instance of ``method``: a registry method, :class:`RetainFinetune` for ``retrain``, or the zoo's
    ``DepthSuppression(layer, depth_loss)`` (``layer`` default: the middle, ``n_layers // 2``)."""
    if method == "retrain":
        return RetainFinetune()
    if method == "depth_suppression":
        from analysis.zoo.suppression import DepthSuppression

        if layer is None:
            if n_layers is None:
                raise AnalysisInputError("depth_suppression needs a layer")
            layer = max(1, n_layers // 2)
        if n_layers is not None and not 1 <= layer < n_layers:
            raise AnalysisInputError(f"layer: depth_suppression freezes the weights below layer L, 1 <= L < "
                                     f"{n_layers} for this model, got {layer} (L = {n_layers} would be the "
                                     "readout-only control, readout_suppression)")
        return DepthSuppression(layer, depth_loss)
    return get_method(method)
