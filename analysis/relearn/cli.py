"""`erasure relearn`: the relearning attack from the command line. Wired into analysis/cli.py with
``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from analysis.cli_common import VerbFn, emit

if TYPE_CHECKING:
    from analysis.relearn.result import RelearnResult


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _text(r: RelearnResult) -> str:
    lines = [f"{r.model}: relearning attack ({r.options['steps']} steps, lr {r.options['lr']:g}, seed "
             f"{r.options['seed']}), baseline {r.reference}"]
    lines.append(f"  {'variant':<8}{'share':>8}{'95% CI':>18}{'pooled':>8}{'n':>4}   forget accuracy: original, "
                 "retrain, model before -> after, retrain after")
    for name, v in r.variants.items():
        ci = "-" if v.ci is None else f"[{v.ci[0]:.3f}, {v.ci[1]:.3f}]"
        a = v.accuracy
        lines.append(f"  {name:<8}{_num(v.value):>8}{ci:>18}{_num(v.pooled):>8}{v.n_defined:>4}   "
                     f"{a['original']:.3f}, {a['reference_before']:.3f}, {a['model_before']:.3f} -> "
                     f"{a['model_attacked']:.3f}, {a['reference_attacked']:.3f}" + (f"  ({v.note})" if v.note else ""))
    return "\n".join(lines)


def cmd_relearn(args: argparse.Namespace) -> None:
    from analysis.cli_common import executor_from_args, open_study, progress_bar
    from analysis.relearn import RelearnOptions, relearn_report

    opts = RelearnOptions(steps=args.steps, lr=args.lr, seed=args.seed, retain_rows=args.retain_rows).validated()
    with executor_from_args(args) as executor, progress_bar("relearn") as bar:
        study = open_study(args)
        names = args.model or study.model_names
        for n in names:
            study.entry(n)
        results = {n: relearn_report(study, n, opts, progress=bar.part(i, len(names), f"{n}: "), executor=executor)
                   for i, n in enumerate(names)}
    obj = {"models": {n: {**r.to_dict(), "signal": r.reading().to_dict()} for n, r in results.items()}}
    emit(args, obj, "\n\n".join(_text(r) for r in results.values()))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure relearn` on the CLI's subparsers (adds --json)."""
    from analysis.cli_common import add_ray_arguments, int_arg, positive_float, positive_int, seed_int
    from analysis.relearn.options import LR_HELP, MAX_STEPS, RETAIN_ROWS_HELP, STEPS_HELP, RelearnOptions

    d = RelearnOptions()

    sp = verb(sub, "relearn", cmd_relearn, "relearning attack: how much of the forget set a few fine-tuning steps "
                                           "bring back, net of the same attack on the retrain control")
    sp.add_argument("study")
    sp.add_argument("--model", action="append", help="model of the study (repeatable; default: every model)")
    sp.add_argument("--steps", type=int_arg(0, MAX_STEPS), default=d.steps, help=STEPS_HELP)
    sp.add_argument("--lr", type=positive_float, default=d.lr, help=LR_HELP)
    sp.add_argument("--seed", type=seed_int, default=d.seed, help="seed of the forget split and the retain subset")
    sp.add_argument("--retain-rows", type=positive_int, default=d.retain_rows, help=RETAIN_ROWS_HELP)
    add_ray_arguments(sp)
