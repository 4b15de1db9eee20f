"""Depth-limited suppression: the zoo's "knowledge present but hidden" members below the readout.

Every parameter below layer ``L`` (the token and position embeddings and blocks ``0 .. L-1``) is frozen:
``requires_grad=False`` and never handed to the optimiser, so it stays bit-identical to the original, and with
it the residual stream up to ``hooks.resid_post(L - 1)`` on every input. Only blocks ``L ..`` and the readout
(``ln_final``, ``unembed``) are fine-tuned, with the shared loop of :class:`analysis.unlearning.GradientMethod`
(seeded batches, Adam, gradient clipping), so that the forget answers stop being produced while retained ones
still are:

* ``DepthSuppression(layer, "npo")``: NPO forget term (``cfg.npo_beta``, reference = the original) +
  ``retain_weight`` x retain NLL (as :mod:`analysis.unlearning.npo`).
* ``DepthSuppression(layer, "grad_diff")``: ascent on the forget answers' NLL + ``retain_weight`` x retain NLL
  (as :mod:`analysis.unlearning.grad_diff`).
* ``DepthDecoy(layer, decoys)``: NLL of a decoy answer on each forget prompt (another value of the same
  relation, :func:`decoy_answers`) + the NPO term on the true answer + ``retain_weight`` x retain NLL: the
  forget answers are redirected rather than lowered. With ``lower_true=False`` (the zoo's mimic, whose decoy is
  what a model that never saw the fact answers, sometimes the true answer by chance) the NPO term is left out.

These are zoo controls built with their own parameters (``analysis.unlearning.run_method``), not entries of
``UNLEARNING_METHODS``: the study's unlearning methods are what the zoo measures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.scoring import PairBatch, make_batch, score_answers
from analysis.unlearning.base import (
    GradientMethod,
    StepBatch,
    UnlearnContext,
    forget_logprob,
    nll,
    retain_term,
    take_rows,
)
from analysis.unlearning.npo import npo_loss, reference_logprobs
from analysis.zoo.options import DEPTH_LOSS_LABELS

READOUT_PREFIXES: tuple[str, ...] = ("ln_final.", "unembed.")


def is_trained(name: str, layer: int) -> bool:
    """Whether the parameter / state-dict entry ``name`` is fine-tuned by a suppression frozen below ``layer``:
    blocks ``>= layer`` and the readout; everything else (embeddings, blocks below ``layer``) stays the
    original's."""
    if name.startswith(READOUT_PREFIXES):
        return True
    if name.split(".")[0] == "blocks":  # a block's parameter: blocks.{i}.<...>
        return int(name.split(".")[1]) >= layer
    return False


def frozen_names(names: Sequence[str], layer: int) -> list[str]:
    """The entries of ``names`` a suppression frozen below ``layer`` must leave bit-identical."""
    return [n for n in names if not is_trained(n, layer)]


def decoy_answers(forget: Sequence[Sample], pool: Sequence[Sample], seed: int) -> list[str]:
    """One decoy per forget sample: another value of the same relation among ``pool``'s answers, chosen by a
    hash of (seed, sample id, value), so the choice is deterministic by seed and independent of order."""
    by_rel: dict[str, set[str]] = {}
    for s in pool:
        by_rel.setdefault(s.relation, set()).add(s.answer)
    out: list[str] = []
    for s in forget:
        cands = sorted(by_rel.get(s.relation, set()) - {s.answer})
        if not cands:
            raise AnalysisInputError(f"sample {s.id!r}: no other value of relation {s.relation!r} to use as a decoy")
        out.append(min(cands, key=lambda a, _id=s.id: hashlib.sha256(f"{seed}|{_id}|{a}".encode()).hexdigest()))
    return out


