"""Plumbing every `erasure` verb shares: the one-line-error parser, the ``verb`` helper that adds ``--json``,
printing a result (JSON or text), a tqdm progress callback, the Ray / multi-GPU arguments of batch verbs and
opening the study a verb names. Each analysis's ``cli.py`` registers its verbs with ``add_parser(sub, verb)``
and uses these; nothing here imports torch, so ``erasure --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

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


def emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    """Print ``obj`` as one line of JSON under ``--json``, else ``text``."""
    print(json.dumps(obj, default=str) if args.json else text)


def tqdm_progress(desc: str) -> Callable[[float, str], None]:
    """A ``progress(fraction, message)`` callback drawing a tqdm bar on stderr."""
    from tqdm.auto import tqdm

    bar = tqdm(total=1000, desc=desc, leave=False, disable=None)

    def update(frac: float, msg: str) -> None:
        bar.n = int(frac * 1000)
        bar.set_postfix_str(msg[-60:], refresh=True)
        if frac >= 1:
            bar.close()

    return update


def add_ray_arguments(sp: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS], --workers N and --n-devices N on a batch verb."""
    g = sp.add_argument_group("scaling out")
    g.add_argument("--ray", nargs="?", const=LOCAL_RAY, default=None, metavar="ADDRESS",
                   help="compute on a Ray actor pool: a local Ray instance, or the cluster at ADDRESS "
                        "(host:port, ray://host:port or auto); needs the ray extra")
    g.add_argument("--workers", type=int, default=None,
                   help="Ray workers, one model replica each (default: one per GPU, else 2)")
    g.add_argument("--n-devices", type=int, default=1,
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
