"""`erasure circuit` and `erasure score`. Wired into analysis/cli.py with ``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

VerbFn = Callable[[Any, str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def _opts(args: argparse.Namespace) -> Any:
    from analysis.circuits.eap import EAPOptions

    return EAPOptions(metric=args.metric, steps=args.steps, baseline=args.baseline)


def cmd_circuit(args: argparse.Namespace) -> None:
    from analysis.circuits.api import circuit_for_sample
    from analysis.study import Study

    study = Study.open(args.study)
    study.entry(args.model)
    r = circuit_for_sample(study, args.model, args.sample, top_n=args.top, options=_opts(args))
    obj = {"nodes": r.nodes, "edges": r.edges, "circuit": r.circuit, "faithfulness": r.faithfulness,
           "stats": r.stats, "model": r.model, "sample": r.sample_id, "options": r.options}
    if args.json:
        print(json.dumps(obj))
        return
    f = r.faithfulness["faithfulness"]
    lines = [f"{args.model} on {args.sample}: top-{args.top} circuit, faithfulness "
             f"{'-' if f is None else f'{f:.3f}'} ({r.faithfulness['definition']})",
             "stats: " + ", ".join(f"{k}={v}" for k, v in r.stats.items())]
    for i in r.circuit[:20]:
        e = r.edges[i]
        lines.append(f"  {e['src']:>10} -> {e['dst']:<12} {e['score']:+.5f}")
    print("\n".join(lines))


def cmd_score(args: argparse.Namespace) -> None:
    from analysis.circuits.api import score_study
    from analysis.cli_common import executor_from_args, open_study

    with executor_from_args(args) as executor:
        rep = score_study(open_study(args), distance=args.distance, top_n=args.top, options=_opts(args),
                          vector=args.vector, quantile=args.quantile, folds=args.folds, seed=args.seed,
                          executor=executor)
    obj = {"samples": [{"id": i, "cud": c, "observed": o, "label": lb}
                       for i, c, o, lb in zip(rep.ids, rep.cud, rep.observed, rep.labels, strict=True)],
           "validation": rep.validation, "signature": rep.signature, "options": rep.options}
    if args.json:
        print(json.dumps(obj))
        return
    v = rep.validation

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = [f"CUD ({rep.distance}) on {v['n']} forget samples ({v['n_hard']} hard, {v['n_easy']} easy; "
             f"{v['folds']}-fold out-of-fold): spearman {fmt(v['spearman'])}, AUROC {fmt(v['auroc'])}"]
    for name, b in v["baselines"].items():
        lines.append(f"  baseline {name:<14} spearman {fmt(b['spearman'])}, AUROC {fmt(b['auroc'])}")
    for grp, sig in rep.signature.items():
        lines.append(f"  {grp:<5} n={sig['n']:<4} " + ", ".join(f"{k} {fmt(sig[k])}" for k in sig if k != "n"))
    print("\n".join(lines))


def _common(sp: argparse.ArgumentParser, defaults: Any) -> None:
    from analysis.circuits.eap import BASELINES, METRICS

    sp.add_argument("--top", type=int, default=75, help="edges in the greedy circuit (default 75)")
    sp.add_argument("--metric", default=defaults.metric, choices=list(METRICS),
                    help=f"prob: length-normalised answer probability (CUD's); logprob; logit_diff (default "
                         f"{defaults.metric})")
    sp.add_argument("--steps", type=int, default=defaults.steps,
                    help=f"integrated-gradient steps (default {defaults.steps})")
    sp.add_argument("--baseline", default=defaults.baseline, choices=list(BASELINES),
                    help="zero embeddings, the mean embedding of retain samples, or a corrupted run (the subject "
                         f"replaced by another of the same token length; default {defaults.baseline})")


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure circuit` and `erasure score` through the CLI's ``verb`` helper (adds --json)."""
    from analysis.circuits.cud import DISTANCES
    from analysis.circuits.eap import CIRCUIT_DEFAULTS, EAPOptions
    from analysis.cli_common import add_ray_arguments

    sp = verb(sub, "circuit", cmd_circuit, "EAP-IG edge scores and the greedy circuit of one sample")
    sp.add_argument("study")
    sp.add_argument("--model", default="original")
    sp.add_argument("--sample", required=True)
    _common(sp, CIRCUIT_DEFAULTS)  # faithful single-sample circuits (see analysis.circuits.eap)

    sp = verb(sub, "score", cmd_score, "CUD: circuit-guided unlearning difficulty of every forget sample")
    sp.add_argument("study")
    sp.add_argument("--distance", default="cosine", choices=list(DISTANCES))
    sp.add_argument("--vector", default="binary", choices=["binary", "weighted"])
    sp.add_argument("--quantile", type=float, default=0.3, help="top/bottom share per method (default 0.3)")
    sp.add_argument("--folds", type=int, default=5)
    sp.add_argument("--seed", type=int, default=0)
    _common(sp, EAPOptions())  # CUD's own setting
    add_ray_arguments(sp)
