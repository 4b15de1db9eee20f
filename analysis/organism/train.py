"""Train the built-in model organism on the synthetic corpus (CUDA when present, else CPU)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from analysis.checks import check_float, check_int, check_seed
from analysis.data.corpus import Corpus, build_corpus
from analysis.determinism import deterministic
from analysis.errors import AnalysisInputError
from analysis.models.device import pick_device
from analysis.models.handle import ModelHandle
from analysis.models.organism_io import build_hooked, save_organism_dir
from analysis.organism.tokenizer import build_tokenizer
from analysis.scoring import batch_from_ids, encode_pair, pad_id, score_answers
from analysis.store import ProgressFn

MIN_PEOPLE = 10  # the corpus's forget split needs at least one person (analysis.data.corpus.build_corpus)


@dataclass
class OrganismConfig:
    """Architecture and training settings. Defaults reach >= 99% recall in well under a minute on 2 CPU
    cores (see the README for measured numbers)."""

    seed: int = 0
    n_people: int = 200
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_ctx: int = 32
    steps: int = 450
    batch_size: int = 128
    lr: float = 5e-3
    weight_decay: float = 0.01
    warmup: int = 30
    device: str | None = None
    exclude_ids: list[str] = field(default_factory=list)  # facts left out of training (retrain control)

    def validated(self) -> OrganismConfig:
        """Checked before any work (AnalysisInputError naming the field and what it expects); returns self."""
        check_seed("seed", self.seed)
        check_int("n_people (people in the corpus)", self.n_people, MIN_PEOPLE)
        for name in ("n_layers", "d_model", "n_heads", "d_mlp", "batch_size"):
            check_int(name, getattr(self, name), 1)
        if self.d_model % self.n_heads:
            raise AnalysisInputError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        check_int("n_ctx (context length)", self.n_ctx, 2)
        check_int("steps (training steps)", self.steps, 1)
        check_int("warmup (steps)", self.warmup, 0)
        check_float("lr (learning rate)", self.lr, 0, min_open=True)
        check_float("weight_decay", self.weight_decay, 0)
        return self


@dataclass
class TrainReport:
    recall: float  # top-1 recall of the trained facts' canonical prompts
    forget_recall: float  # recall of the forget split (near chance for a retrain control)
    utility: float
    seconds: float
    steps: int
    final_loss: float
    n_params: int
    device: str
    path: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def in_memory_handle(model: torch.nn.Module, tokenizer: object, name: str = "in-memory") -> ModelHandle:
    return ModelHandle(model=model, tokenizer=tokenizer, name=name, role="original", path=None,
                       fingerprint="in-memory", fmt="organism")


def _training_tensors(corpus: Corpus, tokenizer: object, exclude: set[str], n_ctx: int,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [encode_pair(tokenizer, p, a, prepend_bos=True) for p, a in corpus.training_pairs(exclude)]
    batch = batch_from_ids(pairs, pad_id=pad_id(tokenizer), n_ctx=n_ctx, device=device)
    # Language-model loss on every real (non-pad) next token, with the answer tokens counted once more:
    # the facts are what the organism is for, and this halves the steps to full recall.
    positions = torch.arange(batch.tokens.shape[1] - 1, device=device)
    lm_mask = (positions[None, :] < (batch.lengths[:, None] - 1)).float()
    return batch.tokens, lm_mask + batch.target_mask.float()


def train_organism(cfg: OrganismConfig, out: str | Path | None = None, corpus: Corpus | None = None,
                   progress: ProgressFn | None = None) -> tuple[ModelHandle, TrainReport]:
    """Train (deterministically for a given seed and device) and optionally save to ``out``."""
    cfg.validated()  # before any work: a bad config never saves a model
    with deterministic():
        return _train_organism(cfg, out, corpus, progress)


def _train_organism(cfg: OrganismConfig, out: str | Path | None, corpus: Corpus | None,
                    progress: ProgressFn | None) -> tuple[ModelHandle, TrainReport]:
    t0 = time.perf_counter()
    device = pick_device(cfg.device)
    corpus = corpus or build_corpus(seed=cfg.seed, n_people=cfg.n_people)
    tokenizer = build_tokenizer(corpus.words)
    exclude = set(cfg.exclude_ids)
    unknown = exclude - {s.id for s in corpus.samples}
    if unknown:
        raise ValueError(f"exclude_ids names facts not in the corpus: {sorted(unknown)[:3]}")
    torch.manual_seed(cfg.seed)
    arch = {"n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
            "d_head": cfg.d_model // cfg.n_heads, "d_mlp": cfg.d_mlp, "n_ctx": cfg.n_ctx,
            "d_vocab": len(tokenizer), "act_fn": "gelu", "normalization_type": "LN",
            "positional_embedding_type": "standard", "attn_only": False, "default_prepend_bos": True}
    model = build_hooked(arch, tokenizer, device, seed=cfg.seed)
    tokens, lm_mask = _training_tensors(corpus, tokenizer, exclude, cfg.n_ctx, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = tokens.shape[0]
    order = torch.randperm(n, generator=gen)
    cursor = 0
    loss_val = float("nan")
    model.train()
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor: cursor + cfg.batch_size].to(device)
        cursor += cfg.batch_size
        batch_tokens, mask = tokens[idx], lm_mask[idx]
        logits = model(batch_tokens, return_type="logits")
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        nll = -torch.gather(logp, 2, batch_tokens[:, 1:, None]).squeeze(-1)
        loss = (nll * mask).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_val = float(loss.detach())
        if progress and (step % 20 == 0 or step == cfg.steps - 1):
            progress((step + 1) / cfg.steps, f"training organism: step {step + 1}/{cfg.steps}, loss {loss_val:.3f}")
    model.eval()
    handle = in_memory_handle(model, tokenizer)
    report = evaluate_recall(handle, corpus, exclude)
    seconds = time.perf_counter() - t0
    result = TrainReport(recall=report["recall"], forget_recall=report["forget_recall"], utility=report["utility"],
                         seconds=seconds, steps=cfg.steps, final_loss=loss_val,
                         n_params=sum(p.numel() for p in model.parameters()), device=str(device))
    if out is not None:
        meta = {"config": asdict(cfg), "report": result.to_dict(), "corpus_seed": corpus.seed,
                "n_people": len(corpus.people)}
        path = save_organism_dir(model, tokenizer, out, meta=meta)
        result.path = str(path)
        handle.path = path
    return handle, result


def evaluate_recall(handle: ModelHandle, corpus: Corpus, exclude: set[str] | frozenset[str] = frozenset()
                    ) -> dict[str, float]:
    """Top-1 recall of the canonical prompt of every trained fact, of the forget split and of utility."""
    facts = [s for s in corpus.samples if s.split in ("forget", "retain")]
    scores = score_answers(handle, [s.prompt for s in facts], [s.answer for s in facts])
    trained = [i for i, s in enumerate(facts) if s.id not in exclude]
    forget = [i for i, s in enumerate(facts) if s.split == "forget"]
    util = corpus.split("utility")
    u = score_answers(handle, [s.prompt for s in util], [s.answer for s in util])
    return {"recall": float(scores.correct[trained].mean()) if trained else float("nan"),
            "forget_recall": float(scores.correct[forget].mean()) if forget else float("nan"),
            "utility": float(u.correct.mean())}