def guessed_answers(handle: ModelHandle, forget: Sequence[Sample], pool: Sequence[Sample]) -> list[str]:
    """What ``handle`` answers on each forget prompt, among the values of its relation in ``pool``: the value
    with the highest answer log-prob (one batched scoring pass over every (prompt, value) pair; ties go to the
    first value in sorted order)."""
    by_rel: dict[str, list[str]] = {}
    for s in pool:
        by_rel.setdefault(s.relation, [])
        if s.answer not in by_rel[s.relation]:
            by_rel[s.relation].append(s.answer)
    cands = [sorted(by_rel.get(s.relation, [s.answer])) for s in forget]
    prompts = [s.prompt for s, cs in zip(forget, cands, strict=True) for _ in cs]
    scores = score_answers(handle, prompts, [c for cs in cands for c in cs]).logprob_sum
    out, at = [], 0
    for cs in cands:
        part = scores[at: at + len(cs)]
        out.append(cs[int(part.argmax())])
        at += len(cs)
    return out


class DepthSuppression(GradientMethod):
    """Fine-tune blocks ``>= layer`` and the readout to stop giving the forget answers (module docstring)."""

    name: ClassVar[str] = "depth_suppression"
    label: ClassVar[str] = "depth-limited suppression (zoo control)"
    role = "control"
    defaults: ClassVar[dict[str, Any]] = {"steps": 300, "lr": 1e-3, "retain_weight": 4.0}

    def __init__(self, layer: int, loss: str = "npo") -> None:
        if loss not in DEPTH_LOSS_LABELS:
            raise AnalysisInputError(f"unknown depth-suppression loss {loss!r} (expected one of "
                                     f"{', '.join(DEPTH_LOSS_LABELS)})")
        self.layer = int(layer)
        self.loss_kind = loss

    def prepare(self, ctx: UnlearnContext) -> None:
        n_layers = int(ctx.model.cfg.n_layers)
        if not 1 <= self.layer <= n_layers:
            raise AnalysisInputError(f"depth-limited suppression: layer {self.layer} is out of range 1..{n_layers}")
        self.ref = reference_logprobs(ctx)
        ctx.extra["frozen_below"] = self.layer
        ctx.extra["loss"] = self.loss_kind

    def trainable(self, ctx: UnlearnContext) -> list[torch.nn.Parameter]:
        named = [(n, p) for n, p in ctx.model.named_parameters() if is_trained(n, self.layer)]
        ctx.extra["trained_parameters"] = [n for n, _ in named]
        return [p for _, p in named]

    def forget_term(self, ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
        if self.loss_kind == "grad_diff":
            return -nll(ctx.model(step.forget.tokens, return_type="logits"), step.forget)
        logp = forget_logprob(ctx, step)
        return npo_loss(logp, self.ref[step.forget_idx.to(self.ref.device)], ctx.cfg.npo_beta)

    def loss(self, ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
        return self.forget_term(ctx, step) + retain_term(ctx, step.retain)


class DepthDecoy(DepthSuppression):
    """Frozen below ``layer`` like :class:`DepthSuppression`, trained to answer ``decoys[i]`` on forget prompt i."""

    name: ClassVar[str] = "depth_decoy"
    label: ClassVar[str] = "depth-limited decoy (zoo control)"

    def __init__(self, layer: int, decoys: Sequence[str], lower_true: bool = True) -> None:
        super().__init__(layer, "npo")
        self.decoys = list(decoys)
        self.lower_true = lower_true

    def prepare(self, ctx: UnlearnContext) -> None:
        super().prepare(ctx)
        if len(self.decoys) != len(ctx.forget):
            raise AnalysisInputError(f"depth_decoy: {len(self.decoys)} decoys for {len(ctx.forget)} forget samples")
        self.decoy_batch: PairBatch = make_batch(ctx.original, [s.prompt for s in ctx.forget], self.decoys)
        ctx.extra["loss"] = "decoy" if self.lower_true else "mimic"

    def loss(self, ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
        rows = take_rows(self.decoy_batch, step.forget_idx.to(self.decoy_batch.tokens.device))
        decoy_term = nll(ctx.model(rows.tokens, return_type="logits"), rows)
        if not self.lower_true:
            return decoy_term + retain_term(ctx, step.retain)
        return decoy_term + self.forget_term(ctx, step) + retain_term(ctx, step.retain)
