"""Keyword-emphasis strategies behind a registry (one class per member, like SAELens registers SAE
architectures, and like analysis.tracing's corruptions).

A strategy re-emphasises a prompt's keywords (the KeyTokens of an attribution) and the recovery analysis
checks whether a forgotten answer comes back. Two levels:

- *prompt*: rewrite the prompt's token ids (``rewrite``), e.g. repeat the keywords or prefix them;
- *activation*: leave the prompt alone and hook the forward (``hooks``), e.g. scale attention to the keyword
  positions.

Prompts are rewritten at the level of token ids, from the prompt's own tokens, so a word-level tokenizer
that only knows its corpus words (the organism's) never meets an unknown word. Add a member with
``@EMPHASES.register()`` on an :class:`Emphasis` subclass (its ``name`` and ``label`` are read) in a module
imported at the end of this file; the CLI's ``--strategy`` choices and the app's picker read the registry.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from transformer_lens.hook_points import HookPoint

from analysis.attribution.options import EmphasisParams  # declared with the options (no torch there)
from analysis.errors import AnalysisInputError
from analysis.registry import Registry

if TYPE_CHECKING:
    from analysis.attribution.core import PromptIds
    from analysis.models.handle import ModelHandle

HookFn = Callable[[torch.Tensor, HookPoint], torch.Tensor]
LEVELS: tuple[str, ...] = ("prompt", "activation")
SEPARATOR_CANDIDATES: tuple[str, ...] = (".", ",", ":", ";")


class Emphasis(ABC):  # noqa: B024 - members override rewrite and/or hooks; neither is required
    name: ClassVar[str]
    label: ClassVar[str]
    level: ClassVar[str]
    uses: ClassVar[tuple[str, ...]] = ()
    baseline: ClassVar[bool] = False  # the plain prompt (no emphasis): not a strategy to compare

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "level" in cls.__dict__ and cls.level not in LEVELS:
            raise ValueError(f"emphasis strategy {cls.__name__} has unknown level {cls.level!r}")

    def __init__(self, params: EmphasisParams | None = None) -> None:
        self.params = params or EmphasisParams()

    def key(self) -> dict[str, Any]:
        p = self.params
        values = {"factor": float(p.factor), "layers": None if p.layers is None else sorted(set(p.layers)),
                  "copies": int(p.copies), "separator": p.separator}
        return {"name": self.name, **{u: values[u] for u in self.uses}}

    def validate(self, handle: ModelHandle) -> None:
        p = self.params
        if "factor" in self.uses and not p.factor > 0:
            raise AnalysisInputError(f"{self.name}: the emphasis factor must be positive, got {p.factor}")
        if "copies" in self.uses and p.copies < 1:
            raise AnalysisInputError(f"{self.name}: copies must be at least 1, got {p.copies}")
        if "layers" in self.uses and p.layers is not None:
            if not p.layers:
                raise AnalysisInputError(f"{self.name}: choose at least one layer")
            bad = [layer for layer in p.layers if not 0 <= layer < handle.n_layers]
            if bad:
                raise AnalysisInputError(f"{self.name}: layer {bad[0]} is outside the model's layers "
                                         f"0..{handle.n_layers - 1}")

    def rewrite(self, item: PromptIds, keywords: Sequence[int], handle: ModelHandle) -> tuple[PromptIds, list[int]]:
        """The emphasised prompt and the positions of the keywords in it (default: unchanged)."""
        return item, list(keywords)

    def hooks(self, handle: ModelHandle, mask: torch.Tensor) -> list[tuple[str, HookFn]]:
        """Forward hooks for a batch; ``mask`` [B, T] is True at keyword positions (default: none)."""
        return []

    def layer_list(self, handle: ModelHandle) -> list[int]:
        p = self.params.layers
        return list(range(handle.n_layers)) if p is None else sorted(set(p))


EMPHASES: Registry[type[Emphasis]] = Registry("emphasis strategy")


def get_emphasis(name: str, params: EmphasisParams | None = None) -> Emphasis:
    """An instance of the strategy registered as ``name`` (AnalysisInputError naming the choices if none)."""
    return EMPHASES.get(name)(params)


def strategy_names(include_baseline: bool = False) -> list[str]:
    """Registered strategies, prompt-level first (registration order within a level)."""
    names = [n for n, c in EMPHASES.items() if include_baseline or not c.baseline]
    return sorted(names, key=lambda n: LEVELS.index(EMPHASES.get(n).level))


def emphasis_help() -> str:
    """``name: label (level)`` of every strategy, for the CLI's and the app's help."""
    return "; ".join(f"{n}: {EMPHASES.label(n)} ({EMPHASES.get(n).level})" for n in strategy_names())


from analysis.attribution.emphasis import activation, prompt  # noqa: E402,F401  (registers the members)

__all__ = ["EMPHASES", "LEVELS", "Emphasis", "EmphasisParams", "emphasis_help", "get_emphasis", "strategy_names"]
