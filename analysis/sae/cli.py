"""`erasure sae train` and `erasure restore`. Wired into analysis/cli.py with ``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse

from analysis.cli_common import (
    VerbFn,
    add_ray_arguments,
    emit,
    executor_from_args,
    float_list,
    nonnegative_int,
    open_study,
    positive_int,
    progress_bar,
)
from analysis.sae.options import RESTORE_OPTION_HELP, SAE_OPTION_HELP, RestoreOptions, SAEOptions


def cmd_sae_train(args: argparse.Namespace) -> None:
    from analysis.sae.train import train_sae

    study = open_study(args)
    with progress_bar("sae train") as progress:
        t = train_sae(study, SAEOptions(layer=args.layer, k=args.k, expansion=args.expansion, steps=args.steps),
                      force=args.force, progress=progress)
    obj = t.summary()
    h = t.health
    emit(args, obj, f"TopK SAE at {t.hook} (k={obj['k']}, d_sae={obj['d_sae']}) saved in {t.path}\n"
                    f"  FVU {h.fvu:.4f}   L0 {h.l0:.1f}   dead {h.n_dead}/{h.d_sae} ({h.dead_fraction:.1%})\n"
                    f"  retain accuracy {h.retain_acc:.3f} -> {h.retain_acc_spliced:.3f} with the SAE spliced in\n"
                    f"  {h.n_tokens} training tokens, {h.tokens_per_s:,.0f} tokens/s")


# --alphas "1,2,5" -> (1.0, 2.0, 5.0): distinct finite strengths > 0, refused at parse time naming the value
parse_alphas = float_list(0, min_open=True, distinct=True)


def cmd_restore(args: argparse.Namespace) -> None:
    from analysis.sae.runner import restore

    study = open_study(args)
    opts = RestoreOptions(layer=args.layer, k=args.k, **({"alphas": args.alphas} if args.alphas else {}))
    with executor_from_args(args) as executor, progress_bar(f"restore {args.model}") as progress:
        r = restore(study, args.model, opts, executor=executor, progress=progress)
    obj = {"model": r.model, "verdict": r.verdict, "restoration_rate": r.restoration_rate,
           "restoration_rate_net": r.restoration_rate_net, "feature_retention": r.feature_retention,
           "probe_accuracy": r.probe_accuracy, "probe_gap": r.probe_gap, "probe_gap_layer": r.probe_gap_layer,
           "reasons": r.reasons, "per_alpha": r.per_alpha,
           "per_sample": [{"id": s["id"], "verdict": s["verdict"]} for s in r.per_sample],
           "evidence": r.evidence, "probe_by_layer": r.probe_by_layer, "injection_by_alpha": r.injection_by_alpha,
           # the SAE's reconstruction of this model's own activations, of the original's and of the retrain
           # control's (fve: fraction of variance explained; nmse: normalised MSE), and the caveat when poor
           "sae_fit": r.sae_fit, "sae_fit_original": r.sae_fit_original,
           "sae_fit_retrain": r.retrain.get("sae_fit"), "caveats": r.caveats}
    lines = [f"{r.model}: {r.verdict.upper()} ({'; '.join(r.reasons)})", *[f"  - {e}" for e in r.evidence],
             "  per alpha (forget accuracy):", *[f"    alpha {a:>4}: {acc:.3f}" for a, acc in r.per_alpha.items()],
             "  per sample:", *[f"    {s['id']:<28} {s['verdict']}" for s in r.per_sample]]
    emit(args, obj, "\n".join(lines))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure sae train` and `erasure restore` through the CLI's ``verb`` helper (adds --json)."""
    defaults, restore_defaults = SAEOptions(), RestoreOptions()
    sae = sub.add_parser("sae", help="sparse autoencoders on the original model")
    sae_sub = sae.add_subparsers(dest="sub", required=True, parser_class=type(sae))
    sp = verb(sae_sub, "train", cmd_sae_train, "train (or load the cached) TopK SAE on the original model")
    sp.add_argument("study")
    sp.add_argument("--layer", type=nonnegative_int, default=defaults.layer, help=SAE_OPTION_HELP["layer"])
    sp.add_argument("--k", type=positive_int, default=defaults.k,
                    help=SAE_OPTION_HELP["k"] + " (at most d_sae = expansion x d_model)")
    sp.add_argument("--expansion", type=positive_int, default=defaults.expansion, help=SAE_OPTION_HELP["expansion"])
    sp.add_argument("--steps", type=positive_int, default=defaults.steps, help=SAE_OPTION_HELP["steps"])
    sp.add_argument("--force", action="store_true", help="retrain even if a cached SAE exists")

    sp = verb(sub, "restore", cmd_restore, "suppression or deletion: SAE feature restoration, retention and probes")
    sp.add_argument("study")
    sp.add_argument("--model", required=True, help=RESTORE_OPTION_HELP["model"])
    sp.add_argument("--layer", type=nonnegative_int, default=restore_defaults.layer,
                    help=RESTORE_OPTION_HELP["layer"])
    sp.add_argument("--k", type=positive_int, default=restore_defaults.k, help=RESTORE_OPTION_HELP["k"])
    sp.add_argument("--alphas", type=parse_alphas, default=None, help=RESTORE_OPTION_HELP["alphas"])
    add_ray_arguments(sp)
