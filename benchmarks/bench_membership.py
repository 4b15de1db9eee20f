"""Membership inference: the batched loss and Min-K%++ scores (analysis.membership.mia.membership_scores: one
right-padded forward per batch, mu / sigma / z for every position at once, a masked sort for the lowest k%)
against the named naive reference, one unpadded forward per row with each scored token's mu, sigma and z computed
one at a time in float64 numpy (analysis.membership.mia.membership_scores_naive). Both must give the same numbers.

    python -m benchmarks.bench_membership                              # the benchmark organism
    python -m benchmarks.bench_membership --study /tmp/small_study --model npo
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from analysis.data.schema import Sample
from analysis.evaluation import perturbed_answers
from analysis.membership.mia import membership_scores, membership_scores_naive
from analysis.membership.options import MembershipOptions
from analysis.models.handle import ModelHandle
from benchmarks.common import BenchRow, bench_organism, model_label, timeit

# float32 (ours) against float64 (reference): |diff| <= REL_TOL x max(1, |reference|). Min-K%++ divides by sigma_t,
# which is tiny where the model is nearly certain, so z reaches hundreds in magnitude (-490 on the small study's
# npo) and its float32 rounding grows with it (5e-4 there, 3e-6 relative).
REL_TOL = 1e-5


def rows_of(forget: Sequence[Sample], pool: Sequence[Sample], n_perturbed: int) -> tuple[list[str], list[str]]:
    """The forget samples and their perturbed held-out items, as the runner scores them."""
    wrong = perturbed_answers(list(forget), list(pool), n_perturbed)
    prompts = [s.prompt for s in forget] + [s.prompt for s, ws in zip(forget, wrong, strict=True) for _ in ws]
    answers = [s.answer for s in forget] + [a for ws in wrong for a in ws]
    return prompts, answers


def compare(handle: ModelHandle, prompts: list[str], answers: list[str], label: str) -> list[BenchRow]:
    opts = MembershipOptions()
    rows = []
    for span in ("answer", "text"):
        t_ref, ref = timeit(lambda s=span: membership_scores_naive(handle, prompts, answers, opts.k, s), repeat=1)
        t_ours, ours = timeit(lambda s=span: membership_scores(handle, prompts, answers, opts.k, s), repeat=3)
        diff = float(max(np.max(np.abs(ours.mink - ref.mink)), np.max(np.abs(ours.loss - ref.loss))))
        rel = float(max(np.max(np.abs(ours.mink - ref.mink) / np.maximum(1.0, np.abs(ref.mink))),
                        np.max(np.abs(ours.loss - ref.loss) / np.maximum(1.0, np.abs(ref.loss)))))
        row = BenchRow(f"membership scores ({span})", "one forward per row, per-token numpy", t_ref, t_ours,
                       str(handle.device), label, diff, note=f"{len(prompts)} rows (forget + perturbed), k {opts.k:g}; max relative diff {rel:.1e}")
        print(row.line())
        if rel > REL_TOL:
            raise AssertionError(f"membership scores differ from the naive reference: max relative diff {rel:.2e}")
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> list[BenchRow]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--study", default=None, help="a study directory: score --model of it")
    ap.add_argument("--model", default="npo", help="the scored model of --study (default npo)")
    args = ap.parse_args(argv)
    if args.study:
        from analysis.study import Study

        study = Study.open(args.study)
        handle = study.load(args.model)
        forget, pool = study.forget, study.forget + study.retain
        label = f"{model_label(handle)} ({args.model})"
    else:
        from analysis.data.corpus import build_corpus

        handle = bench_organism()
        corpus = build_corpus(seed=0)
        forget, pool = corpus.split("forget"), corpus.split("forget") + corpus.split("retain")
        label = model_label(handle)
    prompts, answers = rows_of(forget, pool, MembershipOptions().n_perturbed)
    return compare(handle, prompts, answers, label)


if __name__ == "__main__":
    main()
