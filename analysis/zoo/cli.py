"""`erasure zoo STUDY`: build (or finish building) the study's zoo and list its members. Wired into
analysis/cli.py with ``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse
from typing import Any

from analysis.cli_common import VerbFn, emit, open_study, positive_int, progress_bar
from analysis.zoo.options import STATUS_LABELS, ZOO_OPTION_HELP, ZooOptions


def _fmt(x: Any) -> str:
    return f"{x:.2f}" if isinstance(x, int | float) and not isinstance(x, bool) else "-"


def cmd_zoo(args: argparse.Namespace) -> None:
    from analysis.zoo.runner import build_zoo

    study = open_study(args)
    with progress_bar("zoo") as progress:  # on stderr: --json's stdout stays one JSON object
        zoo = build_zoo(study, ZooOptions(unlearn_steps=args.unlearn_steps), progress=progress)
    counts = zoo.counts()
    lines = [f"zoo of {study.root}: {counts['present']} present (P), {counts['absent']} absent (N), "
             f"{counts['excluded']} excluded; {len(zoo.built)} built now ({zoo.seconds:.1f}s)",
             f"  {'member':<26}{'status':<10}{'kind':<19}{'L':>3}{'probe':>7}{'forget':>8}{'retain':>8}"]
    for m in zoo.members.values():
        c = m.checks
        layer = m.recipe.get("layer", "")
        lines.append(f"  {m.name:<26}{m.status:<10}{m.kind:<19}{layer!s:>3}{_fmt(c.get('probe_acc')):>7}"
                     f"{_fmt(c.get('forget_acc')):>8}{_fmt(c.get('retain_acc')):>8}"
                     + (f"  ({m.reason})" if m.reason else ""))
    lines += [f"  {s}: {label}" for s, label in STATUS_LABELS.items()]
    emit(args, {"study": str(study.root), **zoo.to_dict()}, "\n".join(lines))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure zoo` through the CLI's ``verb`` helper (adds --json)."""
    sp = verb(sub, "zoo", cmd_zoo, "build the zoo of models whose knowledge is known (cached, resumable)")
    sp.add_argument("study")
    sp.add_argument("--unlearn-steps", type=positive_int, default=None, help=ZOO_OPTION_HELP["unlearn_steps"])
