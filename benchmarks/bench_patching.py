"""Cross-model activation patching and the logit lens: the batched engines (analysis.patching: one forward of the
original per start layer over all samples; analysis.logit_lens: one run_with_cache per batch) against the
named naive references written the way a TransformerLens tutorial would (patching: for every sample and layer,
a full forward of the original with a hook replacing hook_resid_post; lens: for every sample, a run_with_cache,
then the readout at every layer and answer position one by one). Both must give the same numbers.

    python -m benchmarks.bench_patching                       # organism on CPU (+ GPT-2-small-sized on CUDA)
    python -m benchmarks.bench_patching --study /tmp/small_study --source npo
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from analysis import hooks
from analysis.logit_lens.engine import lens_values
from analysis.models.handle import ModelHandle
from analysis.patching.engine import patch_logprobs
from analysis.scoring import PairBatch, answer_logprob, batch_from_ids, encode_pair, pad_id
from benchmarks.common import BenchRow, bench_organism, model_label, timeit

REL_TOL = 1e-5  # |ours - reference| <= REL_TOL x max(1, |value|): float32 log-probs of magnitude up to ~20
Pair = tuple[list[int], list[int]]


@torch.no_grad()
def naive_patch(original: ModelHandle, source: ModelHandle, pairs: Sequence[Pair],
                positions: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """Reference: per sample, the source's cache and the original's clean log-prob; then per layer a full forward
    of the original from the tokens with a hook replacing hook_resid_post(l) by the source's (at every position,
    or at the positions predicting the answer). Returns (base [N], patched [N, L])."""
    L = original.n_layers
    base, patched = np.zeros(len(pairs)), np.zeros((len(pairs), L))
    for i, (p, a) in enumerate(pairs):
        batch = batch_from_ids([(p, a)], pad_id=0, n_ctx=original.model.cfg.n_ctx, device=original.device)
        _, src = source.model.run_with_cache(batch.tokens.to(source.device))
        base[i] = float(answer_logprob(original.model(batch.tokens), batch)[0])
        span = slice(len(p) - 1, len(p) + len(a) - 1)
        for layer in range(L):
            name = hooks.resid_post(layer)

            def patch(act: torch.Tensor, hook: Any, new: torch.Tensor = src[name], span: slice = span) -> torch.Tensor:
                if positions == "all":
                    return new.to(act.device)
                act[:, span] = new[:, span].to(act.device)
                return act

            logits = original.model.run_with_hooks(batch.tokens, fwd_hooks=[(name, patch)])
            patched[i, layer] = float(answer_logprob(logits, batch)[0])
    return base, patched


@torch.no_grad()
def naive_lens(model: ModelHandle, readout: ModelHandle, pairs: Sequence[Pair]) -> dict[str, np.ndarray]:
    """Reference: per sample one run_with_cache; per layer and answer position the readout's ln_final + unembed on
    that one residual vector, softmax, the answer token's probability and rank (1 + tokens more likely)."""
    L = model.n_layers
    out = {k: np.zeros((len(pairs), L)) for k in ("first_prob", "first_rank", "mean_prob", "mean_rank")}
    ro = readout.model
    for i, (p, a) in enumerate(pairs):
        tokens = torch.tensor([p + a], device=model.device)
        _, cache = model.model.run_with_cache(tokens)
        for layer in range(L):
            probs, ranks = [], []
            for j, tok in enumerate(a):
                x = cache[hooks.resid_post(layer)][0, len(p) - 1 + j]
                logits = ro.unembed(ro.ln_final(x[None, None]))[0, 0].float()
                pr = torch.softmax(logits, -1)
                probs.append(float(pr[tok]))
                ranks.append(1 + int((pr > pr[tok]).sum()))
            out["first_prob"][i, layer], out["first_rank"][i, layer] = probs[0], ranks[0]
            out["mean_prob"][i, layer], out["mean_rank"][i, layer] = float(np.mean(probs)), float(np.mean(ranks))
    return out


