"""`erasure lens`: the logit lens through the original's readout from the command line. Wired into
analysis/cli.py with ``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from analysis.cli_common import VerbFn, emit

if TYPE_CHECKING:
    from analysis.logit_lens.result import LensResult


def _text(results: dict[str, LensResult]) -> str:
    lines = []
    for name, r in results.items():
        ci = "" if r.ci is None else f" [{r.ci[0]:.3f}, {r.ci[1]:.3f}]"
        value = "-" if r.value is None else f"{r.value:.3f}"
        lines.append(f"{name}: signal (max over layers of the answer's probability) {value}{ci} over "
                     f"{len(r.sample_ids)} samples, read through {r.readout}'s final norm + unembedding")
    lines.append(f"  {'layer':>5}" + "".join(f"{n[:14] + ' p':>18}{'rank':>8}" for n in results))
    first = next(iter(results.values()))
    for i, layer in enumerate(first.layers):
        cells = ""
        for r in results.values():
            p, k = r.by_layer["mean_prob"].mean[i], r.by_layer["first_rank"].mean[i]
            cells += f"{'-' if p is None else f'{p:.4f}':>18}{'-' if k is None else f'{k:.2f}':>8}"
        lines.append(f"  {layer:>5}{cells}")
    return "\n".join(lines)


def cmd_lens(args: argparse.Namespace) -> None:
    from analysis.cli_common import executor_from_args, open_study, progress_bar
    from analysis.logit_lens import LensOptions, lens_result

    opts = LensOptions(readout=args.readout, batch_size=args.batch_size).validated()
    with executor_from_args(args) as executor, progress_bar("lens") as bar:
        study = open_study(args)
        names = args.model or study.model_names
        for n in names:
            study.entry(n)
        shown = list(dict.fromkeys(["original", *names])) if "original" in study.model_names else names
        results = {n: lens_result(study, n, opts, split=args.split, progress=bar.part(i, len(shown), f"{n}: "),
                                  executor=executor) for i, n in enumerate(shown)}
    obj = {"models": {n: r.to_dict() for n, r in results.items()}, "split": args.split}
    emit(args, obj, _text(results))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure lens` on the CLI's subparsers (adds --json)."""
    from analysis.cli_common import add_ray_arguments, positive_int
    from analysis.logit_lens.options import READOUT_HELP, READOUTS

    sp = verb(sub, "lens", cmd_lens, "logit lens: the answer's probability and rank by layer, read through the "
                                     "original's final norm and unembedding")
    sp.add_argument("study")
    sp.add_argument("--model", action="append", help="model of the study (repeatable; default: every model); the "
                                                     "original is always shown for comparison")
    sp.add_argument("--split", default="forget", help="samples to read (default: forget)")
    sp.add_argument("--readout", default="original", choices=READOUTS, help=READOUT_HELP)
    sp.add_argument("--batch-size", type=positive_int, default=None, help="rows per forward (default: by memory)")
    add_ray_arguments(sp)
