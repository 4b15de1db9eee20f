"""The meta-evaluation over demo seeds: for each study given (one per seed, each with its zoo built), run
``erasure validate`` (every registered signal, robustness on unless ``--no-robustness``) and write
benchmarks/VALIDATION.md: each signal's AUROC of knowledge-present (P) against knowledge-absent (N) zoo members
with its 95% bootstrap interval per seed, its robustness (R / Q / H), the zoo, and where the study's unlearning
methods fall among the zoo; then which signals separate on every seed and which do not.

    python -m benchmarks.validation_seeds studies/demo /tmp/seeds/seed1 /tmp/seeds/seed2 \
        --md benchmarks/VALIDATION.md --json benchmarks/out/validation.json

Every reading is read from / written to each study's results store, so a second run is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analysis.study import Study
from analysis.validation.options import ValidationOptions, parse_signals
from analysis.validation.result import ValidationResult
from analysis.validation.runner import validate

TARGET_AUROC = 0.98  # the bar for the best single signal on every seed
NEUTRAL = "output_forget_acc"  # should not separate P from N (both hide the answers)


def _f(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def _interval(r: Any) -> str:
    if r.auroc is None:
        return "–"
    ci = "" if r.ci_low is None else f" [{r.ci_low:.2f}, {r.ci_high:.2f}]"
    return f"{r.auroc:.2f}{ci}"


def _row(runs: list[tuple[str, str, ValidationResult, float]], name: str, cell: Callable[[Any], str]) -> str:
    """One table row: signal ``name``'s ``cell`` on every seed ("–" where the seed did not score it)."""
    cells = []
    for _, _, res, _ in runs:
        try:
            cells.append(cell(res.signal(name)))
        except KeyError:
            cells.append("–")
    return f"| {name} | " + " | ".join(cells) + " |"


def seed_of(study: Study) -> str:
    """The study's seed, with its size (the same seed is run at test size and at demo size)."""
    seed = study.manifest.seed if study.manifest.seed is not None else "?"
    people = study.manifest.extra.get("n_people")
    return f"{seed} ({people} people, {len(study.forget)} forget samples)" if people else str(seed)