def perturbed_above(handle: ModelHandle, first_layer: int, scale: float = 0.5, seed: int = 0) -> ModelHandle:
    """A copy of ``handle`` whose blocks >= ``first_layer`` get Gaussian noise (scale x each weight's std); every
    weight below stays bit-identical (a depth-limited member, built in memory)."""
    model = copy.deepcopy(handle.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in range(first_layer, handle.n_layers):
            for p in model.blocks[layer].parameters():
                if p.dim() > 1:
                    noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
                    p.add_(noise * scale * p.float().std().to(p.dtype))
    return ModelHandle(model=model, tokenizer=handle.tokenizer, name=f"{handle.name}-perturbed-{first_layer}",
                       role="unlearned", path=None, fingerprint="perturbed", fmt=handle.fmt)


def pairs_of(handle: ModelHandle, prompts: Sequence[str], answers: Sequence[str]) -> list[Pair]:
    return [encode_pair(handle.tokenizer, p, a, handle.prepend_bos) for p, a in zip(prompts, answers, strict=True)]


def batch_of(handle: ModelHandle, pairs: Sequence[Pair]) -> PairBatch:
    pad = pad_id(handle.tokenizer) if handle.tokenizer is not None else 0
    return batch_from_ids(pairs, pad_id=pad, n_ctx=handle.model.cfg.n_ctx, device=handle.device)


def compare(original: ModelHandle, source: ModelHandle, pairs: Sequence[Pair], label: str,
            repeat: int = 3) -> list[BenchRow]:
    """Time both patching and both lens implementations on the same pairs; check they agree."""
    batch = batch_of(original, pairs)
    t_ref, (base, patched) = timeit(lambda: naive_patch(original, source, pairs), repeat=1, warmup=False)
    t_ours, curves = timeit(lambda: patch_logprobs(original, source, batch), repeat=repeat)
    diff = max(float(np.abs(curves.base - base).max()), float(np.abs(curves.patched - patched).max()))
    scale = max(1.0, float(np.abs(base).max()), float(np.abs(patched).max()))
    rows = [BenchRow("activation patching", "hooked full forward per (sample, layer)", t_ref, t_ours,
                     str(original.device), label, diff,
                     note=f"{len(pairs)} samples x {original.n_layers} layers, all positions")]
    t_ref, ref = timeit(lambda: naive_lens(source, original, pairs), repeat=1, warmup=False)
    t_ours, ours = timeit(lambda: lens_values(source, original, batch), repeat=repeat)
    diff = max(float(np.abs(getattr(ours, k) - ref[k]).max()) for k in ("first_prob", "mean_prob"))
    rank_diff = max(float(np.abs(getattr(ours, k) - ref[k]).max()) for k in ("first_rank", "mean_rank"))
    assert rank_diff == 0, f"logit lens: ranks differ from the reference by {rank_diff}"
    rows.append(BenchRow("logit lens", "run_with_cache per sample, readout per (layer, position)", t_ref, t_ours,
                         str(original.device), label, diff,
                         note=f"{len(pairs)} samples x {original.n_layers} layers, original's readout"))
    for r, tol in zip(rows, (REL_TOL * scale, REL_TOL), strict=True):
        print(r.line(), flush=True)
        assert r.max_abs_diff <= tol, f"{r.analysis}: ours and the reference differ by {r.max_abs_diff}"
    return rows


def gpt2_sized_pair(device: str, n_layers: int = 12, n: int = 16, seq: int = 24) -> tuple[ModelHandle, ModelHandle,
                                                                                        list[Pair]]:
    """Two random-init GPT-2-small-shaped models (the second: the first with its upper half perturbed) and ``n``
    random (prompt, 3-token answer) id pairs."""
    from benchmarks.bench_tracing import gpt2_small_random

    original, _, _ = gpt2_small_random(device, n_layers=n_layers, seq=seq, n_traces=1)
    source = perturbed_above(original, n_layers // 2)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50000, (n, seq), generator=gen).tolist()
    return original, source, [(row[: seq - 3], row[seq - 3:]) for row in ids]


def main(argv: Sequence[str] | None = None) -> list[BenchRow]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--study", default=None, help="a study directory: its original and --source")
    ap.add_argument("--source", default="npo", help="the patched-in model of --study (default npo)")
    ap.add_argument("--samples", type=int, default=32, help="forget samples (organism)")
    ap.add_argument("--gpt2-device", default=None, help="GPT-2-sized part here (default: cuda if present)")
    ap.add_argument("--gpt2-layers", type=int, default=12)
    args = ap.parse_args(argv)
    if args.study:
        from analysis.study import Study

        study = Study.open(args.study)
        original, source = study.load("original"), study.load(args.source)
        forget = study.samples("forget")[: args.samples]
        label = f"{model_label(original)} (source {args.source})"
    else:
        from analysis.data.corpus import build_corpus

        original = bench_organism()
        source = perturbed_above(original, original.n_layers // 2)
        forget = build_corpus(seed=0).split("forget")[: args.samples]
        label = f"{model_label(original)} (source: upper half perturbed)"
    rows = compare(original, source, pairs_of(original, [s.prompt for s in forget], [s.answer for s in forget]),
                   label)
    device = args.gpt2_device or ("cuda" if torch.cuda.is_available() else None)
    if device:
        g_orig, g_src, g_pairs = gpt2_sized_pair(device, n_layers=args.gpt2_layers)
        rows += compare(g_orig, g_src, g_pairs, f"GPT-2-small-sized (random), {args.gpt2_layers} layers", repeat=3)
    return rows


if __name__ == "__main__":
    main()
