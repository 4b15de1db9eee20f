"""`erasure membership`: membership inference on the forget set from the command line. Wired into
analysis/cli.py with ``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from analysis.cli_common import VerbFn, emit

if TYPE_CHECKING:
    from analysis.membership.result import MembershipResult


def _text(r: MembershipResult) -> str:
    sig = r.reading()
    lines = [f"{r.model}: forget ({len(next(iter(r.scores.values())).forget)}) vs held-out {r.heldout} "
             f"({len(r.heldout_ids)}), {r.options['span']} tokens, k {r.options['k']:g}"]
    for k, s in r.scores.items():
        a = "-" if s.auroc is None else f"{s.auroc:.3f}"
        ci = "" if s.auroc_ci is None else f" [{s.auroc_ci[0]:.3f}, {s.auroc_ci[1]:.3f}]"
        lines.append(f"  {k:<5} AUROC {a}{ci}")
    v = "-" if sig.value is None else f"{sig.value:.3f}"
    ci = "" if sig.ci is None else f" [{sig.ci[0]:.3f}, {sig.ci[1]:.3f}]"
    lines.append(f"  signal (mean percentile of Min-K%++ among held-out): {v}{ci}")
    return "\n".join(lines)


def cmd_membership(args: argparse.Namespace) -> None:
    from analysis.cli_common import open_study, progress_bar
    from analysis.membership import MembershipOptions, membership_report

    opts = MembershipOptions(k=args.k, heldout=args.heldout, span=args.span, n_perturbed=args.n_perturbed,
                             seed=args.seed, batch_size=args.batch_size).validated()
    study = open_study(args)
    names = args.model or study.model_names
    for n in names:
        study.entry(n)
    with progress_bar("membership") as bar:
        results = {n: membership_report(study, n, opts, progress=bar.part(i, len(names), f"{n}: "))
                   for i, n in enumerate(names)}
    obj = {"models": {n: {**r.to_dict(), "signal": r.reading().to_dict()} for n, r in results.items()}}
    emit(args, obj, "\n\n".join(_text(r) for r in results.values()))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure membership` on the CLI's subparsers (adds --json)."""
    from analysis.cli_common import float_arg, positive_int, seed_int
    from analysis.membership.options import (
        HELDOUT_HELP,
        HELDOUTS,
        K_HELP,
        SPAN_HELP,
        SPANS,
        MembershipOptions,
    )

    d = MembershipOptions()
    what = ("membership inference (loss, Min-K%++): do the forget samples still look like training data, against "
            "held-out samples")
    sp = verb(sub, "membership", cmd_membership, what.replace("%", "%%"))  # argparse %-formats the verb's help
    sp.description = what  # (but not its description)
    sp.add_argument("study")
    sp.add_argument("--model", action="append", help="model of the study (repeatable; default: every model)")
    sp.add_argument("--heldout", default=d.heldout, choices=HELDOUTS, help=HELDOUT_HELP)
    sp.add_argument("--span", default=d.span, choices=SPANS, help=SPAN_HELP)
    sp.add_argument("--k", type=float_arg(0, 1, min_open=True), default=d.k, help=K_HELP.replace("%", "%%"))
    sp.add_argument("--n-perturbed", type=positive_int, default=d.n_perturbed,
                    help=f"wrong answers per forget prompt for --heldout perturbed (default {d.n_perturbed})")
    sp.add_argument("--seed", type=seed_int, default=d.seed, help="seed of the bootstrap intervals")
    sp.add_argument("--batch-size", type=positive_int, default=None, help="rows per forward (default: by memory)")
