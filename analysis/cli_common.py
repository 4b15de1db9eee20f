"""Plumbing every `erasure` verb shares: the one-line-error parser, the ``verb`` helper that adds ``--json``,
printing a result (JSON or text), a tqdm progress callback, the Ray / multi-GPU arguments of batch verbs and
opening the study a verb names. Each analysis's ``cli.py`` registers its verbs with ``add_parser(sub, verb)``
and uses these; nothing here imports torch, so ``erasure --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from analysis.checks import SEED_MAX, float_expected, float_in_range, int_expected, int_in_range
from analysis.errors import AnalysisInputError

if TYPE_CHECKING:
    from analysis.distributed import RayExecutor
    from analysis.study import Study

LOCAL_RAY = "local"  # --ray without an address (analysis.distributed.LOCAL)

VerbFn = Callable[[Any, str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the usage block
        self.exit(2, f"erasure: error: {message} (see `{self.prog} --help`)\n")


def verb(parent: Any, name: str, fn: Callable[[argparse.Namespace], None], help_: str) -> argparse.ArgumentParser:
    """A subcommand ``name`` running ``fn(args)``, with ``--json``."""
    sp = parent.add_parser(name, help=help_, description=help_)
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(fn=fn)
    return sp


# ---- JSON: never NaN or Infinity -------------------------------------------------------------------------
NOTE_SUFFIX = "_note"  # the sibling key saying why a value is null


def _nonfinite_word(x: float) -> str:
    return "NaN (not a number: undefined)" if math.isnan(x) else ("+Infinity" if x > 0 else "-Infinity")


def _safe(obj: Any, path: str, found: list[tuple[str, str]]) -> Any:
    """``obj`` with every non-finite float made None; ``(path, word)`` of each one appended to ``found``."""
    if isinstance(obj, float):  # float, numpy.float64
        if math.isfinite(obj):
            return obj
        found.append((path, _nonfinite_word(obj)))
        return None
    if isinstance(obj, dict):
        return {k: _safe(v, f"{path}.{k}" if path else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_safe(v, f"{path}[{i}]", found) for i, v in enumerate(obj)]
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return _safe(obj.tolist(), path, found)
    return obj


def _note(key: str, found: list[tuple[str, str]], scalar: bool, shown: int = 5) -> str:
    words = " or ".join(sorted({w for _, w in found}))
    if scalar:
        return f"null: the value was {words}"
    where = ", ".join(f"{key}{p}" for p, _ in found[:shown]) + (f" and {len(found) - shown} more"
                                                              if len(found) > shown else "")
    return f"{len(found)} value(s) are null, they were {words}: {where}"


def json_safe(obj: Any) -> Any:
    """``obj`` ready for strict JSON: every NaN / Infinity (float, numpy or torch, at any depth) becomes null.
    When ``obj`` is a record (a dict), each of its fields that held one gets a sibling ``"<field>_note"`` saying
    what it was (``"null: the value was +Infinity"``) or, for a field holding lists or maps, how many values
    are null and where (``"2 value(s) are null, they were NaN ...: scores.resid[0][1], ..."``), unless the
    record already has that key. Notes go on the outermost record only, so maps keyed by data (alphas, layers,
    sample ids, kinds) keep exactly their keys. Tuples become lists; anything else is left to ``json.dumps``."""
    if not isinstance(obj, dict):
        return _safe(obj, "", [])
    out: dict[Any, Any] = {}
    notes: dict[str, str] = {}
    for key, value in obj.items():
        found: list[tuple[str, str]] = []
        out[key] = _safe(value, "", found)
        if found:
            scalar = out[key] is None
            notes[f"{key}{NOTE_SUFFIX}"] = _note(str(key), [(p if p.startswith("[") else f".{p}", w)
                                                            for p, w in found], scalar)
    for key, note in notes.items():
        out.setdefault(key, note)
    return out


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON of ``obj`` (``json_safe`` first, then ``allow_nan=False``, so a value that slipped through
    fails loudly rather than printing a bare NaN); objects JSON does not know are written as ``str``."""
    return json.dumps(json_safe(obj), allow_nan=False, default=str, **kwargs)


def emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    """Print ``obj`` as one line of strict JSON (no NaN / Infinity: see ``json_safe``) under ``--json``, else
    ``text``."""
    print(dumps(obj) if args.json else text)


