"""`erasure validate STUDY [--json] [--no-robustness] [--signals a,b]`: the meta-evaluation of every signal
against the study's zoo. Prints a table of every signal's AUROC (P against N) with its 95% bootstrap interval
and robustness, then which signals separate and which do not. Wired into analysis/cli.py with
``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse

from analysis.cli_common import VerbFn, emit, open_study, positive_int, progress_bar, seed_int
from analysis.errors import AnalysisInputError
from analysis.validation.options import OPTION_HELP, ValidationOptions, parse_signals


def _num(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def table_lines(result: object) -> list[str]:
    """The AUROC table of a ValidationResult, one line per signal, best first."""
    from analysis.validation.result import ValidationResult

    assert isinstance(result, ValidationResult)
    width = max([len("signal"), *(len(s.signal) for s in result.signals)]) + 2
    head = f"{'signal':<{width}}{'AUROC':>7}  {'95% interval':<16}{'P':>3}{'N':>4}  {'R':>6}{'Q':>7}{'H':>7}  separation"
    lines = [head, "-" * len(head)]
    for s in sorted(result.signals, key=lambda r: -(r.auroc if r.auroc is not None else -1.0)):
        ci = "-" if s.ci_low is None or s.ci_high is None else f"[{s.ci_low:.3f}, {s.ci_high:.3f}]"
        lines.append(f"{s.signal:<{width}}{_num(s.auroc):>7}  {ci:<16}{s.n_present:>3}{s.n_absent:>4}  "
                     f"{_num(s.robustness_r):>6}{_num(s.robustness_q):>7}{_num(s.robustness_h):>7}  {s.separation}")
    return lines


def cmd_validate(args: argparse.Namespace) -> None:
    from analysis.validation.runner import validate

    opts = ValidationOptions(signals=parse_signals(args.signals), n_resamples=args.resamples, seed=args.seed,
                             robustness=not args.no_robustness, finetune_steps=args.finetune_steps).validated()
    study = open_study(args)
    with progress_bar("validate") as progress:
        result = validate(study, opts, progress=progress)
    lines = [f"meta-evaluation of {len(result.signals)} signal(s) on study {result.study!r}", "",
             *table_lines(result), "", *result.statement()]
    if result.notes:
        lines += ["", *[f"note: {n}" for n in result.notes]]
    out = result.to_dict()
    try:  # each member's fitted verdict beside its status (from the readings just stored; none if not read)
        from analysis.verdict.cli import member_verdicts
        from analysis.verdict.rule import load_rule

        rule = load_rule()
        verdicts = member_verdicts(study, [m["name"] for m in out["members"]], rule)
        for m in out["members"]:
            m["verdict"] = verdicts[m["name"]]
        out["verdict_rule"] = {"version": rule.version, "signal": rule.signal, "threshold": rule.threshold}
        lines += ["", f"verdicts (rule v{rule.version}: {rule.signal} against {rule.threshold:.3f}):"]
        lines += [f"  {m['name']:<24}{m['status']:<9}{(m['verdict'] or {}).get('verdict', 'not read')}"
                  for m in out["members"]]
    except AnalysisInputError as e:  # no rule shipped / damaged: the meta-evaluation stands on its own
        lines += ["", f"note: no verdict ({e})"]
    emit(args, out, "\n".join(lines))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure validate`."""
    d = ValidationOptions()
    sp = verb(sub, "validate", cmd_validate,
              "meta-evaluation: every signal's AUROC of knowledge-present against knowledge-absent zoo members, "
              "with bootstrap intervals and robustness")
    sp.add_argument("study")
    sp.add_argument("--signals", default=None, metavar="A,B", help=OPTION_HELP["signals"])
    sp.add_argument("--no-robustness", action="store_true",
                    help="skip the quantised and fine-tuned variants (" + OPTION_HELP["robustness"] + ")")
    sp.add_argument("--resamples", type=positive_int, default=d.n_resamples,
                    help=OPTION_HELP["n_resamples"] + f" (default {d.n_resamples}, at least 10)")
    sp.add_argument("--seed", type=seed_int, default=d.seed, help=OPTION_HELP["seed"] + f" (default {d.seed})")
    sp.add_argument("--finetune-steps", type=positive_int, default=d.finetune_steps,
                    help=OPTION_HELP["finetune_steps"] + f" (default {d.finetune_steps})")
