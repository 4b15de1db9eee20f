"""`erasure verdict STUDY [--model M ...] [--rule PATH] [--json]`: the fitted verdict (analysis.verdict) on the
study's unlearning methods (or the models named), each with its signal's score, 95% interval over samples, the
rule's boundary and the per-sample calls. `erasure verdict STUDY --matrix [--json]`: the verdict matrix
(analysis.verdict.matrix) of every model x every signal stored by `erasure validate`, read from the store only.
Wired into analysis/cli.py with ``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse
from typing import Any

from analysis.cli_common import VerbFn, emit, open_study, progress_bar
from analysis.verdict.options import RULE_FILE


def member_verdicts(study: Any, names: list[str], rule: Any) -> dict[str, Any]:
    """{model: verdict dict} from STORED readings of the rule's signal only (None where not read yet)."""
    from analysis.verdict.judge import stored_verdict

    return {n: None if (v := stored_verdict(study, n, rule)) is None else v.to_dict() for n in names}


MATRIX_BLOCK = 4  # signals per block of the text table (keeps a line near 130 characters)


def matrix_text(matrix: Any) -> str:
    """The verdict matrix as text: the boundaries, then one table per block of signals (a row per model)."""
    from analysis.verdict.matrix import cell_text

    lines = [matrix.boundary_source, "", f"{'signal':<24}{'boundary':>10}  {'AUROC':>5}  source"]
    for c in matrix.columns:
        b = "none" if c.boundary is None else f"{c.boundary:.3f}"
        a = "-" if c.auroc is None else f"{c.auroc:.2f}"
        lines.append(f"{c.signal + (' (rule)' if c.is_rule else ''):<24}{b:>10}  {a:>5}  {c.boundary_source}")
    name_w = max([len(r.label) for r in matrix.rows] + [5]) + 2
    for i in range(0, len(matrix.columns), MATRIX_BLOCK):
        cols = matrix.columns[i:i + MATRIX_BLOCK]
        texts = {(r.model, c.signal): cell_text(matrix.cell(r.model, c.signal), " ") for r in matrix.rows
                 for c in cols}
        width = {c.signal: max([len(c.signal)] + [len(texts[(r.model, c.signal)]) for r in matrix.rows]) + 2
                 for c in cols}
        lines += ["", f"{'model':<{name_w}}" + "".join(f"{c.signal:<{width[c.signal]}}" for c in cols)]
        for j, r in enumerate(matrix.rows):
            if r.group == "zoo" and (j == 0 or matrix.rows[j - 1].group != "zoo"):
                lines.append("-" * (name_w + sum(width.values())) + "  zoo members (P present, N absent)")
            lines.append(f"{r.label:<{name_w}}" + "".join(f"{texts[(r.model, c.signal)]:<{width[c.signal]}}"
                                                          for c in cols))
    return "\n".join(lines)


def cmd_verdict(args: argparse.Namespace) -> None:
    from analysis.verdict.judge import judge
    from analysis.verdict.rule import load_rule

    rule = load_rule(args.rule)
    study = open_study(args)
    if args.matrix:
        from analysis.verdict.matrix import verdict_matrix

        matrix = verdict_matrix(study, rule, args.model)
        emit(args, {"study": str(study.root), **matrix.to_dict()}, matrix_text(matrix))
        return
    names = args.model or [n for n in study.model_names if study.entry(n).role == "unlearned"]
    verdicts = []
    with progress_bar("verdict") as progress:  # by model: each reads the rule's signal (stored, else computed)
        for i, n in enumerate(names):
            progress(i / max(1, len(names)), f"{n}: reading {rule.signal}")
            verdicts.append(judge(study, n, rule))
        progress(1.0, f"{len(names)} model(s) judged")
    lines = [f"rule v{rule.version}: {rule.signal} against {rule.threshold:.3f} (fitted on seeds "
             f"{', '.join(str(d.get('seed')) for d in rule.fitted_on)})"]
    for v in verdicts:
        n_sup = sum(c == "suppressed" for c in v.per_sample.values())
        lines.append(f"  {v.model:<22}{v.verdict:<14}{v.reason}; {n_sup}/{len(v.per_sample)} samples suppressed")
    emit(args, {"study": str(study.root), "rule": rule.to_dict(), "verdicts": [v.to_dict() for v in verdicts]},
         "\n".join(lines))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure verdict`."""
    sp = verb(sub, "verdict", cmd_verdict,
              "the fitted verdict (suppressed / erased / inconclusive, with a 95%% interval) on unlearned models")
    sp.add_argument("study")
    sp.add_argument("--model", action="append", default=None, help="a model to judge (repeatable; default: every "
                    "unlearning method of the study)")
    sp.add_argument("--rule", default=str(RULE_FILE), help="the rule file (default: the shipped rule.json)")
    sp.add_argument("--matrix", action="store_true", help="the verdict matrix: every model (the study's, then the "
                    "zoo's; --model: only those study models) x every signal stored by `erasure validate`, with "
                    "its value, 95%% interval and reading (the rule's verdict on its signal, in-sample boundaries "
                    "on the others); read from the store only, nothing is computed")
