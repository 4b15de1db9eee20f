"""`erasure sae train` and `erasure restore`. Wired into analysis/cli.py with ``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

VerbFn = Callable[[Any, str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def cmd_sae_train(args: argparse.Namespace) -> None:
    from analysis.sae import SAEOptions, train_sae
    from analysis.study import Study

    study = Study.open(args.study)
    t = train_sae(study, SAEOptions(layer=args.layer, k=args.k, expansion=args.expansion, steps=args.steps),
                  force=args.force)
    obj = t.summary()
    if args.json:
        print(json.dumps(obj))
        return
    h = t.health
    print(f"TopK SAE at {t.hook} (k={obj['k']}, d_sae={obj['d_sae']}) saved in {t.path}\n"
          f"  FVU {h.fvu:.4f}   L0 {h.l0:.1f}   dead {h.n_dead}/{h.d_sae} ({h.dead_fraction:.1%})\n"
          f"  retain accuracy {h.retain_acc:.3f} -> {h.retain_acc_spliced:.3f} with the SAE spliced in\n"
          f"  {h.n_tokens} training tokens, {h.tokens_per_s:,.0f} tokens/s")


def cmd_restore(args: argparse.Namespace) -> None:
    from analysis.cli_common import executor_from_args, open_study
    from analysis.sae import restore

    study = open_study(args)
    alphas = [float(a) for a in args.alphas.split(",")] if args.alphas else None
    kw: dict[str, Any] = {"alphas": alphas} if alphas else {}
    with executor_from_args(args) as executor:
        r = restore(study, args.model, layer=args.layer, k=args.k, executor=executor, **kw)
    obj = {"model": r.model, "verdict": r.verdict, "restoration_rate": r.restoration_rate,
           "restoration_rate_net": r.restoration_rate_net, "feature_retention": r.feature_retention,
           "probe_accuracy": r.probe_accuracy, "per_alpha": r.per_alpha,
           "per_sample": [{"id": s["id"], "verdict": s["verdict"]} for s in r.per_sample],
           "evidence": r.evidence, "probe_by_layer": r.probe_by_layer, "injection_by_alpha": r.injection_by_alpha}
    if args.json:
        print(json.dumps(obj))
        return
    lines = [f"{r.model}: {r.verdict.upper()}", *[f"  - {e}" for e in r.evidence], "  per alpha (forget accuracy):",
             *[f"    alpha {a:>4}: {acc:.3f}" for a, acc in r.per_alpha.items()], "  per sample:",
             *[f"    {s['id']:<28} {s['verdict']}" for s in r.per_sample]]
    print("\n".join(lines))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure sae train` and `erasure restore` through the CLI's ``verb`` helper (adds --json)."""
    from analysis.cli_common import add_ray_arguments

    sae = sub.add_parser("sae", help="sparse autoencoders on the original model")
    sae_sub = sae.add_subparsers(dest="sub", required=True, parser_class=type(sae))
    sp = verb(sae_sub, "train", cmd_sae_train, "train (or load the cached) TopK SAE on the original model")
    sp.add_argument("study")
    sp.add_argument("--layer", type=int, default=None, help="blocks.L.hook_resid_post (default n_layers // 2)")
    sp.add_argument("--k", type=int, default=16, help="active features per token (TopK)")
    sp.add_argument("--expansion", type=int, default=4, help="d_sae = expansion * d_model")
    sp.add_argument("--steps", type=int, default=1500)
    sp.add_argument("--force", action="store_true", help="retrain even if a cached SAE exists")

    sp = verb(sub, "restore", cmd_restore, "suppression or deletion: SAE feature restoration, retention and probes")
    sp.add_argument("study")
    sp.add_argument("--model", required=True, help="unlearned model or control of the study")
    sp.add_argument("--layer", type=int, default=None, help="layer of the SAE (default n_layers // 2)")
    sp.add_argument("--k", type=int, default=16)
    sp.add_argument("--alphas", default=None, help="comma-separated steering strengths (default 1,2,5,10)")
    add_ray_arguments(sp)
