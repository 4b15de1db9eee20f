"""`erasure unlearn MODEL_DIR --method M --forget F --retain R --out DIR` and `erasure study add STUDY NAME=DIR`.
Wired into analysis/cli.py: ``add_parser(sub, verb)`` (ANALYSIS_VERBS) and ``add_study_parser(study_sub, verb)``."""

from __future__ import annotations

import argparse

from analysis.cli_common import (
    VerbFn,
    emit,
    float_arg,
    int_arg,
    positive_float,
    positive_int,
    progress_bar,
    seed_int,
)
from analysis.data.cli_args import add_sample_format_arguments
from analysis.errors import AnalysisInputError
from analysis.unlearn.options import METHODS, OPTION_HELP, UnlearnRunOptions
from analysis.zoo.options import DEPTH_LOSS_LABELS

ROLES: tuple[str, ...] = ("original", "unlearned", "control")  # analysis.models.handle.MODEL_ROLES (no torch here)


def _fmt(metrics: dict[str, float]) -> str:
    return f"log-prob {metrics['logprob']:.3f}, accuracy {metrics['accuracy']:.2f}"


def cmd_unlearn(args: argparse.Namespace) -> None:
    from analysis.data.cli_args import sample_format
    from analysis.unlearn.runner import unlearn_checkpoint

    options = UnlearnRunOptions(method=args.method, preset=args.preset, steps=args.steps, lr=args.lr,
                                batch_size=args.batch_size, seed=args.seed, retain_weight=args.retain_weight,
                                layer=args.layer, depth_loss=args.depth_loss, base=args.base,
                                checkpoint_every=args.checkpoint_every, device=args.device, restart=args.restart)
    with progress_bar(f"unlearn {args.method}") as progress:  # on stderr: --json's stdout stays one JSON object
        run = unlearn_checkpoint(args.model_dir, args.forget, args.retain, args.out, options, progress=progress,
                                 sample_options=sample_format(args))
    how = ("already complete: nothing computed" if run.reused else
           f"{run.steps} steps, resumed after step {run.resumed_from}" if run.resumed_from else f"{run.steps} steps")
    c = run.config
    v = run.verification
    lines = [f"{run.method} ({run.preset} preset: lr {c.get('lr'):g}, batch {c.get('batch_size')}; {how}) "
             f"-> {run.out}",
             f"  forget: {_fmt(run.before['forget'])} -> {_fmt(run.after['forget'])}",
             f"  retain: {_fmt(run.before['retain'])} -> {_fmt(run.after['retain'])}",
             f"  saved a transformers checkpoint ({', '.join(run.files)}); its logits match the trained model's to "
             f"{v.get('max_abs_logit_diff', float('nan')):.2g}",
             f"  register it: erasure study add STUDY NAME={run.out}  (role {run.role})"]
    if run.frozen_parameters:
        lines.insert(4, f"  kept frozen (no source in the checkpoint): {len(run.frozen_parameters)} parameters")
    emit(args, run.to_dict(), "\n".join(lines))


def cmd_study_add(args: argparse.Namespace) -> None:
    from analysis.unlearn.runner import add_to_study

    name, sep, path = args.model.partition("=")
    if not sep or not name or not path:
        raise AnalysisInputError(f"expected NAME=DIR, got {args.model!r}")
    rec = add_to_study(args.study, name, path, role=args.role, method=args.method, reference=args.reference)
    emit(args, rec, f"added {name!r} ({rec['role']}{', ' + rec['method'] if rec.get('method') else ''}) to "
                    f"{rec['study']}" + (" as its reference retrain control" if rec["reference"] else ""))


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure unlearn` through the CLI's ``verb`` helper (adds --json)."""
    sp = verb(sub, "unlearn", cmd_unlearn, "unlearn a forget set from a Hugging Face checkpoint directory and save "
                                           "the result as a Hugging Face checkpoint (resumable)")
    sp.add_argument("model_dir", help="the checkpoint directory (config.json, safetensors, tokenizer)")
    sp.add_argument("--method", required=True, choices=METHODS, help=OPTION_HELP["method"])
    sp.add_argument("--forget", required=True, help="forget samples (a file in one of the --format formats)")
    sp.add_argument("--retain", required=True, help="retain samples (a file in one of the --format formats)")
    sp.add_argument("--out", required=True, help="where the unlearned checkpoint is written (new or empty; the "
                                                 "same --out resumes an interrupted run)")
    sp.add_argument("--preset", choices=("pretrained", "organism"), default="pretrained", help=OPTION_HELP["preset"])
    sp.add_argument("--steps", type=positive_int, default=None, help=OPTION_HELP["steps"])
    sp.add_argument("--lr", type=positive_float, default=None, help=OPTION_HELP["lr"])
    sp.add_argument("--batch-size", type=positive_int, default=None, help=OPTION_HELP["batch_size"])
    sp.add_argument("--seed", type=seed_int, default=0, help=OPTION_HELP["seed"])
    sp.add_argument("--retain-weight", type=float_arg(0), default=None, help=OPTION_HELP["retain_weight"])
    sp.add_argument("--layer", type=int_arg(0), default=None, help=OPTION_HELP["layer"])
    sp.add_argument("--depth-loss", choices=tuple(DEPTH_LOSS_LABELS), default="npo", help=OPTION_HELP["depth_loss"])
    sp.add_argument("--base", default=None, metavar="DIR|scratch", help=OPTION_HELP["base"])
    sp.add_argument("--checkpoint-every", type=positive_int, default=50, help=OPTION_HELP["checkpoint_every"])
    sp.add_argument("--device", default=None, help=OPTION_HELP["device"])
    sp.add_argument("--restart", action="store_true", help=OPTION_HELP["restart"])
    add_sample_format_arguments(sp)


def add_study_parser(st: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure study add` under `erasure study`."""
    sp = verb(st, "add", cmd_study_add, "add a model directory to a study (e.g. the output of `erasure unlearn`)")
    sp.add_argument("study")
    sp.add_argument("model", metavar="NAME=DIR", help="the model's name in the study and its directory")
    sp.add_argument("--role", choices=ROLES, default=None,
                    help="its role (default: what DIR's unlearn_run.json records, else unlearned)")
    sp.add_argument("--method", default=None, help="the method that made it (default: from unlearn_run.json)")
    sp.add_argument("--reference", action="store_true",
                    help="make it the study's reference retrain control (role control), the forget-quality "
                         "reference")
