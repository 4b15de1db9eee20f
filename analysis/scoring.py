"""Answer scoring used by every analysis: one tokenisation path for (prompt, answer) pairs and one
batched, right-padded log-probability computation.

Right padding is exact for causal models: a position never attends to later (pad) positions, and
positions start at 0 for every row, so no attention mask is needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from analysis.errors import AnalysisInputError
from analysis.models.device import memory_budget
from analysis.models.handle import ModelHandle


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, prepend_bos: bool) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if prepend_bos and tokenizer.bos_token_id is not None:
        ids = [int(tokenizer.bos_token_id), *ids]
    return ids


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str,
                prepend_bos: bool) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the answer as a continuation of it.

    The answer is tokenised in context (prompt + separator + answer) so BPE merges match what the model
    saw in training; if the prompt's tokens are not a prefix of the joint tokens (a merge across the
    boundary), the answer is tokenised on its own with a leading separator.
    """
    if not prompt.strip():
        raise AnalysisInputError("empty prompt")
    if not answer.strip():
        raise AnalysisInputError("empty answer")
    sep = "" if answer[0].isspace() or prompt[-1].isspace() else " "
    p_ids = encode_text(tokenizer, prompt, prepend_bos)
    full = encode_text(tokenizer, prompt + sep + answer, prepend_bos)
    if full[: len(p_ids)] == p_ids and len(full) > len(p_ids):
        return p_ids, full[len(p_ids):]
    return p_ids, encode_text(tokenizer, sep + answer, False)


@dataclass
class PairBatch:
    """Right-padded [prompt; answer] token rows. ``target_mask[b, t]`` is True where the logits at
    position t predict an answer token (i.e. tokens[b, t + 1] is part of the answer)."""

    tokens: torch.Tensor  # [B, T] long
    target_mask: torch.Tensor  # [B, T-1] bool
    prompt_lens: torch.Tensor  # [B] long
    answer_lens: torch.Tensor  # [B] long
    lengths: torch.Tensor  # [B] long

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(*(t.to(device) for t in (self.tokens, self.target_mask, self.prompt_lens,
                                                    self.answer_lens, self.lengths)))

    def repeat(self, n: int) -> PairBatch:
        """The batch stacked ``n`` times (row r of copy i is row i * B + r)."""
        return PairBatch(*(t.repeat(n, *([1] * (t.dim() - 1))) for t in (
            self.tokens, self.target_mask, self.prompt_lens, self.answer_lens, self.lengths)))


def make_batch(handle: ModelHandle, prompts: Sequence[str], answers: Sequence[str]) -> PairBatch:
    if len(prompts) != len(answers):
        raise AnalysisInputError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        raise AnalysisInputError("no prompts to score")
    pairs = [encode_pair(handle.tokenizer, p, a, handle.prepend_bos) for p, a in zip(prompts, answers, strict=True)]
    return batch_from_ids(pairs, pad_id=pad_id(handle.tokenizer), n_ctx=handle.model.cfg.n_ctx,
                          device=handle.device)


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0


def batch_from_ids(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, n_ctx: int,
                   device: torch.device | str = "cpu") -> PairBatch:
    lengths = [len(p) + len(a) for p, a in pairs]
    longest = max(lengths)
    if longest > n_ctx:
        raise AnalysisInputError(f"prompt + answer is {longest} tokens, longer than the model's context of {n_ctx}")
    tokens = torch.full((len(pairs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), max(longest - 1, 1)), dtype=torch.bool)
    for i, (p, a) in enumerate(pairs):
        tokens[i, : len(p) + len(a)] = torch.tensor(p + a, dtype=torch.long)
        mask[i, len(p) - 1: len(p) - 1 + len(a)] = True
    lens = torch.tensor(lengths, dtype=torch.long)
    return PairBatch(tokens, mask, torch.tensor([len(p) for p, _ in pairs]), torch.tensor([len(a) for _, a in pairs]),
                     lens).to(device)


