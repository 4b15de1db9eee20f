"""`erasure circuit` and `erasure score`. Wired into analysis/cli.py with ``add_parser(sub, verb)``; the
choices are the ``Literal`` types of analysis.circuits.options (the names of the registries
analysis.circuits.eap.METRICS / BASELINES and analysis.circuits.cud.DISTANCES / VECTORS, which import torch; a test
checks they agree), the help text from analysis.circuits.options.HELP (which the app pages show too)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, get_args

from analysis.circuits.options import DEFAULT_TOP_N, HELP
from analysis.cli_common import (
    VerbFn,
    add_ray_arguments,
    emit,
    executor_from_args,
    float_arg,
    int_arg,
    open_study,
    positive_int,
    progress_bar,
    seed_int,
)

if TYPE_CHECKING:
    from analysis.circuits.options import EAPOptions


def _eap_options(args: argparse.Namespace) -> EAPOptions:
    from analysis.circuits.options import EAPOptions

    return EAPOptions(metric=args.metric, steps=args.steps, baseline=args.baseline)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def cmd_circuit(args: argparse.Namespace) -> None:
    from analysis.circuits.runner import circuit_for_sample

    study = open_study(args)
    study.entry(args.model)
    r = circuit_for_sample(study, args.model, args.sample, top_n=args.top, options=_eap_options(args))
    obj = {"nodes": r.nodes, "edges": r.edges, "circuit": r.circuit, "faithfulness": r.faithfulness,
           "stats": r.stats, "model": r.model, "sample": r.sample_id, "options": r.options}
    f = r.faithfulness["faithfulness"]
    lines = [f"{args.model} on {args.sample}: top-{args.top} circuit, faithfulness "
             f"{'-' if f is None else f'{f:.3f}'} ({r.faithfulness['definition']})",
             "stats: " + ", ".join(f"{k}={v}" for k, v in r.stats.items())]
    for i in r.circuit[:20]:
        e = r.edges[i]
        lines.append(f"  {e['src']:>10} -> {e['dst']:<12} {e['score']:+.5f}")
    emit(args, obj, "\n".join(lines))


def cmd_score(args: argparse.Namespace) -> None:
    from analysis.circuits.options import CUDOptions
    from analysis.circuits.runner import score_study

    opts = CUDOptions(distance=args.distance, top_n=args.top, eap=_eap_options(args), vector=args.vector,
                      quantile=args.quantile, folds=args.folds, seed=args.seed,
                      setting="reference" if args.reference_setting else "ours")
    with executor_from_args(args) as executor, progress_bar("CUD score") as progress:
        rep = score_study(open_study(args), opts, executor=executor, progress=progress)
    obj = {"samples": [{"id": i, "cud": c, "observed": o, "label": lb}
                       for i, c, o, lb in zip(rep.ids, rep.cud, rep.observed, rep.labels, strict=True)],
           "validation": rep.validation, "signature": rep.signature, "options": rep.options,
           "label_comparison": rep.label_comparison}
    v = rep.validation
    lines = [f"CUD ({rep.distance}, {rep.options['setting']} setting) on {v['n']} forget samples "
             f"({v['n_hard']} hard, {v['n_easy']} easy by {v['labels']} labels; {v['folds']}-fold out-of-fold): "
             f"spearman {_fmt(v['spearman'])}, AUROC {_fmt(v['auroc'])}"]
    for name, b in v["baselines"].items():
        lines.append(f"  baseline {name:<14} spearman {_fmt(b['spearman'])}, AUROC {_fmt(b['auroc'])}")
    for kind, c in rep.label_comparison.items():
        if "error" in c:
            lines.append(f"  labels {kind:<10} unavailable: {c['error']}")
            continue
        base = ", ".join(f"{n} {_fmt(b['auroc'])}" for n, b in c["baselines"].items())
        lines.append(f"  labels {kind:<10} CUD AUROC {_fmt(c['cud']['auroc'])}, baselines' AUROC {base}")
    for grp, sig in rep.signature.items():
        lines.append(f"  {grp:<5} n={sig['n']:<4} " + ", ".join(f"{k} {_fmt(sig[k])}" for k in sig if k != "n"))
    emit(args, obj, "\n".join(lines))


def _eap_arguments(sp: argparse.ArgumentParser, defaults: EAPOptions) -> None:
    from analysis.circuits.options import BaselineName, MetricName  # the METRICS / BASELINES names

    sp.add_argument("--top", type=positive_int, default=DEFAULT_TOP_N,
                    help=f"{HELP['top_n']} (default {DEFAULT_TOP_N})")
    sp.add_argument("--metric", default=defaults.metric, choices=get_args(MetricName),
                    help=f"{HELP['metric']} (default {defaults.metric})")
    sp.add_argument("--steps", type=positive_int, default=defaults.steps,
                    help=f"{HELP['steps']} (default {defaults.steps})")
    sp.add_argument("--baseline", default=defaults.baseline, choices=get_args(BaselineName),
                    help=f"{HELP['baseline']} (default {defaults.baseline})")


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure circuit` and `erasure score` through the CLI's ``verb`` helper (adds --json)."""
    from analysis.circuits.options import CIRCUIT_DEFAULTS, CUDOptions, DistanceName, VectorKind

    sp = verb(sub, "circuit", cmd_circuit, "EAP-IG edge scores and the greedy circuit of one sample")
    sp.add_argument("study")
    sp.add_argument("--model", default="original")
    sp.add_argument("--sample", required=True)
    _eap_arguments(sp, CIRCUIT_DEFAULTS)  # faithful single-sample circuits (see analysis.circuits.options)

    cud = CUDOptions()
    sp = verb(sub, "score", cmd_score, "CUD: circuit-guided unlearning difficulty of every forget sample")
    sp.add_argument("study")
    sp.add_argument("--distance", default=cud.distance, choices=get_args(DistanceName),
                    help=f"{HELP['distance']} (default {cud.distance})")
    sp.add_argument("--vector", default=cud.vector, choices=get_args(VectorKind),
                    help=f"{HELP['vector']} (default {cud.vector})")
    sp.add_argument("--quantile", type=float_arg(0, 0.5, min_open=True), default=cud.quantile,
                    help=f"{HELP['quantile']} (default {cud.quantile})")
    sp.add_argument("--folds", type=int_arg(2), default=cud.folds, help=f"{HELP['folds']} (default {cud.folds})")
    sp.add_argument("--seed", type=seed_int, default=cud.seed, help=f"{HELP['seed']} (default {cud.seed})")
    sp.add_argument("--reference-setting", action="store_true",
                    help=f"{HELP['setting']} (default: ours)")
    _eap_arguments(sp, cud.eap)  # CUD's own setting
    add_ray_arguments(sp)
