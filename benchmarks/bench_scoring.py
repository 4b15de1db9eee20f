"""Answer scoring: batched, right-padded `score_answers` vs one forward per sample (naive loop)."""

from __future__ import annotations

import torch

from analysis.data.corpus import build_corpus
from analysis.scoring import encode_pair, score_answers
from benchmarks.common import BenchRow, bench_organism, model_label, timeit


@torch.no_grad()
def naive_scores(handle, prompts, answers) -> list[float]:
    """Reference: one unpadded forward per sample, like a straightforward evaluation script."""
    out = []
    for p, a in zip(prompts, answers, strict=True):
        pi, ai = encode_pair(handle.tokenizer, p, a, handle.prepend_bos)
        logits = handle.model(torch.tensor([pi + ai], device=handle.device), return_type="logits")[0]
        lp = torch.log_softmax(logits.float(), -1)
        out.append(sum(float(lp[len(pi) - 1 + j, t]) for j, t in enumerate(ai)))
    return out


def main() -> list[BenchRow]:
    handle = bench_organism()
    corpus = build_corpus(seed=0)
    samples = [s for s in corpus.samples if s.split in ("forget", "retain")]
    prompts, answers = [s.prompt for s in samples], [s.answer for s in samples]
    t_ref, ref = timeit(lambda: naive_scores(handle, prompts, answers), repeat=1)
    t_ours, ours = timeit(lambda: score_answers(handle, prompts, answers), repeat=3)
    diff = float(max(abs(a - b) for a, b in zip(ours.logprob_sum, ref, strict=True)))
    row = BenchRow("answer scoring", "one forward per sample", t_ref, t_ours, str(handle.device),
                   model_label(handle), diff, note=f"{len(samples)} samples")
    print(row.line())
    return [row]


if __name__ == "__main__":
    main()
