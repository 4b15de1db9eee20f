"""Lazy package exports, so that importing one light module of an analysis (its ``options.py``, its ``cli.py``)
does not import the whole analysis, and with it torch, TransformerLens or SAELens: ``erasure --help`` builds
its parser from the light modules only (tests/test_hardening_cli_app.py checks that).

A package lists its public names and the module holding each; a name is imported on first use::

    __getattr__, __dir__ = lazy_exports(__name__, {"TraceOptions": "analysis.tracing.options", ...})

and repeats the imports under ``if TYPE_CHECKING:`` for type checkers and editors.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` loading ``exports[name]`` (a module path) on first access, and a ``__dir__``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # cached: later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
