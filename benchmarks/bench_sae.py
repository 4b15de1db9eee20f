"""SAE restoration: the alpha sweep in one batched forward (all alphas x all forget samples) vs a loop of
one forward per (alpha, sample). Also reports SAE training throughput: tokens/s of SAELens's training runner,
counting the model forwards that produce the activations (the runner re-runs the model every epoch)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from analysis.sae import ALPHAS, SAEOptions, find_expert_features, train_sae
from analysis.sae.restoration import expert_mask, original_features, steered_correct, steered_correct_loop
from analysis.scoring import make_batch
from analysis.study import Study
from benchmarks.common import CACHE, BenchRow, model_label, timeit


def bench_study(tmp: Path) -> Study:
    """A private copy of the demo study (so the benchmark's SAE never lands in the user's study)."""
    src = Path(os.environ.get("ERASURE_BENCH_STUDY", "studies/demo"))
    if not (src / "study.json").is_file():
        from analysis.demo import build_demo

        src = CACHE / "sae_study"
        if not (src / "study.json").is_file():
            build_demo(src, seed=0, n_people=40, organism_steps=300)
    shutil.copytree(src, tmp / "study", ignore=shutil.ignore_patterns("results.sqlite*", "sae"))
    return Study.open(tmp / "study")


def main() -> list[BenchRow]:
    with tempfile.TemporaryDirectory() as tmp:
        study = bench_study(Path(tmp))
        trained = train_sae(study, SAEOptions(steps=500))
        h = trained.health
        print(f"SAE training (SAELens runner): {h.tokens_per_s:,.0f} tokens/s ({h.n_tokens} distinct tokens, {h.train_seconds:.1f}s; "
              f"FVU {h.fvu:.3f}, L0 {h.l0:.1f}, dead {h.n_dead}/{h.d_sae})")
        original = study.load("original")
        name = next((n for n in ("npo", *study.unlearned_names) if n in study.model_names), "original")
        handle = study.load(name)
        forget = study.forget
        batch = make_batch(handle, [s.prompt for s in forget], [s.answer for s in forget])
        f_o = original_features(original, trained, batch)
        mask = expert_mask(find_expert_features(original, trained, forget, study.retain), forget,
                           int(trained.sae.cfg.d_sae))
        alphas = [0.0, *ALPHAS]
        with torch.no_grad():
            t_ref, ref = timeit(lambda: steered_correct_loop(handle, trained, batch, f_o, mask, alphas), repeat=1)
            t_ours, ours = timeit(lambda: steered_correct(handle, trained, batch, f_o, mask, alphas), repeat=3)
        diff = float((ours.float() - ref.float()).abs().max())
        row = BenchRow("SAE restoration alpha sweep", "one forward per (alpha, sample)", t_ref, t_ours,
                       str(handle.device), model_label(handle), diff,
                       note=f"{len(alphas)} alphas x {len(forget)} forget samples on {name}; "
                            f"SAE training {h.tokens_per_s:,.0f} tokens/s")
        print(row.line())
        return [row]


if __name__ == "__main__":
    main()
