"""Causal tracing speed: analysis.tracing (batched, prefix reuse) against a naive reference written like ROME's
script (one full forward from the input per (layer, token) cell, batch = clean row + noise samples, hooks
doing the corruption and the restoration). Both must give the same scores.

    python -m benchmarks.bench_tracing            # organism on CPU (+ GPT-2-small-sized model on CUDA if present)
    python -m benchmarks.bench_tracing --organism studies/demo/models/original --samples 4
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis import hooks
from analysis.models.handle import ModelHandle
from analysis.subjects import subject_input
from analysis.tracing import (
    Corrupted,
    Metric,
    SubjectInput,
    SubjectPool,
    TraceOptions,
    get_corruption,
    run_trace,
)
from analysis.tracing.options import window_layers
from benchmarks.common import CACHE, BenchRow

MAX_ABS_DIFF = 1e-4
MAX_REL_DIFF = 1e-3


@torch.no_grad()
def rome_naive(handle: ModelHandle, inp: SubjectInput, corrupted: Corrupted, metric: str, kinds: Sequence[str],
               window: int, cells: Collection[tuple[str, int, int]] | None = None
               ) -> tuple[float, float, dict[str, np.ndarray]]:
    """ROME's calculate_hidden_flow / trace_with_patch: row 0 is the clean run, rows 1.. the corrupted runs;
    for every cell a full forward from the input in which the restored states are copied from row 0.
    ``cells``: only these (kind, layer, token) cells are run (the others are NaN), to time the loop on a sample
    of its cells (benchmarks.bench_real)."""
    model = handle.model
    L, P, n = handle.n_layers, inp.prompt_len, corrupted.n
    tokens = torch.cat([inp.tensor(handle.device)[None], corrupted.tokens], 0)
    delta = corrupted.embed_delta

    def corrupt(act: torch.Tensor, hook: Any) -> torch.Tensor:
        if delta is not None:
            act[1:] = act[1:] + delta
        return act

    def run(patch: dict[str, int]) -> torch.Tensor:
        def restore(act: torch.Tensor, hook: Any) -> torch.Tensor:
            t = patch[hook.name]
            act[1:, t] = act[0, t]
            return act

        fwd_hooks: list[tuple[str, Callable[..., torch.Tensor]]] = [(hooks.EMBED, corrupt)]
        fwd_hooks += [(name, restore) for name in patch]
        return model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)

    base = run({})
    other = Metric.top_other(base[1:], inp) if metric == "logit_diff_corrupted" else None
    fn = Metric(metric, inp, handle.device, other)
    clean = float(fn.full(base[:1])[0])
    low = float(fn.full(base[1:]).double().mean())
    scores: dict[str, np.ndarray] = {}
    for kind in kinds:
        out = np.zeros((L, P)) if cells is None else np.full((L, P), np.nan)
        for layer in range(L):
            layers = [layer] if kind == "resid" else list(window_layers(layer, window, L))
            for t in range(P):
                if cells is not None and (kind, layer, t) not in cells:
                    continue
                logits = run({hooks.kind_hook(kind, j): t for j in layers})
                out[layer, t] = float(fn.full(logits[1:]).double().mean())
        scores[kind] = out
    assert n == len(tokens) - 1
    return clean, low, scores


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(handle: ModelHandle, inputs: Sequence[SubjectInput], pool: SubjectPool, opts: TraceOptions,
            label: str, repeats: int = 1) -> dict[str, Any]:
    """Time both implementations on the same corrupted inputs; check they agree."""
    opts = opts.validated(handle.n_layers)
    corruption = get_corruption(opts.corruption)
    prepared = [(inp, corruption.corrupt(handle, inp, pool, opts)) for inp in inputs]
    window = int(opts.window or 1)
    # Warm-up (allocator, kernels) on the first input, both ways.
    run_trace(handle, prepared[0][0], prepared[0][1], opts.kinds, opts.metric, window, opts.budget_bytes)
    fast_s, naive_s, diff, forwards = [], [], 0.0, 0
    for _ in range(repeats):
        _sync(handle.device)
        t0 = time.perf_counter()
        fast = [run_trace(handle, i, c, opts.kinds, opts.metric, window, opts.budget_bytes) for i, c in prepared]
        _sync(handle.device)
        fast_s.append(time.perf_counter() - t0)
        forwards = sum(f.n_forwards for f in fast)
    _sync(handle.device)
    t0 = time.perf_counter()
    naive = [rome_naive(handle, i, c, opts.metric, opts.kinds, window) for i, c in prepared]
    _sync(handle.device)
    naive_s.append(time.perf_counter() - t0)
    scale = 0.0
    for f, (clean, low, scores) in zip(fast, naive, strict=True):
        diff = max(diff, abs(f.clean - clean), abs(f.corrupted - low))
        scale = max(scale, abs(clean), abs(low))
        for kind in opts.kinds:
            diff = max(diff, float(np.abs(f.scores[kind] - scores[kind]).max()))
            scale = max(scale, float(np.abs(scores[kind]).max()))
    rel = diff / max(scale, 1e-30)
    cells = sum(len(opts.kinds) * handle.n_layers * i.prompt_len for i in inputs)
    res = {"label": label, "device": str(handle.device), "n_traces": len(inputs), "cells": cells,
           "n_noise": prepared[0][1].n, "kinds": list(opts.kinds), "window": window,
           "fast_s": min(fast_s), "naive_s": naive_s[0], "ratio": naive_s[0] / min(fast_s),
           "fast_forwards": forwards, "naive_forwards": len(inputs) + cells,
           "max_abs_diff": diff, "max_rel_diff": rel, "threads": torch.get_num_threads()}
    print(f"{label} [{res['device']}]: naive (ROME-style) {res['naive_s']:.3f}s, batched {res['fast_s']:.3f}s, "
          f"ratio {res['ratio']:.1f}x ({res['naive_forwards']} vs {forwards} forwards, {len(inputs)} traces, "
          f"{res['n_noise']} noise samples, {res['threads']} threads), max |diff| {diff:.2e} (relative {rel:.1e})",
          flush=True)
    assert diff < MAX_ABS_DIFF and rel < MAX_REL_DIFF, f"{label}: scores differ by {diff} (relative {rel})"
    res["row"] = BenchRow("causal tracing", "ROME-style loop (one forward per cell)", res["naive_s"], res["fast_s"],
                          res["device"], f"{label}, {sum(p.numel() for p in handle.model.parameters()) / 1e6:.2f}M "
                          "params", diff, note=f"{len(inputs)} traces x {res['n_noise']} noise, "
                          f"{'/'.join(opts.kinds)}, window {window}")
    return res


def organism_handle(path: str | None) -> tuple[ModelHandle, list[Any], list[Any]]:
    """The organism: ``path``, else studies/demo's, else benchmarks/out's, else a quick one trained (and cached)
    here. Returns the handle, the samples (for the subject pool) and the forget samples."""
    from analysis.data.corpus import build_corpus
    from analysis.data.schema import read_jsonl
    from analysis.models import load_model

    quick = CACHE / "organism-quick"
    for cand in [path, "studies/demo/models/original", str(CACHE / "organism"), str(quick)]:
        if cand and (Path(cand) / "organism.json").is_file():
            handle = load_model(cand, device="cpu")
            study_samples = Path(cand).resolve().parent.parent / "samples"
            if (study_samples / "forget.jsonl").is_file():
                samples = [s for f in sorted(study_samples.glob("*.jsonl")) for s in read_jsonl(f, split=f.stem)]
            else:
                n_people = 40 if Path(cand) == quick else 200
                samples = build_corpus(seed=0, n_people=n_people).samples
            return handle, samples, [s for s in samples if s.split == "forget"]
    from analysis.organism import OrganismConfig, train_organism

    corpus = build_corpus(seed=0, n_people=40)
    print(f"no organism found: training a quick one (40 people) into {quick}", flush=True)
    handle, _ = train_organism(OrganismConfig(n_people=40, steps=300, device="cpu"), out=quick, corpus=corpus)
    return handle, corpus.samples, corpus.split("forget")


GPT2_SMALL: dict[str, Any] = {"d_model": 768, "n_heads": 12, "d_mlp": 3072, "n_ctx": 1024, "d_vocab": 50257,
                              "act_fn": "gelu_new", "normalization_type": "LN"}


def gpt2_small_random(device: str, n_layers: int = 12, seq: int = 16, n_traces: int = 2,
                      name: str = "gpt2-small-random", **arch: Any) -> tuple[ModelHandle, list[SubjectInput],
                                                                             SubjectPool]:
    """A random-init HookedTransformer (GPT-2 small's shape; ``arch`` overrides HookedTransformerConfig fields,
    e.g. ``d_model`` or a Llama's rotary / RMS norm / gated MLP / ``dtype``), ``n_traces`` random prompts of
    ``seq`` tokens (prompt + one answer token) and a subject pool of random 3-token subjects."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    spec = {**GPT2_SMALL, "n_layers": n_layers, **arch}
    spec.setdefault("d_head", spec["d_model"] // spec["n_heads"])
    cfg = HookedTransformerConfig(**spec, device=device, seed=0)
    model = HookedTransformer(cfg).eval()
    handle = ModelHandle(model=model, tokenizer=None, name=name, role="original", path=None,
                         fingerprint="random", fmt="organism")
    vocab = int(cfg.d_vocab)
    bos, high = vocab - 1, min(50000, vocab - 1)  # GPT-2's <|endoftext|> is its last id
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for i in range(n_traces):
        ids = [bos, *torch.randint(0, high, (seq - 1,), generator=gen).tolist()]
        inputs.append(SubjectInput(ids=tuple(ids), prompt_len=seq - 1, answer_ids=(ids[-1],),
                                 subject_range=(2, min(5, seq - 2)),
                                 sample_id=f"r{i}"))
    pool = SubjectPool.from_ids([torch.randint(0, high, (3,), generator=gen).tolist() for _ in range(50)])
    return handle, inputs, pool


def main(argv: Sequence[str] | None = None) -> list[BenchRow]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--organism", default=os.environ.get("ERASURE_ORGANISM"), help="organism model directory")
    ap.add_argument("--samples", type=int, default=4, help="forget samples traced on the organism")
    ap.add_argument("--noise", type=int, default=10)
    ap.add_argument("--gpt2-device", default=None, help="run the GPT-2-sized part here (default: cuda if present)")
    ap.add_argument("--gpt2-layers", type=int, default=12)
    ap.add_argument("--gpt2-seq", type=int, default=16, help="tokens per GPT-2-sized trace (prompt + answer)")
    ap.add_argument("--gpt2-traces", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}

    handle, samples, forget = organism_handle(args.organism)
    pool = SubjectPool.from_samples(handle.tokenizer, samples)
    inputs = [subject_input(handle, s) for s in forget[: args.samples]]
    opts = TraceOptions(n_samples=args.noise)
    results["organism_cpu"] = compare(handle, inputs, pool, opts, "organism")

    device = args.gpt2_device or ("cuda" if torch.cuda.is_available() else None)
    if device:
        g_handle, g_inputs, g_pool = gpt2_small_random(device, n_layers=args.gpt2_layers, seq=args.gpt2_seq,
                                                       n_traces=args.gpt2_traces)
        g_opts = TraceOptions(n_samples=args.noise, window=min(10, args.gpt2_layers))
        results["gpt2_small_random"] = compare(g_handle, g_inputs, g_pool, g_opts, "GPT-2-small-sized (random)")
    for r in results.values():
        if r["ratio"] < 10:
            print(f"note: {r['label']} ratio {r['ratio']:.1f}x is below the 10x target", flush=True)
    return [r["row"] for r in results.values()]


if __name__ == "__main__":
    main()
