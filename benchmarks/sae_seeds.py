"""Ground truth for the SAE verdict over seeds: for each demo study given (one per seed), train (or load) the
default TopK SAE, run restoration / retention / probes on every model (``judged_models``: all but the original
and the reference retrain control, which is never judged against itself) and on the zoo's retrains of other
seeds, and tabulate per seed x model the verdict, the three signals and the SAE health. The controls must come
out: each zoo retrain (``zoo_retrain_*``, a retrain of another seed judged against the reference) -> erased and
``readout_suppression`` -> suppressed on every seed; the exit status is 1 when they do not.

    python -m benchmarks.sae_seeds studies/demo /tmp/seeds/seed1 /tmp/seeds/seed2 \
        --md benchmarks/SAE_SEEDS.md --json benchmarks/out/sae_seeds.json

Reports are read from / written to each study's results store, so a second run is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from analysis.sae import RestorationReport, SAEOptions, TrainedSAE, judged_models, restore_all, train_sae
from analysis.sae.options import (
    ERASE_PROBE_GAP,
    ERASE_RESTORE_NET,
    ERASE_RETENTION_GAP,
    PROBE_MARGIN,
    RESTORE_NET,
)
from analysis.study import Study

EXPECTED = {"readout_suppression": "suppressed"}  # and "erased" for every zoo retrain (``zoo_retrains``)


def zoo_retrains(study: Study) -> list[str]:
    """The zoo's retrains of other seeds (kind ``retrain``, status absent): the "erased" controls. The reference
    retrain control itself is not among them (a zoo retrain's seed differs from it by construction)."""
    from analysis.zoo.result import zoo_members

    ref = study.manifest.retrain
    return [n for n, m in zoo_members(study).items() if m.kind == "retrain" and m.status == "absent" and n != ref]


def expected(study: Study, model: str) -> str | None:
    return "erased" if model in zoo_retrains(study) else EXPECTED.get(model)


def model_row(seed: int, r: RestorationReport, want: str | None = None) -> dict[str, Any]:
    counts = {v: sum(s["verdict"] == v for s in r.per_sample) for v in ("suppressed", "erased", "inconclusive")}
    injection = [x for x in r.injection_by_alpha.values() if x is not None]
    return {"seed": seed, "model": r.model, "verdict": r.verdict, "expected": want,
            "acc_original": r.acc_original, "acc_unlearned": r.acc_unlearned,
            "restoration_rate": r.restoration_rate, "injection": max(injection) if injection else None,
            "restoration_rate_net": r.restoration_rate_net, "feature_retention": r.feature_retention,
            "retrain_feature_retention": r.retrain["feature_retention"], "probe_accuracy": r.probe_accuracy,
            "probe_gap": r.probe_gap, "reasons": r.reasons, "per_sample": counts}


def seed_table(study: Study, options: SAEOptions | None = None) -> tuple[TrainedSAE, list[dict[str, Any]]]:
    """(the SAE, one row per judged model: the study's models but the original and the reference retrain
    control, then the zoo's retrains of other seeds) for one study."""
    trained = train_sae(study, options)
    names = list(dict.fromkeys([*judged_models(study), *zoo_retrains(study)]))
    reports = restore_all(study, names, trained=trained)
    seed = int(study.manifest.seed if study.manifest.seed is not None else -1)
    return trained, [model_row(seed, r, expected(study, r.model)) for r in reports.values()]


def _f(x: float | None, signed: bool = False) -> str:
    return "–" if x is None else (f"{x:+.2f}" if signed else f"{x:.2f}")


def markdown(health: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    studies = " ".join(str(h["study"]) for h in health)
    out = ["# Suppression vs deletion: the verdict over demo seeds", "",
           f"`python -m benchmarks.sae_seeds {studies}` with the rule of `analysis/sae/verdict.py` "
           f"(PROBE_MARGIN {PROBE_MARGIN}, RESTORE_NET {RESTORE_NET}, ERASE_PROBE_GAP {ERASE_PROBE_GAP}, "
           f"ERASE_RESTORE_NET {ERASE_RESTORE_NET}, ERASE_RETENTION_GAP {ERASE_RETENTION_GAP}). "
           "`train s` is the wall time of SAELens's runner where the SAE was trained (machine-dependent).", "",
           "## SAE health (TopK, default options, on the original)", "",
           "| seed | hook | k | d_sae | FVU | L0 | dead | retain acc | retain acc, SAE spliced | train s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {h['seed']} | `{h['hook']}` | {h['k']} | {h['d_sae']} | {h['fvu']:.3f} | {h['l0']:.1f} | "
            f"{h['n_dead']} | {h['retain_acc']:.3f} | {h['retain_acc_spliced']:.3f} | {h['train_seconds']:.1f} |"
            for h in health]
    out += ["", "## Verdicts and signals", "",
            "Forget accuracy original -> model; restoration rate (max over alpha), injection into the retrain "
            "control, net rate; expert-feature retention (model / retrain control); probe accuracy on forget "
            "(best layer) and its largest gap over the retrain control; per-sample verdicts "
            "(suppressed / erased / inconclusive).", "",
            "| seed | model | verdict | forget acc | restore | inject | net | retention | probe | probe gap | "
            "per sample S/E/I |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "" if r["expected"] is None else (" ✓" if r["verdict"] == r["expected"] else f" ✗ (want {r['expected']})")
        c = r["per_sample"]
        out.append(f"| {r['seed']} | {r['model']} | **{r['verdict']}**{mark} | {r['acc_original']:.2f} -> "
                   f"{r['acc_unlearned']:.2f} | {_f(r['restoration_rate'])} | {_f(r['injection'])} | "
                   f"{_f(r['restoration_rate_net'])} | {r['feature_retention']:.2f} / "
                   f"{r['retrain_feature_retention']:.2f} | {_f(r['probe_accuracy'])} | {_f(r['probe_gap'], True)} | "
                   f"{c['suppressed']}/{c['erased']}/{c['inconclusive']} |")
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["model"], r["seed"]): r["verdict"] for r in rows}
    out += ["", "## Verdicts across seeds", "", "| model | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|" + "---|" * len(seeds)]
    out += [f"| {m} | " + " | ".join(by.get((m, s), "–") for s in seeds) + " |"
            for m in dict.fromkeys(r["model"] for r in rows)]
    ok = controls_pass(rows)
    out += ["", f"Controls (zoo retrains of other seeds -> erased, readout_suppression -> suppressed) on every seed: "
                f"**{'PASS' if ok else 'FAIL'}**"]
    return "\n".join(out) + "\n"


def controls_pass(rows: list[dict[str, Any]]) -> bool:
    checked = [r for r in rows if r["expected"] is not None]
    return bool(checked) and all(r["verdict"] == r["expected"] for r in checked)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("studies", nargs="+", help="demo studies, one per seed")
    ap.add_argument("--md", type=Path, default=None, help="also write the markdown table here")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    health, rows = [], []
    for path in args.studies:
        study = Study.open(path)
        trained, seed_rows = seed_table(study)
        health.append({"seed": seed_rows[0]["seed"] if seed_rows else None, "study": str(path),
                       **trained.summary()})
        rows += seed_rows
    md = markdown(health, rows)
    print(md)
    if args.md:
        args.md.write_text(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"health": health, "rows": rows, "controls_pass": controls_pass(rows)},
                                        indent=2))
    return 0 if controls_pass(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
