"""Validated names and study-relative paths: every path built from a manifest or sample value is built
from values checked here, and checked to stay inside the study.

Light on purpose (no torch). Fingerprints have their own check: ``analysis.models.handle.is_fingerprint``.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath

# One rule for every name that becomes part of a path or a key: model names of a study (and the like).
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
NAME_RULE = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit, without '..'"
_NAME_RE = re.compile(NAME_PATTERN)


def is_safe_name(value: object) -> bool:
    """Whether ``value`` is a name that is safe as one path component (``NAME_RULE``)."""
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None and ".." not in value


def relative_path_problem(value: object) -> str | None:
    """Why ``value`` is not a safe path relative to a study root (None when it is): a non-empty string,
    not absolute, without '..' components, NUL characters or backslashes."""
    if not isinstance(value, str) or not value.strip():
        return "expected a non-empty relative path (text)"
    if "\x00" in value or "\\" in value:
        return "expected a relative path with '/' separators (no backslashes or NUL characters)"
    pure = PurePosixPath(value)
    if pure.is_absolute() or PureWindowsPath(value).drive:
        return "expected a path relative to the study directory, not an absolute one"
    if ".." in pure.parts:
        return "expected a path inside the study directory (no '..' components)"
    return None


def is_inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside ``root`` (symlinks resolved)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())
