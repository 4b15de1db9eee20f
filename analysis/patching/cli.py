"""`erasure patch`: cross-model activation patching (UDS-style) from the command line. Wired into analysis/cli.py
with ``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from analysis.cli_common import VerbFn, emit

if TYPE_CHECKING:
    from analysis.patching.result import Interval, PatchingResult


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _ci(ci: Interval) -> str:
    return "" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def _text(r: PatchingResult) -> str:
    lines = [f"{r.model}: depth {_num(r.depth_mean)}{_ci(r.depth_ci)}, signal (1 - depth) {_num(r.signal)}"
             f"{_ci(r.signal_ci)} over {len(r.sample_ids)} samples; reference {r.reference or 'none'}"
             + (f" ({r.note})" if r.note else "")]
    head = f"  {'layer':>5}{'drop':>10}{'ref drop':>10}{'ratio':>8}"
    lines.append(head)
    ref = r.reference_drop_by_layer.mean if r.reference_drop_by_layer else [None] * len(r.layers)
    ratio = r.ratio_by_layer.mean if r.ratio_by_layer else [None] * len(r.layers)
    for layer, d, rd, q in zip(r.layers, r.drop_by_layer.mean, ref, ratio, strict=True):
        lines.append(f"  {layer:>5}{_num(d, '.4f'):>10}{_num(rd, '.4f'):>10}{_num(q):>8}")
    return "\n".join(lines)


def cmd_patch(args: argparse.Namespace) -> None:
    from analysis.cli_common import executor_from_args, open_study, progress_bar
    from analysis.patching import PatchOptions, patching_result

    opts = PatchOptions(positions=args.positions, min_drop=args.min_drop, aggregation=args.aggregation,
                        batch_size=args.batch_size).validated()
    with executor_from_args(args) as executor, progress_bar("patch") as bar:
        study = open_study(args)
        names = args.model or study.model_names
        for n in names:
            study.entry(n)
        results = {n: patching_result(study, n, opts, reference=args.reference, split=args.split,
                                      progress=bar.part(i, len(names), f"{n}: "), executor=executor)
                   for i, n in enumerate(names)}
    obj = {"models": {n: r.to_dict() for n, r in results.items()}, "split": args.split}
    emit(args, obj, "\n\n".join(_text(r) for r in results.values()))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure patch` on the CLI's subparsers (adds --json)."""
    from analysis.cli_common import add_ray_arguments, float_arg, positive_int
    from analysis.patching.options import (
        AGGREGATION_HELP,
        AGGREGATIONS,
        MIN_DROP_HELP,
        POSITION_HELP,
        POSITIONS,
    )

    sp = verb(sub, "patch", cmd_patch, "cross-model activation patching (UDS-style): how deep a model's forgetting "
                                       "goes, per layer, against the retrain control")
    sp.add_argument("study")
    sp.add_argument("--model", action="append", help="model of the study (repeatable; default: every model)")
    sp.add_argument("--reference", default=None, help="reference control (default: the study's retrain control)")
    sp.add_argument("--split", default="forget", help="samples to patch on (default: forget)")
    sp.add_argument("--positions", default="all", choices=POSITIONS, help=POSITION_HELP)
    sp.add_argument("--aggregation", default="mean", choices=AGGREGATIONS, help=AGGREGATION_HELP)
    sp.add_argument("--min-drop", type=float_arg(0), default=0.05, help=MIN_DROP_HELP)
    sp.add_argument("--batch-size", type=positive_int, default=None, help="rows per forward (default: by memory)")
    add_ray_arguments(sp)
