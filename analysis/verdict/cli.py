"""`erasure verdict STUDY [--model M ...] [--rule PATH] [--json]`: the fitted verdict (analysis.verdict) on the
study's unlearning methods (or the models named), each with its signal's score, 95% interval over samples, the
rule's boundary and the per-sample calls. Wired into analysis/cli.py with ``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse
from typing import Any

from analysis.cli_common import VerbFn, emit, open_study
from analysis.verdict.options import RULE_FILE


def member_verdicts(study: Any, names: list[str], rule: Any) -> dict[str, Any]:
    """{model: verdict dict} from STORED readings of the rule's signal only (None where not read yet)."""
    from analysis.verdict.judge import stored_verdict

    return {n: None if (v := stored_verdict(study, n, rule)) is None else v.to_dict() for n in names}


def cmd_verdict(args: argparse.Namespace) -> None:
    from analysis.verdict.judge import judge
    from analysis.verdict.rule import load_rule

    rule = load_rule(args.rule)
    study = open_study(args)
    names = args.model or [n for n in study.model_names if study.entry(n).role == "unlearned"]
    verdicts = [judge(study, n, rule) for n in names]
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