def run(paths: list[str], options: ValidationOptions) -> list[tuple[str, str, ValidationResult, float]]:
    out = []
    for path in paths:
        study = Study.open(path)
        t0 = time.perf_counter()
        result = validate(study, options, progress=None)
        out.append((seed_of(study), str(path), result, time.perf_counter() - t0))
        print(f"seed {seed_of(study)} ({path}): {len(result.signals)} signals, "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
    return out


def markdown(runs: list[tuple[str, str, ValidationResult, float]], options: ValidationOptions) -> str:
    seeds = [s for s, _, _, _ in runs]
    signals = list(dict.fromkeys(r.signal for _, _, res, _ in runs for r in res.signals))
    paths = " ".join(p for _, p, _, _ in runs)
    out = ["# The meta-evaluation over demo seeds", "",
           f"`python -m benchmarks.validation_seeds {paths}` (`erasure validate` on each study; "
           f"{options.n_resamples} bootstrap resamples of the members, P and N resampled separately; robustness "
           f"{'on' if options.robustness else 'off'}: {options.quant_bits}-bit weights and a benign fine-tune of "
           f"{options.finetune_steps} steps at lr {options.finetune_lr:g} on the {options.finetune_split} answers). "
           "AUROC = the chance that a knowledge-present (P) zoo member scores above a knowledge-absent (N) one, "
           "ties ½; a signal *separates* when its 95% interval lies above 0.5.", ""]
    out += ["## AUROC per signal and seed", "", "| signal | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|" + "---|" * len(seeds)]
    for name in signals:
        out.append(_row(runs, name, lambda r: _interval(r) + (" ✓" if r.separation == "separates" else
                                                               " ✗" if r.separation == "reversed" else "")))
    out += ["", "✓ separates (interval above 0.5), ✗ reversed (below).", ""]
    if options.robustness:
        out += ["## Robustness (R: benign fine-tune, Q: 8-bit quantisation, H: harmonic mean)", "",
                "| signal | " + " | ".join(f"seed {s} R / Q / H" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
        for name in signals:
            out.append(_row(runs, name, lambda r: f"{_f(r.robustness_r)} / {_f(r.robustness_q)} / "
                                                  f"{_f(r.robustness_h)}"))
        out.append("")
    out += ["## The zoo", ""]
    for seed, _, res, secs in runs:
        p = ", ".join(m.name for m in res.by_status("present"))
        n = ", ".join(m.name for m in res.by_status("absent"))
        out.append(f"- seed {seed} ({secs:.0f} s): P ({len(res.by_status('present'))}): {p}; "
                   f"N ({len(res.by_status('absent'))}): {n}")
    out += ["", "## Where the unlearning methods fall", "",
            "Per signal that separates on that seed: `present` = above every N member, `absent` = below every P "
            "member, `between` = in the gap between the two ranges, `overlap` = where P and N overlap; the score "
            "follows.", ""]
    for seed, _, res, _ in runs:
        sep = [r.signal for r in res.signals if r.separation == "separates"]
        methods = [m.name for m in res.by_status("unknown")]
        out.append(f"### seed {seed}")
        out.append("")
        if not sep or not methods:
            out += ["No separating signal (or no unlearning method) on this seed.", ""]
            continue
        place = res.placement()
        out += ["| method | " + " | ".join(sep) + " |", "|---|" + "---|" * len(sep)]
        for m in methods:
            out.append(f"| {m} | " + " | ".join(f"{place[s][m]['reads_as']} ({_f(place[s][m]['score'])})"
                                                for s in sep) + " |")
        out.append("")
    out += ["## Closing note", ""]
    for seed, _, res, _ in runs:
        out.append(f"**Seed {seed}.** " + " ".join(res.statement()))
        out.append("")
    out += [conclusion(runs), ""]
    return "\n".join(out)


def conclusion(runs: list[tuple[str, str, ValidationResult, float]]) -> str:
    """Which signals separate on every seed, which never do, the best signal per seed against the 0.98 bar, and
    output accuracy's AUROC (which should be near 0.5)."""
    sets = [{r.signal for r in res.signals if r.separation == "separates"} for _, _, res, _ in runs]
    names = list(dict.fromkeys(r.signal for _, _, res, _ in runs for r in res.signals))
    always = [n for n in names if all(n in s for s in sets)]
    never = [n for n in names if not any(n in s for s in sets)]
    bests = []
    for seed, _, res, _ in runs:
        b = res.best()
        bests.append(f"seed {seed}: {b.signal} {_interval(b)}" if b else f"seed {seed}: none")
    reached = all((res.best() is not None and (res.best().auroc or 0) >= TARGET_AUROC) for _, _, res, _ in runs)
    neutral = []
    for seed, _, res, _ in runs:
        try:
            neutral.append(f"seed {seed} {_interval(res.signal(NEUTRAL))}")
        except KeyError:
            pass
    lines = [f"Separate P from N on every seed: {', '.join(always) or 'none'}.",
             f"Never separate: {', '.join(never) or 'none'}.",
             f"Best single signal: {'; '.join(bests)} — the {TARGET_AUROC} bar is "
             f"{'reached on every seed' if reached else 'NOT reached on every seed'}."]
    if neutral:
        lines.append(f"Output forget accuracy ({NEUTRAL}, which should not separate them: both P and N members "
                     f"fail the forget questions): {'; '.join(neutral)}.")
    return " ".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("studies", nargs="+", help="demo studies with their zoo built, one per seed")
    ap.add_argument("--md", type=Path, default=Path(__file__).resolve().parent / "VALIDATION.md",
                    help="the markdown to write (default benchmarks/VALIDATION.md)")
    ap.add_argument("--json", type=Path, default=None, help="also write every result as JSON here")
    ap.add_argument("--signals", default=None, help="comma-separated signals (default: every registered one)")
    ap.add_argument("--no-robustness", action="store_true", help="skip the quantised and fine-tuned variants")
    args = ap.parse_args(argv)
    options = ValidationOptions(signals=parse_signals(args.signals), robustness=not args.no_robustness).validated()
    runs = run(args.studies, options)
    md = markdown(runs, options)
    print(md)
    args.md.write_text(md)
    print(f"wrote {args.md}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({str(seed): res.to_dict() for seed, _, res, _ in runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
