"""Activation-level emphasis: the prompt is unchanged; hooks make the model weigh its keywords more.

- ``attn_scores``: add log(factor) to the attention scores of every query for the keyword keys
  (``blocks.{l}.attn.hook_attn_scores``, before the softmax);
- ``attn_pattern``: multiply the attention weights on the keyword keys by ``factor`` and renormalise each
  row (``blocks.{l}.attn.hook_pattern``). Without attention sinks this equals ``attn_scores`` exactly
  (softmax(s + log f) = f e^s / sum); both are offered because users know both hooks;
- ``embed_scale``: multiply the keywords' token embeddings (``hook_embed``) by ``factor``.

Attention strategies act on every layer, or on ``layers``. A factor of 1 changes nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from transformer_lens.hook_points import HookPoint

from analysis.attribution.emphasis import EMPHASES, Emphasis, HookFn
from analysis.hooks import EMBED, attn_pattern, attn_scores

if TYPE_CHECKING:
    from analysis.models.handle import ModelHandle


@EMPHASES.register()
class AttentionScores(Emphasis):
    name = "attn_scores"
    label = "add log(factor) to attention scores on keyword keys"
    level = "activation"
    uses = ("factor", "layers")

    def hooks(self, handle: ModelHandle, mask: torch.Tensor) -> list[tuple[str, HookFn]]:
        bump = math.log(self.params.factor)

        def fn(act: torch.Tensor, hook: HookPoint) -> torch.Tensor:  # [B, H, Q, K]
            add = mask[:, None, None, : act.shape[-1]].to(act.dtype) * bump
            return act + add

        return [(attn_scores(layer), fn) for layer in self.layer_list(handle)]


@EMPHASES.register()
class AttentionPattern(Emphasis):
    name = "attn_pattern"
    label = "scale attention weights on keyword keys and renormalise"
    level = "activation"
    uses = ("factor", "layers")

    def hooks(self, handle: ModelHandle, mask: torch.Tensor) -> list[tuple[str, HookFn]]:
        f = float(self.params.factor)

        def fn(act: torch.Tensor, hook: HookPoint) -> torch.Tensor:  # [B, H, Q, K]
            w = 1.0 + (f - 1.0) * mask[:, None, None, : act.shape[-1]].to(act.dtype)
            scaled = act * w
            return scaled / scaled.sum(-1, keepdim=True).clamp_min(torch.finfo(act.dtype).tiny)

        return [(attn_pattern(layer), fn) for layer in self.layer_list(handle)]


@EMPHASES.register()
class EmbedScale(Emphasis):
    name = "embed_scale"
    label = "scale the keywords' token embeddings"
    level = "activation"
    uses = ("factor",)

    def hooks(self, handle: ModelHandle, mask: torch.Tensor) -> list[tuple[str, HookFn]]:
        f = float(self.params.factor)

        def fn(act: torch.Tensor, hook: HookPoint) -> torch.Tensor:  # [B, T, d_model]
            return act * (1.0 + (f - 1.0) * mask[:, : act.shape[1], None].to(act.dtype))

        return [(EMBED, fn)]
