"""Corruption kinds behind a registry (one file per member, like SAELens registers SAE architectures).

A corruption turns the clean input of a trace into ``n`` corrupted inputs: token ids, plus an optional
additive change to the token embeddings (the output of ``hook_embed``). Register a new kind with
``@register_corruption`` in a module imported below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from analysis.errors import AnalysisInputError

if TYPE_CHECKING:
    from analysis.models.handle import ModelHandle
    from analysis.subjects import SubjectInput, SubjectPool
    from analysis.tracing.options import TraceOptions


@dataclass
class Corrupted:
    """``tokens`` [n, T]; ``embed_delta`` [n, T, d_model] added to ``hook_embed`` (None: no change)."""

    tokens: torch.Tensor
    embed_delta: torch.Tensor | None = None
    info: dict[str, object] | None = None  # what was done, for the result's options (noise std, replacement)

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])


class Corruption(ABC):
    name: ClassVar[str]
    label: ClassVar[str]
    stochastic: ClassVar[bool] = False  # draws n_samples random corruptions
    uses_noise_scale: ClassVar[bool] = False

    @abstractmethod
    def corrupt(self, handle: ModelHandle, inp: SubjectInput, pool: SubjectPool, options: TraceOptions) -> Corrupted:
        """The corrupted inputs of ``inp``; raise AnalysisInputError when this sample cannot be corrupted."""


CORRUPTIONS: dict[str, type[Corruption]] = {}


def register_corruption(cls: type[Corruption]) -> type[Corruption]:
    if cls.name in CORRUPTIONS:
        raise ValueError(f"corruption {cls.name!r} registered twice")
    CORRUPTIONS[cls.name] = cls
    return cls


def get_corruption(name: str) -> Corruption:
    try:
        return CORRUPTIONS[name]()
    except KeyError:
        raise AnalysisInputError(f"unknown corruption {name!r} (expected one of {', '.join(CORRUPTIONS)})") from None


from analysis.tracing.corruptions import noise, replace  # noqa: E402,F401  (registers the members)

__all__ = ["CORRUPTIONS", "Corrupted", "Corruption", "get_corruption", "register_corruption"]
