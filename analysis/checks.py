"""Checks of numeric options, shared by the options dataclasses' ``validated()`` (AnalysisInputError naming the
field) and the CLI's argparse types in analysis.cli_common (a parse-time error naming the ``--option``), so
that the app, the Python API and the command line reject the same values with the same words. No torch here.
"""

from __future__ import annotations

import math
import numbers

from analysis.errors import AnalysisInputError

SEED_MAX = 2**32 - 1  # the widest range every seeded generator here accepts (numpy's)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _bounds(minimum: float | None, maximum: float | None, min_open: bool, max_open: bool) -> str:
    if minimum is not None and maximum is not None:
        return f" in {'(' if min_open else '['}{_num(minimum)}, {_num(maximum)}{')' if max_open else ']'}"
    if minimum is not None:
        return f" {'>' if min_open else '>='} {_num(minimum)}"
    if maximum is not None:
        return f" {'<' if max_open else '<='} {_num(maximum)}"
    return ""


def int_expected(minimum: int | None = None, maximum: int | None = None) -> str:
    """What an integer option expects, in words: ``"a whole number >= 1"``."""
    return "a whole number" + _bounds(minimum, maximum, False, False)


def float_expected(minimum: float | None = None, maximum: float | None = None, *, min_open: bool = False,
                   max_open: bool = False) -> str:
    """What a float option expects, in words: ``"a finite number > 0"``, ``"a number in (0, 0.5]"``."""
    if minimum is not None and maximum is not None:
        return "a number" + _bounds(minimum, maximum, min_open, max_open)
    return "a finite number" + _bounds(minimum, maximum, min_open, max_open)


def int_in_range(value: int, minimum: int | None = None, maximum: int | None = None) -> bool:
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


def float_in_range(value: float, minimum: float | None = None, maximum: float | None = None, *,
                   min_open: bool = False, max_open: bool = False) -> bool:
    if not math.isfinite(value):
        return False
    if minimum is not None and (value <= minimum if min_open else value < minimum):
        return False
    return maximum is None or (value < maximum if max_open else value <= maximum)


def check_int(name: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int, or AnalysisInputError ``"<name> must be a whole number >= 1, got 0"``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not int_in_range(int(value), minimum,
                                                                                              maximum):
        raise AnalysisInputError(f"{name} must be {int_expected(minimum, maximum)}, got {value!r}")
    return int(value)


def check_float(name: str, value: object, minimum: float | None = None, maximum: float | None = None, *,
                min_open: bool = False, max_open: bool = False) -> float:
    """``value`` as a finite float within the bounds, or AnalysisInputError ``"<name> must be a finite number
    > 0, got inf"``."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if not ok or not float_in_range(float(value), minimum, maximum,  # type: ignore[arg-type]
                                    min_open=min_open, max_open=max_open):
        expected = float_expected(minimum, maximum, min_open=min_open, max_open=max_open)
        raise AnalysisInputError(f"{name} must be {expected}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_seed(name: str, value: object) -> int:
    """A seed: a whole number in [0, 2**32 - 1]."""
    return check_int(name, value, 0, SEED_MAX)
