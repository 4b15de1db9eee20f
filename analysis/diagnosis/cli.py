"""`erasure report`: diagnose one model of a study and write a self-contained HTML report (and the data as
JSON). Wired into analysis/cli.py with ``add_parser(sub, verb)``.

``--json`` takes an optional path: ``--json report.json`` writes the data there; a bare ``--json`` prints it
as one JSON object on stdout, like every other verb."""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import TYPE_CHECKING, get_args

from analysis.cli_common import VerbFn, dumps, open_study, positive_int, progress_bar

if TYPE_CHECKING:
    from analysis.diagnosis.options import DiagnosisOptions

STDOUT = "-"


def diagnosis_options(args: argparse.Namespace) -> DiagnosisOptions:
    from analysis.attribution.options import RecoveryOptions
    from analysis.diagnosis.options import DiagnosisOptions, default_trace_options

    trace = dataclasses.replace(default_trace_options(), n_samples=args.noise_samples)
    strategies = tuple(args.strategy) if args.strategy else None
    return DiagnosisOptions(trace=trace, recovery=RecoveryOptions(strategies=strategies))


def cmd_report(args: argparse.Namespace) -> None:
    from analysis.diagnosis import check_model, diagnose
    from analysis.diagnosis.report import fitted_verdict, output_paths, write_report
    html_path, json_path = output_paths(args.out, None if args.json == STDOUT else args.json)  # before any work
    study = open_study(args)
    check_model(study, args.model)
    t0 = time.perf_counter()
    with progress_bar(f"diagnose {args.model}") as progress:
        d = diagnose(study, args.model, diagnosis_options(args), progress=progress)
        progress(1.0, "the fitted verdict (its signal read from the store when stored)")
        fitted = fitted_verdict(study, args.model)
        progress(1.0, "writing the report")
        seconds = time.perf_counter() - t0
        sizes = write_report(d, html_path, json_path, fitted)
    if args.json == STDOUT:
        print(dumps({"html": str(html_path), "bytes": sizes, "seconds": seconds, "diagnosis": d.to_dict(),
                     "fitted_verdict": fitted[0].to_dict() if fitted else None}))
        return
    lines = [d.headline, *([f"  fitted verdict: {fitted[0].verdict} ({fitted[0].reason})"] if fitted else []),
             *[f"  - {e}" for e in d.evidence]]
    for title, key in (("agree", "agree"), ("disagree", "disagree")):
        lines += [f"  {title}: {x}" for x in d.agreement.get(key, [])]
    lines += [f"wrote {p} ({n / 1e6:.2f} MB)" for p, n in sizes.items()]
    lines.append(f"{seconds:.1f}s")
    print("\n".join(lines))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure report`. Its ``--json`` takes an optional path, so the parser is made here rather than
    by ``verb`` (whose ``--json`` is a flag); a bare ``--json`` still prints one JSON object."""
    from analysis.attribution.options import EmphasisStrategy  # the names of the EMPHASES registry (no torch)

    help_ = "diagnose one model (every signal joined) and write a self-contained HTML report"
    sp = sub.add_parser("report", help=help_, description=help_)
    sp.set_defaults(fn=cmd_report)
    sp.add_argument("study")
    sp.add_argument("--model", required=True, help="unlearned model or control of the study")
    sp.add_argument("--out", required=True, help="the HTML report to write (opens offline)")
    sp.add_argument("--json", nargs="?", const=STDOUT, default=None, metavar="PATH",
                    help="also write the data as JSON to PATH; without PATH, print it on stdout")
    sp.add_argument("--noise-samples", type=positive_int, default=3, help="noise samples per causal trace (default 3)")
    sp.add_argument("--strategy", action="append", choices=get_args(EmphasisStrategy),
                    help="emphasis strategy (repeatable; default: all)")
