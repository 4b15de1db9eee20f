"""`erasure attribute` and `erasure recover`: unPact prompt-token attribution and keyword-emphasis recovery from
the command line. Wired into analysis/cli.py with ``add_parser(sub, verb)``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, get_args

from analysis.cli_common import (
    VerbFn,
    add_ray_arguments,
    emit,
    executor_from_args,
    float_arg,
    nonnegative_int,
    open_study,
    positive_float,
    positive_int,
    progress_bar,
)
from analysis.errors import AnalysisInputError

if TYPE_CHECKING:
    from analysis.attribution.options import AttributionOptions, RecoveryOptions


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def attribution_options(args: argparse.Namespace) -> AttributionOptions:
    from analysis.attribution import AttributionOptions

    return AttributionOptions(method=args.method, ablation=args.ablation, neutral=args.neutral, alpha=args.alpha,
                              beta=args.beta, ig_steps=args.ig_steps).validated()


def parse_layers(value: str | None) -> tuple[int, ...] | None:
    """"all" / None -> every layer; "0,2" -> (0, 2) (the argparse ``type`` of --layers: a value that is not a
    layer number >= 0 is a parse-time error naming the option)."""
    if value is None or value.strip() in ("", "all"):
        return None
    layers = []
    for v in (v.strip() for v in value.split(",")):
        try:
            layers.append(nonnegative_int(v))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers (whole numbers >= 0) or "
                                             f"'all', got {v!r} in {value!r}") from None
    return tuple(layers)


def recovery_options(args: argparse.Namespace) -> RecoveryOptions:
    from analysis.attribution import EmphasisParams, RecoveryOptions

    params = EmphasisParams(factor=args.factor, layers=args.layers, copies=args.copies,
                            separator=args.separator)
    return RecoveryOptions(strategies=tuple(args.strategy) if args.strategy else None, params=params,
                           keywords_from=args.keywords_from, attribution=attribution_options(args)).validated()


def cmd_attribute(args: argparse.Namespace) -> None:
    from analysis.attribution import GROUPS, attribute_sample, compare_models

    if bool(args.sample) == bool(args.all):
        raise AnalysisInputError("give either --sample ID or --all")
    study = open_study(args)
    study.entry(args.model)
    opts = attribution_options(args)
    if args.sample:
        r = attribute_sample(study, args.model, args.sample, opts)
        obj = {"model": args.model, "sample_id": r.sample_id, "tokens": r.tokens, "contributions": r.contributions,
               "keywords": r.keywords, "keyword_tokens": r.keyword_tokens, "method": r.method,
               "logprob": r.logprob, "answer": r.answer, "options": r.options, "fingerprint": r.model}
        lines = [f"{args.model} on {r.sample_id}: LP({r.answer!r}) = {r.logprob:.4f}  [{r.method}]",
                 f"{'token':<20}{'contribution':>14}"]
        for i, (t, c) in enumerate(zip(r.tokens, r.contributions, strict=True)):
            lines.append(f"{t[:19]:<20}{_num(c, '.4f'):>14}" + ("  keyword" if i in r.keywords else ""))
        emit(args, obj, "\n".join(lines))
        return
    with progress_bar(f"attribute {args.before} vs {args.model}") as progress:
        c = compare_models(study, args.model, before=args.before, options=opts, progress=progress)
    obj = {"before": c.before, "after": c.after, "summary": c.summary, "disrupted_focus": c.disrupted_focus,
           "indiscriminate_penalisation": c.indiscriminate_penalisation, "retain_abs_change": c.retain_abs_change,
           "keyword_overlap": c.keyword_overlap, "logprob_change": c.logprob_change, "n_samples": len(c.samples),
           "skipped": c.skipped, "options": c.options}
    groups = GROUPS
    lines = [f"contribution change {c.after} - {c.before} (mean over samples of the mean over the group's tokens; "
             f"groups from {c.before}'s keywords)", f"{'split':<10}" + "".join(f"{g:>13}" for g in groups)]
    for split, row in c.summary.items():
        lines.append(f"{split:<10}" + "".join(f"{_num(row.get(g), '+.4f'):>13}" for g in groups))
    lines += [f"disrupted focus (forget keyword contribution drop): {_num(c.disrupted_focus, '.4f')}",
              f"indiscriminate penalisation (retain contribution drop): {_num(c.indiscriminate_penalisation, '.4f')}"
              f"  (mean |change| {_num(c.retain_abs_change, '.4f')})",
              "keyword overlap (Jaccard): " + ", ".join(f"{s} {_num(v, '.2f')}" for s, v in c.keyword_overlap.items())]
    emit(args, obj, "\n".join(lines))


def cmd_recover(args: argparse.Namespace) -> None:
    from analysis.attribution import recover

    study = open_study(args)
    study.entry(args.model)
    opts = recovery_options(args)
    with executor_from_args(args) as executor, progress_bar(f"recover {args.model}") as progress:
        rep = recover(study, args.model, opts, executor=executor, progress=progress)
    obj = {"model": rep.model, "retrain": rep.retrain, "recovery_rate": rep.recovery_rate, "prob_gain": rep.prob_gain,
           "retrain_recovery_rate": rep.retrain_recovery_rate, "retrain_prob_gain": rep.retrain_prob_gain,
           "net_by_strategy": rep.net_by_strategy, "best_strategy": rep.best_strategy, "best_net": rep.best_net,
           "original_top1": {s: r.top1_emphasised for s, r in rep.original_results.items()},
           "n_denominator": {s: r.n_denominator for s, r in rep.results.items()},
           "n_forget": rep.n_forget, "n_eligible": rep.n_eligible, "options": rep.options}
    lines = [f"{rep.model}: keyword-emphasis recovery on {rep.n_eligible} of {rep.n_forget} forget samples (those "
             f"the original answers top-1); baseline: {rep.retrain or 'no retrain control'}",
             f"{'strategy':<14}{'recovered':>11}{'rate':>8}{'retrain':>9}{'net':>8}{'p gain':>9}{'retrain':>9}"
             f"{'orig top1':>11}"]
    for row in rep.table():
        lines.append(f"{row['strategy']:<14}{row['recovered']:>11}{_num(row['recovery_rate'], '.2f'):>8}"
                     f"{_num(row['retrain_recovery_rate'], '.2f'):>9}{_num(row['net_recovery_rate'], '+.2f'):>8}"
                     f"{_num(row['prob_gain'], '+.3f'):>9}{_num(row['retrain_prob_gain'], '+.3f'):>9}"
                     f"{_num(row['original_top1'], '.2f'):>11}")
    lines.append("rate = share of eligible samples not top-1 without emphasis that become top-1 with it; net = rate "
                 "minus the retrain control's; p gain = mean change of the answer probability")
    if rep.best_strategy is not None:
        lines.append(f"best net recovery: {rep.best_strategy} {_num(rep.best_net, '+.2f')}")
    emit(args, obj, "\n".join(lines))


def _attribution_arguments(sp: argparse.ArgumentParser) -> None:
    from analysis.attribution.options import (
        Ablation,
        AttributionMethod,
        ablation_help,
        attribution_method_help,
    )

    sp.add_argument("--method", default="loo", choices=get_args(AttributionMethod),
                    help=attribution_method_help())
    sp.add_argument("--ablation", default="delete", choices=get_args(Ablation),
                    help=ablation_help() + " (the neutral token: --neutral)")
    sp.add_argument("--neutral", default="unk", help="replacement token: unk, pad, eos or a one-token string")
    sp.add_argument("--alpha", type=float_arg(0, 1, max_open=True), default=0.1,
                    help="KeyTokens: minimum share of the positive contribution mass (default 0.1)")
    sp.add_argument("--beta", type=positive_int, default=3,
                    help="KeyTokens: with fewer than beta positive tokens, all of them are keywords (default 3)")
    sp.add_argument("--ig-steps", type=positive_int, default=16, help="integrated-gradients steps (default 16)")


def add_parser(sub: argparse._SubParsersAction, verb: VerbFn) -> None:
    """Register `erasure attribute` and `erasure recover` through the CLI's ``verb`` helper (adds --json)."""
    from analysis.attribution.options import (
        KEYWORD_SOURCE_HELP,
        KEYWORD_SOURCES,
        EmphasisStrategy,
        strategy_help,
    )

    sp = verb(sub, "attribute", cmd_attribute,
              "unPact prompt-token contributions of a sample's answer (or before vs after over the study)")
    sp.add_argument("study")
    sp.add_argument("--model", default="original", help="model of the study (default: original)")
    sp.add_argument("--sample", default=None, help="attribute one sample id")
    sp.add_argument("--all", action="store_true",
                    help="compare --model with --before over the forget and retain samples")
    sp.add_argument("--before", default="original", help="the model before unlearning for --all (default: original)")
    _attribution_arguments(sp)

    sp = verb(sub, "recover", cmd_recover,
              "keyword-emphasis recovery: does the forgotten answer come back? (with the retrain baseline)")
    sp.add_argument("study")
    sp.add_argument("--model", required=True, help="unlearned model of the study")
    sp.add_argument("--strategy", action="append", choices=get_args(EmphasisStrategy),
                    help=f"emphasis strategy (repeatable; default: all): {strategy_help()}")
    sp.add_argument("--factor", type=positive_float, default=3.0,
                    help="activation strategies: attention / embedding scale on keywords (default 3)")
    sp.add_argument("--layers", type=parse_layers, default=None,
                    help="attention strategies: comma-separated layers (default: all)")
    sp.add_argument("--copies", type=positive_int, default=1, help="prompt strategies: extra copies of the keywords")
    sp.add_argument("--separator", default=None,
                    help="prefix: token between the keywords and the prompt (default: . , : or ;, first known)")
    sp.add_argument("--keywords-from", default="original", choices=KEYWORD_SOURCES.names(),
                    help=KEYWORD_SOURCE_HELP + " (default: original)")
    _attribution_arguments(sp)
    add_ray_arguments(sp)
