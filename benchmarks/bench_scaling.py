"""Scaling curves for `make bench`, each against the same naive reference as the single-point benchmarks:

- causal tracing time vs layers x tokens: batched ``run_trace`` on random-init HookedTransformers of a small
  width, against the ROME-style loop of bench_tracing (on the grid points small enough to run it);
- EAP-IG per-sample edge scores (the CUD scorer) vs number of samples: batches sized like
  ``sample_edge_scores``, against the batch-of-one loop of bench_circuits;
- with a GPU (or ``--large``): a GPT-2-small-sized model and a ~1B-parameter Llama-architecture model (rotary,
  RMS norm, gated MLP, grouped-query attention; bf16 on CUDA), both random-init: tracing one 32-token prompt
  and scoring a batch of answers, against the same references.

    python -m benchmarks.bench_scaling                        # curves (large models only with a GPU)
    python -m benchmarks.bench_scaling --device cuda           # everything on the GPU
    python -m benchmarks.bench_scaling --large --large-scale 0.05 --layers 2 --tokens 8 --samples 16
                                                               # smoke-test the large path at 5% width on a CPU
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from analysis.circuits.options import EAPOptions
from analysis.circuits.runner import eap_batch_size
from analysis.data.corpus import build_corpus
from analysis.models.device import pick_device, pick_dtype
from analysis.models.handle import ModelHandle
from analysis.organism import build_tokenizer
from analysis.scoring import encode_pair, score_answers
from analysis.tracing import SubjectInput, SubjectPool, TraceOptions, get_corruption, run_trace
from analysis.tracing.options import ROME_WINDOW
from benchmarks.bench_circuits import batched, one_by_one
from benchmarks.bench_scoring import naive_scores
from benchmarks.bench_tracing import MAX_ABS_DIFF, MAX_REL_DIFF, gpt2_small_random, rome_naive
from benchmarks.common import BenchRow, bench_organism, model_label, timeit

# The tracing curve's models: narrow, so that the CPU grid stays quick; the depth and prompt length vary.
CURVE_ARCH: dict[str, Any] = {"d_model": 128, "n_heads": 4, "d_mlp": 512, "d_vocab": 1000, "n_ctx": 256}
LAYERS = (2, 4, 8)
TOKENS = (8, 16, 32)
NAIVE_MAX_CELLS = 192  # the ROME-style loop runs where kinds x layers x tokens <= this (3 x 4 x 16)
SAMPLES = (16, 32, 64, 128)
NOISE = 10
BF16_MAX_REL_DIFF = 0.05  # bf16 batched vs per-cell runs: reported; above this a warning is printed
EAP_REL_TOL = 1e-4  # EAP-IG batched vs batch-of-one, relative to the largest |score|


def n_params(handle: ModelHandle) -> int:
    return sum(p.numel() for p in handle.model.parameters())


def device_label(device: torch.device | str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ---- tracing --------------------------------------------------------------------------------------------
@dataclass
class TracePoint:
    layers: int
    tokens: int  # prompt tokens traced
    cells: int  # kinds x layers x tokens
    ours_s: float
    naive_s: float | None  # None: the ROME-style loop was not run at this size
    max_abs_diff: float | None
    max_rel_diff: float | None
    params: int

    @property
    def ratio(self) -> float | None:
        return None if self.naive_s is None else self.naive_s / max(self.ours_s, 1e-12)


def trace_point(handle: ModelHandle, inp: SubjectInput, pool: SubjectPool, opts: TraceOptions, naive: bool,
                strict: bool = True) -> TracePoint:
    """Time ``run_trace`` (one run after a warm-up) and, with ``naive``, ROME's loop once on the same
    corrupted input. ``strict``: assert the scores agree (float32); otherwise only report the difference."""
    opts = opts.validated(handle.n_layers)
    corrupted = get_corruption(opts.corruption).corrupt(handle, inp, pool, opts)
    window = int(opts.window or 1)
    ours_s, ours = timeit(lambda: run_trace(handle, inp, corrupted, opts.kinds, opts.metric, window,
                                            opts.budget_bytes), repeat=1)
    cells = len(opts.kinds) * handle.n_layers * inp.prompt_len
    point = TracePoint(handle.n_layers, inp.prompt_len, cells, ours_s, None, None, None, n_params(handle))
    if not naive:
        return point
    naive_s, (clean, low, scores) = timeit(lambda: rome_naive(handle, inp, corrupted, opts.metric, opts.kinds, window),
                                           repeat=1, warmup=False)
    diff = max(abs(ours.clean - clean), abs(ours.corrupted - low),
               *(float(np.abs(ours.scores[k] - scores[k]).max()) for k in opts.kinds))
    scale = max(abs(clean), abs(low), *(float(np.abs(scores[k]).max()) for k in opts.kinds))
    rel = diff / max(scale, 1e-30)
    if strict:
        assert diff < MAX_ABS_DIFF and rel < MAX_REL_DIFF, \
            f"{handle.name}: traced scores differ from the ROME-style loop by {diff:.2e} (relative {rel:.1e})"
    elif rel > BF16_MAX_REL_DIFF:
        print(f"warning: {handle.name}: traced scores differ from the ROME-style loop by {rel:.1e} (relative)",
              flush=True)
    return replace(point, naive_s=naive_s, max_abs_diff=diff, max_rel_diff=rel)


def tracing_curve(device: torch.device | str, layers: Sequence[int] = LAYERS, tokens: Sequence[int] = TOKENS,
                  naive_max_cells: int = NAIVE_MAX_CELLS, noise: int = NOISE,
                  arch: dict[str, Any] | None = None) -> list[TracePoint]:
    """One trace (resid / mlp / attn, ``noise`` noise samples, window min(10, layers)) per (layers, tokens) of a
    random-init model of width ``arch`` (default :data:`CURVE_ARCH`)."""
    points = []
    for n_layers in layers:
        for n_tok in tokens:
            handle, inputs, pool = gpt2_small_random(str(device), n_layers=n_layers, seq=n_tok + 1, n_traces=1,
                                                     name=f"random-{n_layers}L", **(arch or CURVE_ARCH))
            opts = TraceOptions(n_samples=noise, window=min(ROME_WINDOW, n_layers))
            naive = len(opts.kinds) * n_layers * n_tok <= naive_max_cells
            p = trace_point(handle, inputs[0], pool, opts, naive)
            ref = f"ROME-style {p.naive_s:.3f}s, {p.ratio:.1f}x, max |diff| {p.max_abs_diff:.1e}" if naive else \
                "ROME-style skipped at this size"
            print(f"tracing {n_layers} layers x {n_tok} tokens: ours {p.ours_s:.3f}s; {ref}", flush=True)
            points.append(p)
    return points


# ---- EAP-IG -----------------------------------------------------------------------------------------------
@dataclass
class EAPPoint:
    n: int
    batch_size: int
    ours_s: float
    ref_s: float
    max_abs_diff: float
    max_abs_score: float

    @property
    def ratio(self) -> float:
        return self.ref_s / max(self.ours_s, 1e-12)


def eap_point(handle: ModelHandle, prompts: list[str], answers: list[str], opts: EAPOptions) -> EAPPoint:
    """EAP-IG per-sample scores of these pairs in batches of ``eap_batch_size`` (as ``sample_edge_scores`` picks
    them) against one sample per forward/backward; asserts they agree."""
    longest = max(sum(map(len, encode_pair(handle.tokenizer, p, a, handle.prepend_bos)))
                  for p, a in zip(prompts, answers, strict=True))
    bs = min(eap_batch_size(handle, longest), len(prompts))
    ours_s, ours = timeit(lambda: batched(handle, prompts, answers, opts, bs=bs), repeat=1)
    ref_s, ref = timeit(lambda: one_by_one(handle, prompts, answers, opts), repeat=1, warmup=False)
    diff, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
    assert diff <= EAP_REL_TOL * max(scale, 1e-12), f"EAP-IG scores differ by {diff:.2e} (max |score| {scale:.2e})"
    return EAPPoint(len(prompts), bs, ours_s, ref_s, diff, scale)


def eap_curve(handle: ModelHandle, prompts: Sequence[str], answers: Sequence[str], ns: Sequence[int] = SAMPLES,
              opts: EAPOptions | None = None) -> list[EAPPoint]:
    """:func:`eap_point` on the first n pairs, for each n in ``ns``."""
    opts = opts or EAPOptions()
    if max(ns) > len(prompts):
        raise ValueError(f"the curve needs {max(ns)} samples, {len(prompts)} given")
    points = []
    for n in ns:
        p = eap_point(handle, list(prompts[:n]), list(answers[:n]), opts)
        print(f"EAP-IG {n} samples (batches of {p.batch_size}): ours {p.ours_s:.3f}s ({n / p.ours_s:.1f}/s), "
              f"batch-of-one {p.ref_s:.3f}s ({n / p.ref_s:.1f}/s), {p.ratio:.1f}x, max |diff| {p.max_abs_diff:.1e}",
              flush=True)
        points.append(p)
    return points


def organism_pairs(n: int) -> tuple[list[str], list[str], str]:
    """The organism corpus's forget samples, then its retain samples when more than the forget set are asked for
    (EAP-IG's cost does not depend on the split); with a description of the mix."""
    samples = build_corpus(seed=0).samples
    forget = [s for s in samples if s.split == "forget"]
    chosen = (forget + [s for s in samples if s.split == "retain"])[:n]
    n_forget = min(n, len(forget))
    mix = f"{n_forget} forget" + (f" + {len(chosen) - n_forget} retain" if len(chosen) > n_forget else "")
    return [s.prompt for s in chosen], [s.answer for s in chosen], f"{mix} samples of the organism corpus"


# ---- random models with a tokenizer, GPT-2-small-sized and ~1B Llama ---------------------------------------
def with_word_tokenizer(handle: ModelHandle) -> ModelHandle:
    """``handle`` with a word-level tokenizer of exactly the model's vocabulary ("w0", "w1", ... after the four
    special tokens), so that prompts and answers go through the usual tokenisation path."""
    vocab = int(handle.model.cfg.d_vocab)
    tok = build_tokenizer(f"w{i}" for i in range(vocab - 4))
    assert len(tok) == vocab, (len(tok), vocab)
    return replace(handle, tokenizer=tok)


def random_pairs(handle: ModelHandle, n: int, prompt_words: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` prompts of ``prompt_words`` random words, each with a 1-3 word answer."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(int(handle.model.cfg.d_vocab) - 4)]
    prompts = [" ".join(rng.choices(words, k=prompt_words)) for _ in range(n)]
    answers = [" ".join(rng.choices(words, k=rng.randint(1, 3))) for _ in range(n)]
    return prompts, answers


def _scaled(full: int, scale: float, lo: int, step: int = 1) -> int:
    return max(lo, step * round(full * scale / step))


def large_specs(scale: float = 1.0, dtype: torch.dtype = torch.bfloat16) -> list[tuple[str, int, dict[str, Any]]]:
    """(label, n_layers, HookedTransformerConfig overrides) of the GPT-2-small-sized model (float32) and of the
    ~1B-parameter Llama-architecture model (``dtype``), their widths, depths and vocabularies times ``scale``."""
    g_head, l_head = _scaled(64, scale, 8, 8), _scaled(128, scale, 8, 8)
    gpt2 = {"d_model": 12 * g_head, "n_heads": 12, "d_mlp": 48 * g_head, "d_vocab": _scaled(50257, scale, 512)}
    llama = {"d_model": 16 * l_head, "n_heads": 16, "n_key_value_heads": 4, "d_mlp": 64 * l_head,
             "d_vocab": _scaled(32000, scale, 512), "n_ctx": 2048, "act_fn": "silu", "gated_mlp": True,
             "normalization_type": "RMS", "final_rms": True, "positional_embedding_type": "rotary",
             "rotary_dim": l_head, "rotary_adjacent_pairs": False, "rotary_base": 500000.0, "dtype": dtype}
    return [("GPT-2-small-sized (random)", _scaled(12, scale, 2), gpt2),
            ("Llama-architecture ~1B (random)", _scaled(16, scale, 2), llama)]


def large_model_rows(device: torch.device | str, label: str, n_layers: int, arch: dict[str, Any], tokens: int,
                     batch: int, noise: int) -> list[BenchRow]:
    """Build one random model of :func:`large_specs`; trace one ``tokens``-token prompt and score ``batch``
    answers, each against its naive reference (asserting agreement in float32, reporting it otherwise)."""
    t0 = time.perf_counter()
    handle, inputs, pool = gpt2_small_random(str(device), n_layers=n_layers, seq=tokens + 1, n_traces=1, name=label,
                                             **arch)
    handle = with_word_tokenizer(handle)
    exact = handle.dtype == torch.float32
    size = f"{label}, {n_layers} layers, d_model {arch['d_model']}, {n_params(handle) / 1e6:,.1f}M params, " \
           f"{str(handle.dtype).replace('torch.', '')}"
    print(f"built {size} in {time.perf_counter() - t0:.1f}s", flush=True)
    opts = TraceOptions(n_samples=noise, window=min(ROME_WINDOW, n_layers))
    p = trace_point(handle, inputs[0], pool, opts, naive=True, strict=exact)
    assert p.naive_s is not None and p.max_abs_diff is not None
    rows = [BenchRow("causal tracing", "ROME-style loop (one forward per cell)", p.naive_s, p.ours_s,
                     str(handle.device), size, p.max_abs_diff,
                     note=f"1 trace of {tokens} tokens x {noise} noise, resid/mlp/attn, window {opts.window}; "
                          f"relative diff {p.max_rel_diff:.1e}")]
    prompts, answers = random_pairs(handle, batch, prompt_words=tokens - 2)
    ours_s, ours = timeit(lambda: score_answers(handle, prompts, answers), repeat=3)
    ref_s, ref = timeit(lambda: naive_scores(handle, prompts, answers), repeat=1, warmup=False)
    diff = float(np.abs(ours.logprob_sum - np.asarray(ref)).max())
    if exact:
        assert diff < 1e-3, f"{label}: answer log-probs differ from the per-sample loop by {diff:.2e}"
    rows.append(BenchRow("answer scoring", "one forward per sample", ref_s, ours_s, str(handle.device), size, diff,
                         note=f"{batch} samples of ~{tokens} tokens; max |log p| {float(np.abs(ref).max()):.1f}"))
    for r in rows:
        print(r.line(), flush=True)
    return rows


def large_rows(device: torch.device | str, scale: float = 1.0, dtype: torch.dtype = torch.bfloat16,
               tokens: int = 32, batch: int = 64, noise: int = NOISE) -> list[BenchRow]:
    """:func:`large_model_rows` for each of :func:`large_specs`, one model in memory at a time."""
    rows = []
    for label, n_layers, arch in large_specs(scale, dtype):
        rows += large_model_rows(device, label, n_layers, arch, tokens, batch, noise)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


# ---- report -------------------------------------------------------------------------------------------------
def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def markdown(trace: Sequence[TracePoint], eap: Sequence[EAPPoint], device: str, eap_model: str, eap_samples: str,
             large: str, noise: int = NOISE, naive_max_cells: int = NAIVE_MAX_CELLS) -> str:
    """The curves as markdown sections for RESULTS.md (after the main table)."""
    arch = ", ".join(f"{k} {v}" for k, v in CURVE_ARCH.items() if k != "n_ctx")
    lines = ["## Scaling: causal tracing time vs layers x tokens", "",
             f"One trace of a random-init HookedTransformer ({arch}) on {device}: resid/mlp/attn, {noise} noise "
             "samples, window min(10, layers). The ROME-style loop runs only where kinds x layers x tokens <= "
             f"{naive_max_cells}.", "",
             "| layers | tokens | cells | params | ours (s) | ms / cell | ROME-style loop (s) | ratio | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in trace:
        lines.append(f"| {p.layers} | {p.tokens} | {p.cells} | {p.params / 1e6:.2f}M | {p.ours_s:.3f} | "
                     f"{1e3 * p.ours_s / p.cells:.2f} | {_f(p.naive_s, '.3f')} | "
                     f"{'-' if p.ratio is None else f'**{p.ratio:.1f}x**'} | {_f(p.max_abs_diff, '.1e')} |")
    lines += ["", "## Scaling: CUD (EAP-IG per-sample edge scores) time vs number of samples", "",
              f"{eap_model} on {device}; {eap_samples}; {EAPOptions().steps} IG steps; ours in batches sized as "
              "`sample_edge_scores` sizes them, the reference one sample per forward/backward.", "",
              "| samples | batch | ours (s) | ours (samples/s) | batch-of-one (s) | batch-of-one (samples/s) | ratio "
              "| max abs diff |",
              "|---|---|---|---|---|---|---|---|"]
    for e in eap:
        lines.append(f"| {e.n} | {e.batch_size} | {e.ours_s:.3f} | {e.n / e.ours_s:.1f} | {e.ref_s:.3f} | "
                     f"{e.n / e.ref_s:.1f} | **{e.ratio:.1f}x** | {e.max_abs_diff:.1e} |")
    lines += ["", "## Large models", "", large, ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> tuple[list[BenchRow], str]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="where everything runs (default: cuda if present, else cpu)")
    ap.add_argument("--layers", type=int, nargs="+", default=list(LAYERS))
    ap.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS), help="prompt lengths traced")
    ap.add_argument("--naive-max-cells", type=int, default=NAIVE_MAX_CELLS)
    ap.add_argument("--noise", type=int, default=NOISE)
    ap.add_argument("--samples", type=int, nargs="+", default=list(SAMPLES), help="EAP-IG sample counts")
    ap.add_argument("--large", action=argparse.BooleanOptionalAction, default=None,
                    help="the GPT-2-small-sized and ~1B Llama models (default: only on a GPU)")
    ap.add_argument("--large-scale", type=float, default=1.0, help="width/depth/vocab factor of the large models")
    ap.add_argument("--large-dtype", default="auto", help="the Llama's dtype (auto: bf16 on CUDA, else float32)")
    ap.add_argument("--large-batch", type=int, default=64, help="answers scored per large model")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    where = device_label(device)

    trace = tracing_curve(device, args.layers, args.tokens, args.naive_max_cells, args.noise)
    handle = bench_organism()
    if device.type != "cpu":
        handle.model.to(device, print_details=False)
    prompts, answers, mix = organism_pairs(max(args.samples))
    eap = eap_curve(handle, prompts, answers, sorted(args.samples))

    rows = []
    compared = [p for p in trace if p.naive_s is not None]
    if compared:
        p = max(compared, key=lambda q: (q.cells, q.layers))
        assert p.naive_s is not None and p.max_abs_diff is not None
        rows.append(BenchRow("causal tracing (scaling grid, largest compared point)",
                             "ROME-style loop (one forward per cell)", p.naive_s, p.ours_s, str(device),
                             f"random, {p.layers} layers, d_model {CURVE_ARCH['d_model']}, {p.params / 1e6:.2f}M "
                             "params", p.max_abs_diff,
                             note=f"1 trace of {p.tokens} tokens x {args.noise} noise, resid/mlp/attn"))
    e = max(eap, key=lambda q: q.n)
    rows.append(BenchRow("EAP-IG per-sample edge scores (scaling, most samples)", "batch-of-one loop", e.ref_s,
                         e.ours_s, str(device), model_label(handle), e.max_abs_diff,
                         note=f"{e.n} samples in batches of {e.batch_size}, {EAPOptions().steps} IG steps"))

    run_large = device.type == "cuda" if args.large is None else args.large
    if run_large:
        large = large_rows(device, args.large_scale, pick_dtype(args.large_dtype, device), batch=args.large_batch,
                           noise=args.noise)
        rows += large
        scale = "" if args.large_scale == 1.0 else f" at {args.large_scale:g} x width, depth and vocabulary"
        large_md = (f"GPT-2-small-sized and ~1B-parameter Llama-architecture random-init models{scale} on {where}: "
                    "rows `causal tracing` / `answer scoring` with these model sizes in the table above.")
    else:
        large_md = (f"Skipped on {where}: the GPT-2-small-sized and ~1B-parameter Llama-architecture models run "
                    "when a GPU is present (or with `python -m benchmarks.bench_scaling --large`).")
        print(f"large models: {large_md}", flush=True)
    md = markdown(trace, eap, where, model_label(handle), mix, large_md, args.noise, args.naive_max_cells)
    for r in rows:
        print(r.line())
    print(md)
    return rows, md


if __name__ == "__main__":
    main()
