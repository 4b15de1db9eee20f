"""Leave-one-out attribution (unPact): every ablation of many prompts in batched forwards
(analysis.attribution.loo_contributions) vs one forward per ablated prompt (a naive loop, like a
straightforward attribution script). Both must give the same contributions.

    python -m benchmarks.bench_attribution                    # organism on CPU (+ CUDA when present)
    python -m benchmarks.bench_attribution --organism studies/demo/models/original --prompts 200
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from analysis.attribution.core import PromptIds, ablate, loo_contributions, prompt_ids
from analysis.models.handle import ModelHandle
from benchmarks.common import BenchRow, bench_organism, model_label, timeit


@torch.no_grad()
def naive_loo(handle: ModelHandle, items: Sequence[PromptIds]) -> list[list[float]]:
    """Reference: the clean prompt and each ablated prompt as its own unpadded forward."""

    def lp(prompt: list[int], answer: list[int]) -> float:
        logits = handle.model(torch.tensor([prompt + answer], device=handle.device), return_type="logits")[0]
        logp = torch.log_softmax(logits.float(), -1)
        return float(np.mean([float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(answer)]))

    out = []
    for it in items:
        full = lp(*it.pair())
        out.append([full - lp(*ablate(it, i, "delete")) for i in it.positions])
    return out


def _diff(ours: Sequence[object], ref: Sequence[list[float]]) -> float:
    return float(max(abs(c - r) for o, rr in zip(ours, ref, strict=True)
                     for c, r in zip([c for c in o.contributions if c is not None], rr, strict=True)))


def organism_items(path: str | None, n: int) -> tuple[ModelHandle, list[PromptIds]]:
    """The organism (``path``, else benchmarks.common.bench_organism) and the prompts of its study's forget and
    retain samples (or of the corpus it was trained on)."""
    from analysis.data.corpus import build_corpus
    from analysis.data.schema import read_jsonl
    from analysis.models import load_model

    if path:
        handle = load_model(path, device="cpu")
        root = Path(path).resolve().parent.parent / "samples"
        samples = [s for f in ("forget", "retain") if (root / f"{f}.jsonl").is_file()
                   for s in read_jsonl(root / f"{f}.jsonl", split=f)]
    else:
        handle = bench_organism()
        samples = []
    if not samples:
        samples = [s for s in build_corpus(seed=0).samples if s.split in ("forget", "retain")]
    return handle, [prompt_ids(handle, s.prompt, s.answer) for s in samples[:n]]


def gpt2_sized(device: str, n: int, seq: int = 16) -> tuple[ModelHandle, list[PromptIds]]:
    """A randomly initialised GPT-2-small-sized model and random prompts (speed only; no tokenizer needed)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, n_ctx=1024,
                                  d_vocab=50257, act_fn="gelu_new", normalization_type="LN", device=device, seed=0)
    model = HookedTransformer(cfg).eval()
    tok = SimpleNamespace(pad_token_id=50256, eos_token_id=50256, bos_token_id=50256)
    handle = ModelHandle(model=model, tokenizer=tok, name="gpt2-small-random", role="original", path=None,  # type: ignore[arg-type]
                         fingerprint="random", fmt="organism")
    gen = torch.Generator().manual_seed(0)
    items = [PromptIds(tuple([50256, *torch.randint(0, 50000, (seq - 2,), generator=gen).tolist()]),
                       (int(torch.randint(0, 50000, (1,), generator=gen)),), 1) for _ in range(n)]
    return handle, items


def run(handle: ModelHandle, items: list[PromptIds], label: str, repeat: int = 3) -> BenchRow:
    t_ref, ref = timeit(lambda: naive_loo(handle, items), repeat=1)
    t_ours, ours = timeit(lambda: loo_contributions(handle, items), repeat=repeat)
    rows = sum(len(it.positions) + 1 for it in items)
    row = BenchRow("leave-one-out attribution", "one forward per ablation", t_ref, t_ours, str(handle.device),
                   label, _diff(ours, ref), note=f"{len(items)} prompts, {rows} rows (deletion)")
    print(row.line(), flush=True)
    return row


def main(argv: Sequence[str] | None = None) -> list[BenchRow]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--organism", default=os.environ.get("ERASURE_ORGANISM"), help="organism model directory")
    ap.add_argument("--prompts", type=int, default=100, help="prompts (forget then retain samples)")
    ap.add_argument("--gpt2-prompts", type=int, default=32, help="prompts of the GPT-2-sized model on CUDA")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(list(argv) if argv is not None else [])
    if args.threads:
        torch.set_num_threads(args.threads)
    handle, items = organism_items(args.organism, args.prompts)
    rows = [run(handle, items, model_label(handle))]
    if torch.cuda.is_available():
        handle.model.to("cuda")
        handle.model.cfg.device = "cuda"
        rows.append(run(handle, items, model_label(handle)))
        big, big_items = gpt2_sized("cuda", args.gpt2_prompts)
        rows.append(run(big, big_items, f"{big.name}, {sum(p.numel() for p in big.model.parameters()) / 1e6:.0f}M "
                                        "params"))
    return rows


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