def answer_token_logprobs(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """[B, T-1] log-prob of each next token, zero outside the answer. Differentiable."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok = torch.gather(logp, 2, batch.tokens[:, 1:, None]).squeeze(-1)
    return tok * batch.target_mask


def answer_logprob(logits: torch.Tensor, batch: PairBatch, reduce: str = "mean") -> torch.Tensor:
    """[B] sum or mean (length-normalised) log-prob of the answer tokens. Differentiable."""
    total = answer_token_logprobs(logits, batch).sum(-1)
    return total / batch.answer_lens.clamp(min=1) if reduce == "mean" else total


def answer_correct(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """[B] bool: every answer token is the argmax under teacher forcing (top-1 correctness)."""
    hit = logits[:, :-1].argmax(-1) == batch.tokens[:, 1:]
    return (hit | ~batch.target_mask).all(-1)


@dataclass
class AnswerScores:
    logprob: np.ndarray  # mean log-prob over answer tokens
    logprob_sum: np.ndarray
    prob: np.ndarray  # joint answer probability, exp(sum)
    norm_prob: np.ndarray  # length-normalised probability, exp(mean)
    correct: np.ndarray  # bool, top-1 under teacher forcing

    def __len__(self) -> int:
        return len(self.logprob)


def chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def pair_batches(handle: ModelHandle, prompts: Sequence[str], answers: Sequence[str],
                 batch_size: int | None = None, sized_for: ModelHandle | None = None
                 ) -> Iterator[tuple[slice, PairBatch]]:
    """(rows, batch) over (prompt, answer) pairs tokenised by ``handle``: ``batch_size`` rows at a time, or as
    many as fit the memory budget of ``sized_for`` (default ``handle``) at the longest pair's length."""
    if batch_size:
        size = batch_size
    else:  # rows per forward within the memory budget, for the longest row (in tokens)
        tokens = make_batch(handle, prompts, answers).tokens
        size = default_batch_size(sized_for or handle, seq_len=int(tokens.shape[1]))
    for sl in chunks(len(prompts), size):
        yield sl, make_batch(handle, prompts[sl], answers[sl])


def default_batch_size(handle: ModelHandle, seq_len: int = 32, budget_bytes: int | None = None) -> int:
    """Rows per forward that keep the logits + residual activations within ``budget_bytes`` (default: half the
    free memory of the model's GPU, 1 GiB on the CPU; see analysis.models.device.memory_budget)."""
    if budget_bytes is None:
        budget_bytes = memory_budget(handle.device)
    cfg = handle.model.cfg
    per_row = seq_len * (cfg.d_vocab * 2 + cfg.d_model * cfg.n_layers * 12 + cfg.d_mlp * 2) * 4
    return int(max(1, min(1024, budget_bytes // max(per_row, 1))))


@torch.no_grad()
def score_answers(handle: ModelHandle, prompts: Sequence[str], answers: Sequence[str],
                  batch_size: int | None = None) -> AnswerScores:
    """Batched scores of ``answers`` as continuations of ``prompts`` under one model."""
    if len(prompts) != len(answers):
        raise AnalysisInputError(f"{len(prompts)} prompts but {len(answers)} answers")
    bs = batch_size or default_batch_size(handle)
    lp, lps, corr = [], [], []
    for sl in chunks(len(prompts), bs):
        batch = make_batch(handle, prompts[sl], answers[sl])
        logits = handle.model(batch.tokens, return_type="logits")
        lps.append(answer_logprob(logits, batch, "sum").cpu())
        lp.append(answer_logprob(logits, batch, "mean").cpu())
        corr.append(answer_correct(logits, batch).cpu())
    if not lp:
        raise AnalysisInputError("no prompts to score")
    logprob = torch.cat(lp).double().numpy()
    logprob_sum = torch.cat(lps).double().numpy()
    return AnswerScores(logprob=logprob, logprob_sum=logprob_sum, prob=np.exp(logprob_sum),
                        norm_prob=np.exp(logprob), correct=torch.cat(corr).numpy())


@torch.no_grad()
def top_next_tokens(handle: ModelHandle, prompt: str, k: int = 10) -> list[tuple[str, float]]:
    """The k most likely next tokens after ``prompt`` with their probabilities."""
    if not prompt.strip():
        raise AnalysisInputError("empty prompt")
    ids = encode_text(handle.tokenizer, prompt, handle.prepend_bos)
    if len(ids) > handle.model.cfg.n_ctx:
        raise AnalysisInputError(f"prompt is {len(ids)} tokens, longer than the model's context of "
                                 f"{handle.model.cfg.n_ctx}")
    logits = handle.model(torch.tensor([ids], device=handle.device), return_type="logits")[0, -1]
    probs = torch.softmax(logits.float(), -1)
    top = torch.topk(probs, min(k, probs.numel()))
    return [(handle.tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices, strict=True)]
