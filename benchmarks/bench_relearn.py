"""The relearning attack: full-batch fine-tuning (analysis.relearn.attack.relearn_attack: one forward and backward
over the whole training half per step, one forward over the held-out half to measure it) against the named naive
reference, per-sample gradient accumulation (each step: one forward and backward per training sample, its loss
divided by their number, then the same clipped Adam step; each measurement: one forward per held-out sample), the
way a training loop without padding is written. Both must give the same numbers.

    python -m benchmarks.bench_relearn                              # the benchmark organism, 30 steps
    python -m benchmarks.bench_relearn --study /tmp/small_study --model npo
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence

import numpy as np
import torch

from analysis.data.schema import Sample
from analysis.models.handle import ModelHandle
from analysis.relearn.attack import AttackRun, forget_folds, relearn_attack
from analysis.relearn.options import RelearnOptions
from analysis.scoring import encode_pair
from benchmarks.common import BenchRow, bench_organism, model_label, timeit

# |ours - reference| on the held-out mean answer log-probs. Before the attack the two differ by float32 rounding
# (padded batch vs one row: ~6e-6); Adam's normalised update turns ~1e-7 differences of near-zero gradient entries
# into lr-sized steps, so the gap grows with the steps (small study, npo: 1e-5 after 10 steps, 1e-3 after 30)
# while every top-1 answer stays the same.
TOL = 5e-3


def _row(handle: ModelHandle, model: torch.nn.Module, s: Sample) -> tuple[torch.Tensor, int]:
    p, a = encode_pair(handle.tokenizer, s.prompt, s.answer, handle.prepend_bos)
    return torch.log_softmax(model(torch.tensor([p + a], device=handle.device), return_type="logits")[0].float(), -1), \
        len(p)


def _answer(handle: ModelHandle, model: torch.nn.Module, s: Sample) -> tuple[float, bool]:
    """Mean answer log-prob and top-1 correctness of one sample, one unpadded forward."""
    p, a = encode_pair(handle.tokenizer, s.prompt, s.answer, handle.prepend_bos)
    logp, n_p = _row(handle, model, s)
    lps = [logp[n_p - 1 + j, t] for j, t in enumerate(a)]
    hit = all(int(logp[n_p - 1 + j].argmax()) == t for j, t in enumerate(a))
    return float(sum(lps) / len(lps)), hit


def naive_attack(handle: ModelHandle, train: Sequence[Sample], evaluate: Sequence[Sample], steps: int, lr: float,
                 max_grad_norm: float = 1.0) -> AttackRun:
    """Reference: per-sample gradient accumulation on a deep copy, then the same clipped Adam step."""
    model = copy.deepcopy(handle.model)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=0.0)

    def measure() -> tuple[list[bool], list[float]]:
        with torch.no_grad():
            out = [_answer(handle, model, s) for s in evaluate]
        return [h for _, h in out], [lp for lp, _ in out]

    c, lp = measure()
    correct, logprob, losses = [c], [lp], []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for s in train:
            p, a = encode_pair(handle.tokenizer, s.prompt, s.answer, handle.prepend_bos)
            logp, n_p = _row(handle, model, s)
            nll = -torch.stack([logp[n_p - 1 + j, t] for j, t in enumerate(a)]).mean() / len(train)
            nll.backward()
            total += float(nll.detach())
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        losses.append(total)
        c, lp = measure()
        correct.append(c)
        logprob.append(lp)
    return AttackRun(correct=np.array(correct, dtype=bool), logprob=np.array(logprob), losses=losses)


def compare(handle: ModelHandle, forget: Sequence[Sample], steps: int, lr: float, label: str) -> BenchRow:
    (train_ids, eval_ids), _ = forget_folds([s.id for s in forget], seed=0)
    by_id = {s.id: s for s in forget}
    train, held = [by_id[i] for i in train_ids], [by_id[i] for i in eval_ids]
    t_ref, ref = timeit(lambda: naive_attack(handle, train, held, steps, lr), repeat=1, warmup=False)
    t_ours, ours = timeit(lambda: relearn_attack(handle, train, held, steps, lr), repeat=1)
    diff = float(np.max(np.abs(ours.logprob - ref.logprob)))
    same = bool(np.array_equal(ours.correct, ref.correct))
    row = BenchRow("relearning attack", "per-sample gradient accumulation", t_ref, t_ours, str(handle.device), label,
                   diff, note=f"{steps} steps, {len(train)} train / {len(held)} held-out; top-1 identical: {same}")
    print(row.line())
    if diff > TOL or not same:
        raise AssertionError(f"relearning attack differs from the naive reference: max |diff| {diff:.2e}, "
                             f"correctness identical: {same}")
    return row


def main(argv: Sequence[str] | None = None) -> list[BenchRow]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--study", default=None, help="a study directory: attack --model of it")
    ap.add_argument("--model", default="npo", help="the attacked model of --study (default npo)")
    ap.add_argument("--samples", type=int, default=16, help="forget samples (both halves together; default 16)")
    ap.add_argument("--steps", type=int, default=RelearnOptions().steps)
    ap.add_argument("--lr", type=float, default=RelearnOptions().lr)
    args = ap.parse_args(argv)
    if args.study:
        from analysis.study import Study

        study = Study.open(args.study)
        handle = study.load(args.model)
        forget = study.samples("forget")[: args.samples]
        label = f"{model_label(handle)} ({args.model})"
    else:
        from analysis.data.corpus import build_corpus

        handle = bench_organism()
        forget = build_corpus(seed=0).split("forget")[: args.samples]
        label = model_label(handle)
    return [compare(handle, forget, args.steps, args.lr, label)]


if __name__ == "__main__":
    main()
