"""CUD against its baselines on several demo seeds, out of fold, in our setting and the CUD reference setting
(issue 15 item 4): for each study, ``score_study`` with the default labels (auc_after) and the label comparison.

    python -m benchmarks.cud_seeds /tmp/seeds/small0 /tmp/seeds/small1 /tmp/seeds/seed2 [--settings ours,reference]

Writes benchmarks/CUD_SEEDS.md. Edge scores are stored in each study, so a rerun is fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from analysis.circuits.options import CUDOptions
from analysis.circuits.runner import score_study
from analysis.study import Study


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("studies", nargs="+")
    ap.add_argument("--settings", default="ours,reference")
    ap.add_argument("--md", type=Path, default=Path(__file__).resolve().parent / "CUD_SEEDS.md")
    a = ap.parse_args(argv)
    rows = ["| study | setting | labels | n (hard / easy) | CUD rho | CUD AUROC | answer-loss AUROC | exposures AUROC "
            "| best | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    wins = 0
    total = 0
    for path in a.studies:
        study = Study.open(path)
        label = f"seed {study.manifest.seed} ({study.manifest.extra.get('n_people')} people)"
        for setting in a.settings.split(","):
            t0 = time.perf_counter()
            rep = score_study(study, CUDOptions(setting=setting))  # type: ignore[arg-type]
            secs = time.perf_counter() - t0
            comps = rep.label_comparison or {"auc_after": rep.validation}
            for kind, v in comps.items():
                if "error" in v:
                    continue
                b = v["baselines"]
                cud = v.get("cud", v)  # label_comparison entries hold CUD's numbers under "cud"
                aucs = {"CUD": cud["auroc"], **{n: x["auroc"] for n, x in b.items()}}
                best = max((k for k in aucs if aucs[k] is not None), key=lambda k: aucs[k], default="–")
                if kind == rep.validation.get("labels"):
                    total += 1
                    wins += best == "CUD"
                rows.append(f"| {label} | {setting} | {kind} | {v.get('n', rep.validation.get('n'))} "
                            f"({v['n_hard']} / {v['n_easy']}) | {_f(cud['spearman'])} | {_f(cud['auroc'])} | {_f(b.get('original_loss', {}).get('auroc'))}"
                            f" | {_f(b.get('exposures', {}).get('auroc'))} | {best} | {secs:.0f} |")
            print(rows[-1], flush=True)
    text = "\n".join(["# CUD against its baselines on three seeds", "",
                      f"`python -m benchmarks.cud_seeds {' '.join(a.studies)} --settings {a.settings}`. CUD is "
                      "out of fold (5 folds); the baselines need no fitting: answer loss of the original (lower "
                      "= harder) and the fact's training exposures. `auc_after` (the default labels) leaves out the "
                      "original's own probability; `auc` is the old label; `final_loss` the reference's votes.", "",
                      *rows, "", f"CUD is the best predictor in {wins} of {total} (study, setting) pairs with the "
                      "default labels.", ""])
    a.md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
