"""`erasure trace`: causal tracing from the command line. Wired into analysis/cli.py with
``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, get_args

from analysis.cli_common import VerbFn, emit
from analysis.errors import AnalysisInputError

if TYPE_CHECKING:
    from analysis.store import Executor, ProgressFn
    from analysis.study import Study
    from analysis.tracing.options import TraceOptions


def _options(args: argparse.Namespace) -> TraceOptions:
    from analysis.tracing import TraceOptions, parse_kinds

    return TraceOptions(kinds=parse_kinds(args.kind), corruption=args.corruption, metric=args.metric,
                        window=args.window, n_samples=args.samples, seed=args.seed, noise_scale=args.scale)


def _grid(rows: list[list[float | None]], row_labels: list[str], col_labels: list[str]) -> str:
    width = max(8, *(len(c) + 1 for c in col_labels))
    head = " " * 24 + "".join(f"{c[:width - 1]:>{width}}" for c in col_labels)
    lines = [head]
    for label, row in zip(row_labels, rows, strict=True):
        cells = "".join(f"{'-':>{width}}" if v is None else f"{v:>{width}.4f}" for v in row)
        lines.append(f"{label[:23]:<24}{cells}")
    return "\n".join(lines)


def cmd_trace(args: argparse.Namespace) -> None:
    from analysis.cli_common import executor_from_args, open_study, progress_bar

    if bool(args.sample) == bool(args.all):
        raise AnalysisInputError("give either --sample ID or --all")
    with executor_from_args(args, batch=args.all) as executor, progress_bar(f"trace {args.model}") as progress:
        _trace(args, open_study(args), executor, progress)


def _trace(args: argparse.Namespace, study: Study, executor: Executor | None, progress: ProgressFn) -> None:
    from analysis.tracing import trace_dataset, trace_sample

    study.entry(args.model)
    opts = _options(args)
    if args.sample:
        progress(0.0, f"tracing {args.sample} (one sample: one step)")
        r = trace_sample(study, args.model, args.sample, opts)
        progress(1.0, f"{args.sample} traced")
        obj = {**r.to_dict(), "model": args.model, "fingerprint": r.model}
        lines = [f"{args.model} on {r.sample_id} (answer {r.answer!r}): clean {r.clean:.4f}, corrupted "
                 f"{r.corrupted:.4f} [{r.options.get('metric')}, {r.options.get('corruption')}]"]
        cols = [t + ("*" if r.subject_range[0] <= i < r.subject_range[1] else "") for i, t in enumerate(r.tokens)]
        for kind, rows in r.scores.items():
            lines += ["", f"{kind} ({r.hooks.get(kind, kind)}): rows = layers, columns = tokens (* subject)",
                      _grid(rows, [f"layer {layer}" for layer in r.layers], cols)]
        emit(args, obj, "\n".join(lines))
        return
    a = trace_dataset(study, args.model, opts, split=args.split, executor=executor, progress=progress)
    obj = {**a.to_dict(), "model": args.model, "fingerprint": a.model, "split": args.split}
    lines = [f"{args.model}: average indirect effect over {a.n_samples} {args.split} samples "
             f"(clean {a.clean:.4f}, corrupted {a.corrupted:.4f})"
             + (f", {len(a.skipped)} skipped" if a.skipped else "")]
    for kind, rows in a.aie.items():
        lines += ["", f"{kind}: rows = token roles, columns = layers",
                  _grid(rows, a.roles, [f"L{layer}" for layer in a.layers])]
    emit(args, obj, "\n".join(lines))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure trace` on the CLI's subparsers, through the CLI's ``verb`` helper (adds --json)."""
    from analysis.cli_common import add_ray_arguments, positive_float, positive_int, seed_int
    from analysis.tracing.options import (
        KIND_HELP,
        KINDS,
        METRIC_HELP,
        METRICS,
        CorruptionName,
        corruption_choices_help,
    )

    sp = verb(sub, "trace", cmd_trace, "causal tracing: where a model recalls a sample's answer (ROME-style)")
    sp.add_argument("study")
    sp.add_argument("--model", default="original", help="model of the study (default: original)")
    sp.add_argument("--sample", default=None, help="trace one sample id")
    sp.add_argument("--all", action="store_true", help="average indirect effects over the --split samples")
    sp.add_argument("--split", default="forget", help="samples of --all (default: forget)")
    sp.add_argument("--kind", default="all", choices=[*KINDS, "all"], help=KIND_HELP)
    sp.add_argument("--corruption", default="noise", choices=get_args(CorruptionName),
                    help=corruption_choices_help())
    sp.add_argument("--metric", default="prob", choices=METRICS, help=METRIC_HELP)
    sp.add_argument("--window", type=positive_int, default=None,
                    help="layers restored together for mlp/attn (default: ROME's 10, at most half the model's "
                         "layers; 1 = no window)")
    sp.add_argument("--samples", type=positive_int, default=10, help="noise samples (default 10)")
    sp.add_argument("--seed", type=seed_int, default=0)
    sp.add_argument("--scale", type=positive_float, default=3.0,
                    help="noise std in units of the subject-embedding std (a finite number > 0; default 3)")
    add_ray_arguments(sp)
