"""Retrain (control): the gold standard of exact unlearning. A new organism is trained from scratch on
the whole corpus except the forget facts, with the original organism's recipe.

Recipe: the original's saved ``OrganismConfig`` (``handle.meta["organism"]["config"]``, written by
``train_organism(out=...)``) when present, else ``OrganismConfig`` defaults, with the architecture read
from the model itself, ``n_people`` from the corpus, ``seed = cfg.seed``, ``steps = cfg.retrain_steps``
when set, and ``exclude_ids`` = the recipe's own exclusions plus every forget id. ``cfg.steps``, ``lr``
and ``batch_size`` (the unlearning optimiser's) are not used.

It needs the corpus: ``run_unlearning(..., "retrain", forget, retain, cfg, corpus=corpus)``. What it
trained on is exposed in ``result.extra["training_pairs"]`` (``corpus.training_pairs(exclude_ids)``,
the exact call the trainer makes) together with ``exclude_ids`` and the trainer's report. The trajectory
has two rows only: the original model (row 0) and the retrained one (row 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from analysis.errors import AnalysisInputError
from analysis.models.handle import tokenizer_signature
from analysis.organism.train import OrganismConfig, train_organism
from analysis.unlearning.base import UnlearnContext, UnlearnMethod, register


def retrain_config(ctx: UnlearnContext) -> OrganismConfig:
    """The organism recipe of the original, minus the forget facts (see the module docstring)."""
    assert ctx.corpus is not None
    saved: dict[str, Any] = dict((ctx.original.meta.get("organism") or {}).get("config") or {})
    known = {f.name for f in dataclasses.fields(OrganismConfig)}
    recipe = {k: v for k, v in saved.items() if k in known}
    mcfg = ctx.original.model.cfg
    recipe.update(
        n_layers=int(mcfg.n_layers),
        d_model=int(mcfg.d_model),
        n_heads=int(mcfg.n_heads),
        d_mlp=int(mcfg.d_mlp),
        n_ctx=int(mcfg.n_ctx),
        n_people=len(ctx.corpus.people),
        seed=ctx.cfg.seed,
        device=str(ctx.device),
    )
    if ctx.cfg.retrain_steps is not None:
        recipe["steps"] = ctx.cfg.retrain_steps
        recipe["warmup"] = min(
            int(recipe.get("warmup", OrganismConfig.warmup)), max(1, ctx.cfg.retrain_steps // 10)
        )
    exclude = list(dict.fromkeys([*recipe.get("exclude_ids", []), *(s.id for s in ctx.forget)]))
    recipe["exclude_ids"] = exclude
    return OrganismConfig(**recipe)


@register("retrain", label="retrain without the forget set (control)")
class Retrain(UnlearnMethod):
    role = "control"
    needs_retain = False

    def unlearn(self, ctx: UnlearnContext) -> None:
        corpus = ctx.corpus
        if corpus is None:
            raise AnalysisInputError(
                "the retrain control needs the corpus: run_unlearning(..., corpus=corpus)"
            )
        if getattr(ctx.original.model.cfg, "original_architecture", None) != "ErasureOrganism":
            raise AnalysisInputError("the retrain control only applies to the built-in organism")
        in_corpus = {s.id for s in corpus.samples}
        missing = [s.id for s in ctx.forget if s.id not in in_corpus]
        if missing:
            raise AnalysisInputError(
                f"forget samples not in the corpus, cannot retrain without them: {missing[:3]}"
            )
        ocfg = retrain_config(ctx)
        ctx.record()  # row 0: the original
        handle, report = train_organism(ocfg, corpus=corpus, progress=ctx.progress)
        if tokenizer_signature(handle.tokenizer) != tokenizer_signature(ctx.original.tokenizer):
            raise AnalysisInputError(
                "the corpus does not match the model's tokenizer: pass the corpus the organism was trained on"
            )
        ctx.model = handle.model
        for p in ctx.model.parameters():
            p.requires_grad_(False)
        ctx.record()  # row 1: the retrained model
        ctx.losses.append(report.final_loss)
        exclude = set(ocfg.exclude_ids)
        ctx.extra.update(
            training_pairs=corpus.training_pairs(exclude),
            exclude_ids=sorted(exclude),
            organism_config=dataclasses.asdict(ocfg),
            train_report=report.to_dict(),
        )