# ---- argparse types: parse-time errors that name the option ------------------------------------------------
# argparse turns an ArgumentTypeError into "argument --scale: <message>", one line through Parser.error.
def int_arg(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number within the bounds (``"expected a whole number >= 1, got '0'"``)."""
    expected = int_expected(minimum, maximum)

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not int_in_range(value, minimum, maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = "int"
    return parse


def _float(text: str, expected: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}, which is not a number") from None


def float_arg(minimum: float | None = None, maximum: float | None = None, *, min_open: bool = False,
              max_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number within the bounds (nan and inf are refused)."""
    expected = float_expected(minimum, maximum, min_open=min_open, max_open=max_open)

    def parse(text: str) -> float:
        value = _float(text, expected)
        if not float_in_range(value, minimum, maximum, min_open=min_open, max_open=max_open):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = "float"
    return parse


def float_list(minimum: float | None = None, *, min_open: bool = False,
               distinct: bool = False) -> Callable[[str], tuple[float, ...]]:
    """An argparse ``type=``: comma-separated finite numbers (``"1,2,5"``), at least one, each above
    ``minimum``, and (``distinct``) none given twice; the error names the value at fault."""
    expected = float_expected(minimum, min_open=min_open)

    def parse(text: str) -> tuple[float, ...]:
        items = [t.strip() for t in text.split(",")]
        if not any(items):
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers (each {expected}), got {text!r}")
        values: list[float] = []
        for item in items:
            if not item:
                raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got an empty value in {text!r}")
            try:
                value = float(item)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{item!r} in {text!r} is not a number (expected comma-separated "
                                                 f"numbers, each {expected})") from None
            if not float_in_range(value, minimum, min_open=min_open):
                raise argparse.ArgumentTypeError(f"each value must be {expected}, got {item!r} in {text!r}")
            if distinct and value in values:
                raise argparse.ArgumentTypeError(f"each value must be given once, got {item!r} twice in {text!r}")
            values.append(value)
        return tuple(values)

    parse.__name__ = "list of numbers"
    return parse


whole_number = int_arg()  # range checked later, with the other options it depends on (--workers, --n-devices)
positive_int = int_arg(1)
nonnegative_int = int_arg(0)
seed_int = int_arg(0, SEED_MAX)
finite_float = float_arg()
positive_float = float_arg(0, min_open=True)


# ---- progress: a ProgressFn drawn as a tqdm bar on stderr ------------------------------------------------
PROGRESS_ENV = "ERASURE_PROGRESS"  # "always": draw bars even when stderr is not a terminal; "never": no bars
PROGRESS_STEPS = 1000  # the bar's resolution (a fraction is shown as a percentage)
MESSAGE_CHARS = 80  # a longer message is shown as its start and its end
# measured only: the percentage reported by the analysis and the time elapsed, never an extrapolated "remaining"
BAR_FORMAT = "{l_bar}{bar}| {elapsed} elapsed{postfix}"


def progress_disabled() -> bool | None:
    """tqdm's ``disable`` for the CLI's bars: None (tqdm's rule: a bar only when stderr is a terminal, so logs
    and pipes get none) unless ``ERASURE_PROGRESS`` says ``always`` (False) or ``never`` (True)."""
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if value in ("always", "1", "yes", "on"):
        return False
    if value in ("never", "0", "no", "off"):
        return True
    return None


class ProgressBar:
    """A ``progress(fraction, message)`` callback (``analysis.store.ProgressFn``) drawing one tqdm bar on
    stderr: the fraction the analysis reports, as a percentage, its latest message and the time elapsed.
    Stdout is never written to, so ``--json`` output stays one JSON object. Use it as a context manager (the
    bar is cleared when the verb's work ends, also on an error)."""

    def __init__(self, desc: str, close_at_end: bool = False) -> None:
        from tqdm.auto import tqdm

        self.close_at_end = close_at_end
        self.bar = tqdm(total=PROGRESS_STEPS, desc=desc, leave=False, disable=progress_disabled(), file=sys.stderr,
                        bar_format=BAR_FORMAT, dynamic_ncols=True)

    def __call__(self, frac: float, msg: str) -> None:
        frac = 0.0 if not math.isfinite(frac) else min(1.0, max(0.0, frac))
        self.bar.n = round(frac * PROGRESS_STEPS)
        self.bar.set_postfix_str(msg if len(msg) <= MESSAGE_CHARS else f"{msg[:MESSAGE_CHARS // 2 - 1]}…"
                                 f"{msg[-(MESSAGE_CHARS // 2):]}", refresh=True)
        if self.close_at_end and frac >= 1:
            self.close()

    def part(self, i: int, n: int, prefix: str = "") -> Callable[[float, str], None]:
        """The ProgressFn of the ``i``-th (from 0) of ``n`` consecutive jobs of one verb (e.g. one per model):
        its fraction mapped onto ``[i / n, (i + 1) / n]`` of this bar, its messages prefixed."""
        n = max(1, n)

        def report(frac: float, msg: str) -> None:
            self((i + min(1.0, max(0.0, frac))) / n, f"{prefix}{msg}")

        return report

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(desc: str) -> ProgressBar:
    """The CLI's one progress adapter: ``with progress_bar("restore npo") as progress: run(..., progress=progress)``."""
    return ProgressBar(desc)


def tqdm_progress(desc: str) -> ProgressBar:
    """A ``progress(fraction, message)`` callback drawing a tqdm bar on stderr, cleared when the fraction
    reaches 1 (``progress_bar`` without the ``with``)."""
    return ProgressBar(desc, close_at_end=True)


def add_ray_arguments(sp: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS], --workers N and --n-devices N on a batch verb."""
    g = sp.add_argument_group("scaling out")
    g.add_argument("--ray", nargs="?", const=LOCAL_RAY, default=None, metavar="ADDRESS",
                   help="compute on a Ray actor pool: a local Ray instance, or the cluster at ADDRESS "
                        "(host:port, ray://host:port or auto); needs the ray extra")
    g.add_argument("--workers", type=whole_number, default=None,
                   help="Ray workers, one model replica each (default: one per GPU, else 2)")
    g.add_argument("--n-devices", type=whole_number, default=1,
                   help="split each model over N GPUs (TransformerLens n_devices) for models too big for one")


def open_study(args: argparse.Namespace) -> Study:
    """``Study.open(args.study)``, with the verb's --n-devices (when it has one) applied to every model it loads."""
    from analysis.study import Study

    n_devices = getattr(args, "n_devices", 1)
    if n_devices < 1:
        raise AnalysisInputError(f"--n-devices must be at least 1, got {n_devices}")
    study = Study.open(args.study)
    study.n_devices = n_devices
    return study


@contextmanager
def executor_from_args(args: argparse.Namespace, batch: bool = True) -> Iterator[RayExecutor | None]:
    """The verb's Ray executor (None without --ray), closed when the verb ends."""
    from analysis.distributed import ray_executor

    with ray_executor(args.ray, workers=args.workers, n_devices=args.n_devices, batch=batch) as executor:
        yield executor
