"""One registry helper for every family of interchangeable members (unlearning methods, corruptions,
emphasis strategies, EAP-IG metrics and baselines, CUD distances, steering modes, ...), the way SAELens
registers SAE architectures: members register under a name, lookups by an unknown name raise one clear
:class:`~analysis.errors.AnalysisInputError` naming the known choices, and the CLI and the app read the
choices and their labels from the registry instead of repeating them.

Usage::

    CORRUPTIONS: Registry[type[Corruption]] = Registry("corruption")

    @CORRUPTIONS.register("str", label="symmetric token replacement")
    class SymmetricTokenReplacement(Corruption): ...

    CORRUPTIONS.get("str")        # the class; AnalysisInputError for an unknown name
    CORRUPTIONS.names()           # ("noise", "str"), in registration order
    CORRUPTIONS.labels()          # {"noise": "...", "str": "..."}

Members may be classes or functions. Where a member carries its own ``name`` / ``label`` class attributes
(``@CORRUPTIONS.register()`` without arguments), the registry reads them.

A registry declared in a light module whose members live in a heavy one (``options.py`` declares it, the
torch-importing engine registers the members) names that module: ``Registry("ablation",
members_from="analysis.attribution.core")`` imports it on the first lookup, so a reader never sees it empty.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from analysis.errors import AnalysisInputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named members of one family, in registration order."""

    def __init__(self, family: str, members_from: str | None = None) -> None:
        self.family = family  # for messages: "unknown {family} 'x' (expected one of ...)"
        self._members: dict[str, T] = {}
        self._labels: dict[str, str] = {}
        self._members_from = members_from  # the module registering the members, imported on first lookup

    def _load(self) -> None:
        if self._members_from is not None:
            module, self._members_from = self._members_from, None
            importlib.import_module(module)

    def register(self, name: str | None = None, label: str | None = None) -> Callable[[T], T]:
        """Decorator adding a member under ``name`` (default: the member's ``name`` attribute)."""

        def deco(member: T) -> T:
            key = name if name is not None else getattr(member, "name", None)
            if not isinstance(key, str) or not key:
                raise ValueError(f"a {self.family} needs a name to register")
            if key in self._members and self._members[key] is not member:
                raise ValueError(f"{self.family} {key!r} registered twice")
            self._members[key] = member
            self._labels[key] = label if label is not None else str(getattr(member, "label", "") or key)
            return member

        return deco

    def add(self, name: str, member: T, label: str | None = None) -> T:
        """Register ``member`` under ``name`` (for members that are values, not decorated definitions)."""
        return self.register(name, label)(member)

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._members[name]
        except (KeyError, TypeError):
            raise AnalysisInputError(
                f"unknown {self.family} {name!r} (expected one of {', '.join(self._members)})") from None

    def check(self, name: str) -> str:
        """``name`` if registered, else the same error as :meth:`get` (for validating options)."""
        self.get(name)
        return name

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._members)

    def labels(self) -> dict[str, str]:
        self._load()
        return dict(self._labels)

    def label(self, name: str) -> str:
        self._load()
        return self._labels.get(name, name)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._members

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._members)

    def __len__(self) -> int:
        self._load()
        return len(self._members)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return list(self._members.items())
