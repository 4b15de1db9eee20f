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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from analysis.errors import AnalysisInputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named members of one family, in registration order."""

    def __init__(self, family: str) -> None:
        self.family = family  # for messages: "unknown {family} 'x' (expected one of ...)"
        self._members: dict[str, T] = {}
        self._labels: dict[str, str] = {}

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
        return tuple(self._members)

    def labels(self) -> dict[str, str]:
        return dict(self._labels)

    def label(self, name: str) -> str:
        return self._labels.get(name, name)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def items(self) -> list[tuple[str, T]]:
        return list(self._members.items())
