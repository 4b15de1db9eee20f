"""Corruption kinds behind a registry (one file per member, like SAELens registers SAE architectures).

A corruption turns the clean input of a trace into ``n`` corrupted inputs: token ids, plus an optional
additive change to the token embeddings (the output of ``hook_embed``). Add a kind with
``@CORRUPTIONS.register()`` on a :class:`Corruption` subclass (its ``name`` and ``label`` are read) in a
module imported below; the CLI's ``--corruption`` choices and the app's radio read the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from analysis.registry import Registry

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
    label: ClassVar[str]  # short, for the app's choice
    description: ClassVar[str]  # one line, for help texts (CLI and app)
    stochastic: ClassVar[bool] = False  # draws n_samples random corruptions
    uses_noise_scale: ClassVar[bool] = False
    # replaces the subject with another of the pool (analysis.subjects.pick_replacement): its results depend on
    # what the pool's subjects answer and on the replacement rule (both in the store key)
    replaces_subject: ClassVar[bool] = False

    @abstractmethod
    def corrupt(self, handle: ModelHandle, inp: SubjectInput, pool: SubjectPool, options: TraceOptions) -> Corrupted:
        """The corrupted inputs of ``inp``; raise AnalysisInputError when this sample cannot be corrupted."""


CORRUPTIONS: Registry[type[Corruption]] = Registry("corruption")


def get_corruption(name: str) -> Corruption:
    """An instance of the corruption registered as ``name`` (AnalysisInputError naming the choices if none)."""
    return CORRUPTIONS.get(name)()


def corruption_help() -> str:
    """``name: description`` of every corruption, for the CLI's and the app's help."""
    return "; ".join(f"{name}: {cls.description}" for name, cls in CORRUPTIONS.items())


from analysis.tracing.corruptions import noise, replace  # noqa: E402,F401  (registers the members)

__all__ = ["CORRUPTIONS", "Corrupted", "Corruption", "corruption_help", "get_corruption"]
