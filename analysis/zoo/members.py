"""The zoo's member kinds: one recipe each behind :data:`MEMBER_KINDS` (an :class:`analysis.registry.Registry`).

A recipe *plans* its members (name + a JSON recipe: everything that decides the weights, with the original's
fingerprint and the samples' digest, so that a member is rebuilt exactly when its recipe changes) and *builds*
one (trains it, saves it under ``study.root / "models" / name`` in the organism's format, adds it to the study
with role ``control``, and returns its :class:`ZooMember` with the checks that show its status by construction):

==================  ========  ===================================================================================
kind                status    recipe and checks
==================  ========  ===================================================================================
retrain             absent    the retrain control's recipe (``analysis.unlearning.retrain``) with seed study seed
                              + offset (101, 102, 103), none the reference's. Checks: the training pairs exclude
                              every forget fact (ids, prompts, subjects), the seed differs from the reference's.
retrain_unlearned   absent    "never knew, then unlearned": a zoo retrain put through an unlearning method (npo,
                              rmu) on the forget set. Checks: its source is an N member.
readout             present   the study's ``readout_suppression`` control, registered (or trained as
                              ``zoo_readout`` when the study has none). Check: every non-readout weight is the
                              original's.
depth               present   ``zoo_depth{L}`` / ``zoo_depth{L}_gd``: blocks >= L and the readout fine-tuned to
                              stop giving the forget answers (NPO / gradient difference + retain NLL,
                              :mod:`analysis.zoo.suppression`); every weight below L bit-identical.
decoy               present   ``zoo_decoy``: frozen below a middle L, trained to give a decoy answer.
mimic               present   ``zoo_mimic``: frozen like the decoy, trained to answer each forget prompt as the last
                              zoo retrain does (chance-level forget accuracy: its outputs look like an N member's).
twin                present   ``zoo_twin``: a second original trained from scratch on every fact (its own seed,
                              saved as ``models/zoo_twin_original``), then suppressed like ``zoo_depth{L}`` from
                              itself. Knowledge present in a residual basis that is not the original's: a signal
                              that reads "shares the original's weights" instead of the knowledge calls it absent.
                              Checks: the twin recalls the forget facts, ITS probe passes, its frozen weights are
                              the twin's.
==================  ========  ===================================================================================

A P member counts only if a probe trained on retain samples decodes the forget answers from the ORIGINAL at its
last frozen layer (``hooks.resid_post(L - 1)``; the last layer for the readout) with accuracy >= the threshold
(``analysis.sae.probe.run_probe``), and only if it does hide them (forget accuracy <= ``max_forget_acc``) while
keeping retain (>= ``min_retain_kept`` of the original's). Otherwise it is recorded ``excluded`` with the reason
(and, when the probe fails, not trained at all).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch

from analysis.data.corpus import Corpus, build_corpus
from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError
from analysis.evaluation import model_scores, score_model
from analysis.hooks import resid_post
from analysis.models.handle import ModelHandle
from analysis.models.organism_io import ORGANISM_CONFIG, WEIGHTS, read_organism_config, save_organism_dir
from analysis.registry import Registry
from analysis.scoring import score_answers
from analysis.study import Study
from analysis.unlearning import UNLEARNING_METHODS, UnlearnConfig, run_unlearning
from analysis.unlearning.base import UnlearnMethod, UnlearnResult, run_method
from analysis.unlearning.log import LOG_FILE, read_unlearning_log, write_unlearning_log
from analysis.zoo.options import (
    DEPTH_LOSS_SUFFIX,
    MEMBER_KIND_LABELS,
    MEMBER_STATUS,
    PREFIX,
    PROBE_KEY,
    RECIPE_VERSION,
    ZooOptions,
    spread_layers,
)
from analysis.zoo.result import ZooMember
from analysis.zoo.suppression import (
    DepthDecoy,
    DepthSuppression,
    decoy_answers,
    frozen_names,
    guessed_answers,
    is_trained,
)

TRAINING_FILE = "zoo_training.json"  # in a zoo retrain's directory: the facts and pairs it was trained on
TWIN_BASE_SUFFIX = "_original"  # models/zoo_twin_original: the twin original the twin member was suppressed from
READOUT_MODEL = "readout_suppression"  # the study's readout-only control (the demo has one)


def member_path(name: str) -> Path:
    """Where a member the zoo trains lives, relative to the study root (as the manifest records it)."""
    return Path("models") / name


@dataclass(frozen=True)
class MemberSpec:
    """A planned member: its model name, kind and recipe (JSON; equal recipes = the same member)."""

    name: str
    kind: str
    recipe: dict[str, Any]


# ---- the context every recipe reads --------------------------------------------------------------------


class ZooContext:
    """The study, the options and what the recipes share, computed on first use: the original (loaded), the
    organism's corpus, the original's probe accuracy per layer and output scores."""

    def __init__(self, study: Study, options: ZooOptions) -> None:
        self.study = study
        self.options = options
        if "original" not in study.manifest.models:
            raise AnalysisInputError("the zoo needs the study's original model")
        orig_dir = study.model_path("original")
        if not (orig_dir / ORGANISM_CONFIG).is_file():
            raise AnalysisInputError("the zoo trains models from scratch: it needs a study of the built-in organism "
                                     f"(no {ORGANISM_CONFIG} in {orig_dir})")
        config = read_organism_config(orig_dir)
        self.organism_meta: dict[str, Any] = config["meta"]
        self.n_layers = int(config["architecture"]["n_layers"])
        self.seed = int(study.manifest.seed or 0)

    # ---- cheap (planning) --------------------------------------------------------------------------------
    @cached_property
    def base_recipe(self) -> dict[str, Any]:
        """Part of every recipe: what any member's weights depend on besides its own settings."""
        return {"version": RECIPE_VERSION, "original": self.study.fingerprint("original"),
                "samples": self.study.samples_digest()}

    @cached_property
    def organism_recipe(self) -> dict[str, Any]:
        return dict(self.organism_meta.get("config") or {})

    def retrain_steps(self) -> int:
        from analysis.organism.train import OrganismConfig

        return int(self.options.retrain_steps or self.organism_recipe.get("steps") or OrganismConfig.steps)

    def unlearn_steps(self, method: UnlearnMethod | type[UnlearnMethod]) -> int:
        return int(self.options.unlearn_steps or method.defaults["steps"])

    @cached_property
    def forget(self) -> list[Sample]:
        return self.study.forget

    @cached_property
    def retain(self) -> list[Sample]:
        return self.study.retain

    @cached_property
    def utility(self) -> list[Sample]:
        return self.study.samples("utility") if "utility" in self.study.manifest.samples else []

    def reference_seed(self) -> int | None:
        """The seed of the study's reference retrain control (its unlearning log), None when unknown."""
        ref = self.study.manifest.retrain
        if ref is None:
            return None
        log = read_unlearning_log(self.study, ref) or {}
        seed = (log.get("config") or {}).get("seed")
        return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None

    # ---- expensive (building) ---------------------------------------------------------------------------
    @cached_property
    def original(self) -> ModelHandle:
        return self.study.load("original")

    @cached_property
    def corpus(self) -> Corpus:
        """The organism's corpus (rebuilt from its saved recipe), checked to hold the study's samples."""
        meta = self.organism_meta
        seed = meta.get("corpus_seed", self.organism_recipe.get("seed", self.seed))
        n_people = meta.get("n_people", self.organism_recipe.get("n_people"))
        if not isinstance(seed, int) or not isinstance(n_people, int):
            raise AnalysisInputError("the original's organism.json does not say which corpus it was trained on "
                                     "(meta.corpus_seed, meta.n_people): the zoo cannot retrain it")
        corpus = build_corpus(seed=seed, n_people=n_people)
        by_id = {s.id: s for s in corpus.samples}
        for s in self.forget + self.retain:
            c = by_id.get(s.id)
            if c is None or (c.prompt, c.answer) != (s.prompt, s.answer):
                raise AnalysisInputError(f"sample {s.id!r} of the study is not the organism corpus's: the zoo "
                                         "cannot retrain without the forget facts")
        return corpus

    def probe_acc_by_layer(self) -> dict[int, float]:
        """Accuracy of a retain-trained probe decoding the forget answers from the original, per layer
        (``analysis.sae.probe.run_probe`` at ``hooks.resid_post(layer)``). Cached in the manifest
        (``extra["zoo_probe"]``) under the original's fingerprint and the samples' digest."""
        key = {"original": self.base_recipe["original"], "samples": self.base_recipe["samples"]}
        cached = self.study.manifest.extra.get(PROBE_KEY)
        if isinstance(cached, dict) and cached.get("key") == key:
            return {int(k): float(v) for k, v in cached["acc_by_layer"].items()}
        from analysis.sae.probe import run_probe

        res = run_probe(self.original, self.retain, self.forget, list(range(self.n_layers)))
        acc = {int(k): float(v) if v is not None else 0.0 for k, v in res.acc_by_layer.items()}
        self.study.manifest.extra[PROBE_KEY] = {"key": key, "acc_by_layer": {str(k): v for k, v in acc.items()},
                                                "n_eval": res.n_eval, "n_skipped": res.n_skipped,
                                                "hooks": {str(k): resid_post(k) for k in acc}}
        self.study.save_manifest()
        return acc

    def probe_checks(self, layer: int, acc: float | None = None) -> dict[str, Any]:
        """The probe condition at ``layer``: the original's accuracy there, or ``acc`` (another source's)."""
        acc = self.probe_acc_by_layer()[layer] if acc is None else acc
        return {"probe_layer": layer, "probe_hook": resid_post(layer), "probe_acc": acc,
                "probe_threshold": self.options.probe_threshold, "probe_passes": acc >= self.options.probe_threshold}

    @cached_property
    def original_metrics(self) -> dict[str, Any]:
        return dict(model_scores(self.study, "original")["metrics"])

    def metrics(self, handle: ModelHandle) -> dict[str, Any]:
        """Output accuracies of an in-memory model (the scoreboard's one batched pass)."""
        sc = score_model(handle, self.forget, self.retain, self.utility, self.forget + self.retain)
        m = sc["metrics"]
        return {"forget_acc": m["forget_acc"], "paraphrase_acc": m["paraphrase_acc"], "retain_acc": m["retain_acc"],
                "utility": m["utility"]}

    def hides_and_keeps(self, metrics: dict[str, Any]) -> tuple[bool, str]:
        """Whether a suppression hides the forget answers and keeps retain (the options' bounds), and why not."""
        o = self.options
        base = self.original_metrics["retain_acc"]
        if metrics["forget_acc"] > o.max_forget_acc:
            return False, (f"it still gives {metrics['forget_acc']:.2f} of the forget answers (> {o.max_forget_acc}): "
                           "the knowledge is not hidden")
        if metrics["retain_acc"] < o.min_retain_kept * base:
            return False, (f"retain accuracy fell to {metrics['retain_acc']:.2f} (< {o.min_retain_kept} x the "
                           f"original's {base:.2f})")
        return True, ""

    def model_dir(self, name: str) -> Path:
        return self.study.root / member_path(name)


# ---- helpers ---------------------------------------------------------------------------------------------


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / WEIGHTS))


def changed_tensors(original_dir: Path, model_dir: Path) -> tuple[list[str], list[str]]:
    """(changed, identical) state-dict names between two saved organisms, compared bit for bit."""
    a, b = load_weights(original_dir), load_weights(model_dir)
    if set(a) != set(b):
        raise AnalysisInputError(f"{model_dir} and {original_dir} hold different weights: "
                                 f"{sorted(set(a) ^ set(b))[:3]}")
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    same = [k for k in a if k not in set(changed)]
    return changed, same


def frozen_checks(ctx: ZooContext, name: str, layer: int, base_dir: Path | None = None) -> dict[str, Any]:
    """Every weight a suppression frozen below ``layer`` must keep is bit-identical to its source's (the
    original's, or ``base_dir``'s: the twin's; from the saved files); raises if not (the construction is broken,
    not the member)."""
    base = base_dir if base_dir is not None else ctx.study.model_path("original")
    changed, _ = changed_tensors(base, ctx.study.model_path(name))
    keys = list(load_weights(base))
    frozen = frozen_names(keys, layer)
    broken = [k for k in frozen if k in set(changed)]
    if broken:
        raise RuntimeError(f"zoo member {name!r}: frozen weights changed: {broken[:5]}")
    return {"frozen_below": layer, "frozen_identical": True, "n_frozen_tensors": len(frozen),
            "changed_tensors": sorted(changed)}


def training_checks(ctx: ZooContext, pairs: list[tuple[str, str]], trained_ids: list[str]) -> dict[str, Any]:
    """What a retrain was trained on, against the forget set: no forget id, prompt or subject."""
    forget_ids = {s.id for s in ctx.forget}
    forget_prompts = {p for s in ctx.forget for p in (s.prompt, *s.metadata.get("train_prompts", []), *s.paraphrases)}
    subjects = {s.subject for s in ctx.forget if s.subject}
    n_ids = len(forget_ids & set(trained_ids))
    n_prompts = sum(1 for p, _ in pairs if p in forget_prompts)
    n_subjects = sum(1 for p, _ in pairs if any(subj in p for subj in subjects))
    return {"n_training_pairs": len(pairs), "n_trained_facts": len(trained_ids), "forget_ids_trained": n_ids,
            "forget_prompts_trained": n_prompts, "forget_subjects_trained": n_subjects,
            "excluded_every_forget_fact": n_ids == 0 and n_prompts == 0 and n_subjects == 0}


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_member(ctx: ZooContext, spec: MemberSpec, handle: ModelHandle, result: UnlearnResult, method: str,
                meta: dict[str, Any] | None = None, files: dict[str, Any] | None = None) -> Path:
    """Save a trained member like the demo saves its models (organism dir + unlearning.json, plus ``files``
    written as JSON beside them), then add it to the study with role ``control``."""
    mdir = ctx.model_dir(spec.name)
    save_organism_dir(handle.model, handle.tokenizer, mdir,
                      meta={**(meta or {}), "unlearning": handle.meta.get("unlearning", {}), "method": method,
                            "zoo": {"kind": spec.kind, "recipe": spec.recipe}})
    for fname, obj in (files or {}).items():
        _write_json_atomic(mdir / fname, obj)
    write_unlearning_log(mdir, result)  # last: its presence marks the directory complete
    ctx.study.add_model(spec.name, member_path(spec.name), "control", method=method)  # relative: the study moves
    return mdir


def member_complete(ctx: ZooContext, spec: MemberSpec) -> bool:
    """Whether a trained member's directory holds everything its build writes."""
    mdir = ctx.model_dir(spec.name)
    need = [ORGANISM_CONFIG, WEIGHTS, LOG_FILE, *([TRAINING_FILE] if spec.kind == "retrain" else [])]
    if spec.kind == "twin" and not (ctx.model_dir(spec.name + TWIN_BASE_SUFFIX) / WEIGHTS).is_file():
        return False
    return all((mdir / f).is_file() for f in need)


def _member(spec: MemberSpec, status: str, checks: dict[str, Any], ctx: ZooContext, reason: str = "") -> ZooMember:
    has_model = status != "excluded" and spec.name in ctx.study.manifest.models
    return ZooMember(name=spec.name, status=status, recipe=spec.recipe, checks=checks, reason=reason,
                     fingerprint=ctx.study.fingerprint(spec.name) if has_model else "")


def _n_source(ctx: ZooContext, spec: MemberSpec) -> tuple[ZooMember | None, ZooMember]:
    """The recorded N member a recipe builds from (``spec.recipe["source"]``), or (None, the member excluded
    with the reason)."""
    from analysis.zoo.result import recorded_members

    name = spec.recipe["source"]
    source = recorded_members(ctx.study).get(name)
    excluded = _member(spec, "excluded", {"source": name}, ctx, f"its source {name!r} is not an N member of the zoo")
    return (source, excluded) if source is not None and source.status == "absent" else (None, excluded)


SubProgress = Callable[[float, str], None]


# ---- the recipes -----------------------------------------------------------------------------------------


class MemberRecipe:
    """One member kind: ``plan`` names its members and their recipes; ``build`` trains and checks one."""

    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""
    status: ClassVar[str] = ""
    weight: ClassVar[float] = 0.2  # share of build time relative to a retrain (one progress bar)

    def plan(self, ctx: ZooContext) -> list[MemberSpec]:
        raise NotImplementedError

    def build(self, ctx: ZooContext, spec: MemberSpec, progress: SubProgress) -> ZooMember:
        raise NotImplementedError


MEMBER_KINDS: Registry[type[MemberRecipe]] = Registry("zoo member kind")


def member_kind(kind: str) -> Callable[[type[MemberRecipe]], type[MemberRecipe]]:
    def deco(cls: type[MemberRecipe]) -> type[MemberRecipe]:
        cls.kind = kind
        cls.label = MEMBER_KIND_LABELS[kind]  # type: ignore[index]
        cls.status = MEMBER_STATUS[kind]  # type: ignore[index]
        MEMBER_KINDS.register(kind, label=cls.label)(cls)
        return cls

    return deco


def retrain_name(i: int) -> str:
    return f"{PREFIX}retrain_{i + 1}"


@member_kind("retrain")
class RetrainRecipe(MemberRecipe):
    weight = 1.0

    def plan(self, ctx: ZooContext) -> list[MemberSpec]:
        seeds = [ctx.seed + off for off in ctx.options.retrain_seed_offsets]
        ref = ctx.reference_seed()
        if ref is not None and ref in seeds:
            raise AnalysisInputError(f"a zoo retrain would reuse the reference retrain's seed {ref}: choose other "
                                     "retrain_seed_offsets")
        return [MemberSpec(retrain_name(i), self.kind,
                           {"kind": self.kind, **ctx.base_recipe, "method": "retrain", "seed": s,
                            "retrain_steps": ctx.retrain_steps()})
                for i, s in enumerate(seeds)]

    def build(self, ctx: ZooContext, spec: MemberSpec, progress: SubProgress) -> ZooMember:
        r = spec.recipe
        cfg = UnlearnConfig(seed=r["seed"], retrain_steps=r["retrain_steps"])
        handle, result = run_unlearning(ctx.original, "retrain", ctx.forget, ctx.retain, cfg, corpus=ctx.corpus,
                                        progress=progress)
        exclude = set(result.extra["exclude_ids"])
        trained_ids = [s.id for s in ctx.corpus.samples if s.id not in exclude]
        pairs = [tuple(p) for p in result.extra["training_pairs"]]
        checks = training_checks(ctx, pairs, trained_ids)  # type: ignore[arg-type]
        if not checks["excluded_every_forget_fact"]:
            raise RuntimeError(f"zoo member {spec.name!r} was trained on forget facts: {checks}")
        ref_seed = ctx.reference_seed()
        checks.update(seed=r["seed"], reference=ctx.study.manifest.retrain, reference_seed=ref_seed,
                      seed_differs=ref_seed is None or ref_seed != r["seed"])
        ocfg = result.extra["organism_config"]
        save_member(ctx, spec, handle, result, "retrain",
                    meta={"config": ocfg, "report": result.extra.get("train_report", {}),
                          "corpus_seed": ctx.corpus.seed, "n_people": len(ctx.corpus.people)},
                    files={TRAINING_FILE: {"trained_ids": trained_ids, "exclude_ids": sorted(exclude),
                                           "training_pairs": [list(p) for p in pairs]}})
        checks.update(model_scores(ctx.study, spec.name)["metrics"])
        base = ctx.original_metrics["retain_acc"]
        if checks["retain_acc"] < ctx.options.min_retain_kept * base:
            return _member(spec, "excluded", checks, ctx,
                           f"undertrained: retain accuracy {checks['retain_acc']:.2f} < {ctx.options.min_retain_kept}"
                           f" x the original's {base:.2f}")
        return _member(spec, self.status, checks, ctx)


@member_kind("retrain_unlearned")
class RetrainUnlearnedRecipe(MemberRecipe):
    def plan(self, ctx: ZooContext) -> list[MemberSpec]:
        seeds = [ctx.seed + off for off in ctx.options.retrain_seed_offsets]
        out = []
        for i, method in enumerate(ctx.options.unlearn_methods):
            cls = UNLEARNING_METHODS.get(method)
            out.append(MemberSpec(f"{retrain_name(i)}_{method}", self.kind,
                                  {"kind": self.kind, **ctx.base_recipe, "source": retrain_name(i),
                                   "source_seed": seeds[i], "method": method, "seed": ctx.seed,
                                   "steps": ctx.unlearn_steps(cls)}))
        return out

    def build(self, ctx: ZooContext, spec: MemberSpec, progress: SubProgress) -> ZooMember:
        r = spec.recipe
        source, excluded = _n_source(ctx, spec)
        if source is None:
            return excluded
        cfg = UnlearnConfig(seed=r["seed"], steps=r["steps"])
        handle, result = run_unlearning(ctx.study.load(r["source"]), r["method"], ctx.forget, ctx.retain, cfg,
                                        progress=progress)
        save_member(ctx, spec, handle, result, r["method"])
        checks: dict[str, Any] = {"source": r["source"], "source_status": source.status,
                                  "source_excluded_every_forget_fact":
                                      bool(source.checks.get("excluded_every_forget_fact")),
                                  "source_forget_acc": source.checks.get("forget_acc")}
        checks.update(model_scores(ctx.study, spec.name)["metrics"])
        return _member(spec, self.status, checks, ctx)


def _suppression_member(ctx: ZooContext, spec: MemberSpec, method: UnlearnMethod, progress: SubProgress,
                        extra_checks: Callable[[ModelHandle], dict[str, Any]] | None = None,
                        source: ModelHandle | None = None, probe: dict[str, Any] | None = None,
                        base_dir: Path | None = None) -> ZooMember:
    """Train a P member frozen below ``spec.recipe["layer"]`` (unless the probe fails), check it and save it.
    ``source`` (default: the original) is the model it starts from, ``probe`` its probe checks at ``layer - 1``
    (default: the original's) and ``base_dir`` where the source's weights are saved (the frozen check)."""
    layer = int(spec.recipe["layer"])
    checks = dict(probe) if probe is not None else ctx.probe_checks(layer - 1)
    if not checks["probe_passes"]:
        whose = "the original" if source is None else "its source"
        return _member(spec, "excluded", checks, ctx,
                       f"a retain-trained probe decodes only {checks['probe_acc']:.2f} of the forget answers from "
                       f"{whose} at {checks['probe_hook']} (< {ctx.options.probe_threshold}): the knowledge is "
                       f"not shown to be below layer {layer}")
    cfg = UnlearnConfig(seed=int(spec.recipe["seed"]), steps=int(spec.recipe["steps"]))
    # As the demo's readout control, the retain term covers the general-ability set too: only forget changes.
    handle, result = run_method(source if source is not None else ctx.original, method, ctx.forget,
                                ctx.retain + ctx.utility, cfg, progress=progress)
    metrics = ctx.metrics(handle)
    checks.update(metrics)
    if extra_checks is not None:
        checks.update(extra_checks(handle))
    checks.update(original_forget_acc=ctx.original_metrics["forget_acc"],
                  original_retain_acc=ctx.original_metrics["retain_acc"])
    ok, why = ctx.hides_and_keeps(metrics)
    if not ok:
        return _member(spec, "excluded", checks, ctx, why)
    save_member(ctx, spec, handle, result, method.name)
    checks.update(frozen_checks(ctx, spec.name, layer, base_dir))
    return _member(spec, "present", checks, ctx)


@member_kind("readout")
class ReadoutRecipe(MemberRecipe):
    def plan(self, ctx: ZooContext) -> list[MemberSpec]:
        n = ctx.n_layers
        entry = ctx.study.manifest.models.get(READOUT_MODEL)
        if entry is not None and entry.method == READOUT_MODEL:
            return [MemberSpec(READOUT_MODEL, self.kind,
                               {"kind": self.kind, **ctx.base_recipe, "model": READOUT_MODEL,
                                "model_fingerprint": ctx.study.fingerprint(READOUT_MODEL), "layer": n})]
        cls = UNLEARNING_METHODS.get(READOUT_MODEL)
        return [MemberSpec(f"{PREFIX}readout", self.kind,
                           {"kind": self.kind, **ctx.base_recipe, "method": READOUT_MODEL, "seed": ctx.seed,
                            "steps": ctx.unlearn_steps(cls), "layer": n})]

    def build(self, ctx: ZooContext, spec: MemberSpec, progress: SubProgress) -> ZooMember:
        n = ctx.n_layers
        if "model" not in spec.recipe:  # the study has no readout control: train one
            from analysis.unlearning import get_method

            return _suppression_member(ctx, spec, get_method(READOUT_MODEL), progress)
        checks = ctx.probe_checks(n - 1)
        changed, _ = changed_tensors(ctx.study.model_path("original"), ctx.study.model_path(spec.name))
        outside = [k for k in changed if not is_trained(k, n)]
        if outside:
            raise RuntimeError(f"{spec.name!r} is not readout-only: it changed {outside[:5]}")
        keys = list(load_weights(ctx.study.model_path("original")))
        checks.update(frozen_below=n, frozen_identical=True, n_frozen_tensors=len(frozen_names(keys, n)),
                      changed_tensors=sorted(changed))
        checks.update(model_scores(ctx.study, spec.name)["metrics"])
        checks.update(original_forget_acc=ctx.original_metrics["forget_acc"],
                      original_retain_acc=ctx.original_metrics["retain_acc"])
        if not checks["probe_passes"]:
            return _member(spec, "excluded", checks, ctx,
                           f"a retain-trained probe decodes only {checks['probe_acc']:.2f} of the forget answers "
                           f"from the original at {checks['probe_hook']} (< {ctx.options.probe_threshold})")
        ok, why = ctx.hides_and_keeps(checks)
        return _member(spec, "present" if ok else "excluded", checks, ctx, why)


@member_kind("depth")
class DepthRecipe(MemberRecipe):
    def plan(self, ctx: ZooContext) -> list[MemberSpec]:
        layers = ctx.options.depth_layers or spread_layers(ctx.n_layers)
        for layer in layers:
            if not 1 <= layer < ctx.n_layers:
                raise AnalysisInputError(f"depth_layers: {layer} is out of range 1..{ctx.n_layers - 1} (layer "
                                         f"{ctx.n_layers} would be the readout-only control)")
        d = DepthSuppression.defaults
        return [MemberSpec(f"{PREFIX}depth{layer}{DEPTH_LOSS_SUFFIX[loss]}", self.kind,
                           {"kind": self.kind, **ctx.base_recipe, "method": DepthSuppression.name, "layer": layer,
                            "loss": loss, "seed": ctx.seed, "steps": ctx.unlearn_steps(DepthSuppression),
                            "lr": d["lr"], "retain_weight": d["retain_weight"]})
                for layer in sorted(dict.fromkeys(layers)) for loss in ctx.options.depth_losses]

    def build(self, ctx: ZooContext, spec: MemberSpec, progress: SubProgress) -> ZooMember:
        r = spec.recipe
        return _suppression_member(ctx, spec, DepthSuppression(int(r["layer"]), r["loss"]), progress)


def middle_layer(ctx: ZooContext) -> tuple[int, str]:
    """L of the decoy and the mimic, and why: the option, else the middle layer, else the layer nearest to it
    whose probe passes (a member frozen where the probe fails would only be excluded)."""
    if ctx.options.decoy_layer is not None:
        if not 1 <= ctx.options.decoy_layer < ctx.n_layers:
            raise AnalysisInputError(f"decoy_layer: {ctx.options.decoy_layer} is out of range 1..{ctx.n_layers - 1}")
        return ctx.options.decoy_layer, "set by the options"
    middle = max(1, ctx.n_layers // 2)
    acc = ctx.probe_acc_by_layer()
    passing = [L for L in range(1, ctx.n_layers) if acc[L - 1] >= ctx.options.probe_threshold]
    if not passing or middle in passing:
        return middle, "the middle layer"
    best = min(passing, key=lambda L: (abs(L - middle), -L))
    return best, (f"the layer nearest the middle ({middle}) whose probe passes (the original decodes "
                  f"{acc[middle - 1]:.2f} < {ctx.options.probe_threshold} at layer {middle - 1})")


@member_kind("decoy")
class DecoyRecipe(MemberRecipe):
    def plan(self, ctx: ZooContext) -> list[MemberSpec]:
        layer, why = middle_layer(ctx)
        d = DepthDecoy.defaults
        return [MemberSpec(f"{PREFIX}decoy", self.kind,
                           {"kind": self.kind, **ctx.base_recipe, "method": DepthDecoy.name, "layer": layer,
                            "layer_rule": why, "seed": ctx.seed, "steps": ctx.unlearn_steps(DepthDecoy),
                            "lr": d["lr"], "retain_weight": d["retain_weight"]})]

    def build(self, ctx: ZooContext, spec: MemberSpec, progress: SubProgress) -> ZooMember:
        r = spec.recipe
        decoys = decoy_answers(ctx.forget, ctx.forget + ctx.retain, int(r["seed"]))
        return _suppression_member(ctx, spec, DepthDecoy(int(r["layer"]), decoys), progress,
                                   _decoy_checks(ctx, decoys))


def _decoy_checks(ctx: ZooContext, decoys: list[str]) -> Callable[[ModelHandle], dict[str, Any]]:
    def checks(handle: ModelHandle) -> dict[str, Any]:
        sc = score_answers(handle, [s.prompt for s in ctx.forget], decoys)
        return {"decoy_acc": float(sc.correct.mean()),
                "decoys": dict(zip([s.id for s in ctx.forget], decoys, strict=True))}

    return checks


@member_kind("mimic")
class MimicRecipe(MemberRecipe):
    """Frozen below the decoy's L, trained to answer each forget prompt as the last zoo retrain does (its
    top-scoring value of the relation): a P member whose outputs look like an N member's, forget accuracy at
    chance included, the hardest case for output-level signals."""

    def plan(self, ctx: ZooContext) -> list[MemberSpec]:
        layer, why = middle_layer(ctx)
        d = DepthDecoy.defaults
        source = retrain_name(len(ctx.options.retrain_seed_offsets) - 1)
        return [MemberSpec(f"{PREFIX}mimic", self.kind,
                           {"kind": self.kind, **ctx.base_recipe, "method": DepthDecoy.name, "layer": layer,
                            "layer_rule": why, "source": source, "seed": ctx.seed,
                            "steps": ctx.unlearn_steps(DepthDecoy), "lr": d["lr"],
                            "retain_weight": d["retain_weight"]})]

    def build(self, ctx: ZooContext, spec: MemberSpec, progress: SubProgress) -> ZooMember:
        r = spec.recipe
        source, excluded = _n_source(ctx, spec)
        if source is None:
            return excluded
        answers = guessed_answers(ctx.study.load(r["source"]), ctx.forget, ctx.forget + ctx.retain)
        member = _suppression_member(ctx, spec, DepthDecoy(int(r["layer"]), answers, lower_true=False), progress,
                                     _decoy_checks(ctx, answers))
        member.checks.update(source=r["source"], source_forget_acc=source.checks.get("forget_acc"),
                             source_guess_acc=sum(a == s.answer for a, s in zip(answers, ctx.forget, strict=True))
                             / len(ctx.forget))
        return member




@member_kind("twin")
class TwinRecipe(MemberRecipe):
    """A second original, trained from scratch on every fact (the original's organism recipe, its own seed),
    then suppressed like ``zoo_depth{L}`` (NPO, frozen below the decoy's L) from itself: knowledge present and
    hidden, in a residual basis that is not the original's. It tells a signal that reads the knowledge from one
    that reads "shares the original's weights" (patching into the original or reading through its unembedding
    can call it absent). P only if the twin recalls the forget facts and its own retain-trained probe decodes
    them at layer L - 1."""

    weight = 1.2

    def plan(self, ctx: ZooContext) -> list[MemberSpec]:
        if not ctx.options.twin_seed_offset:
            return []
        layer, why = middle_layer(ctx)
        d = DepthSuppression.defaults
        return [MemberSpec(f"{PREFIX}twin", self.kind,
                           {"kind": self.kind, **ctx.base_recipe, "method": DepthSuppression.name, "layer": layer,
                            "layer_rule": why, "loss": "npo", "twin_seed": ctx.seed + ctx.options.twin_seed_offset,
                            "twin_steps": ctx.retrain_steps(), "seed": ctx.seed,
                            "steps": ctx.unlearn_steps(DepthSuppression), "lr": d["lr"],
                            "retain_weight": d["retain_weight"]})]

    def build(self, ctx: ZooContext, spec: MemberSpec, progress: SubProgress) -> ZooMember:
        import dataclasses

        from analysis.organism.train import OrganismConfig, train_organism
        from analysis.sae.probe import run_probe

        r = spec.recipe
        layer = int(r["layer"])
        known = {f.name for f in dataclasses.fields(OrganismConfig)}
        recipe = {k: v for k, v in ctx.organism_recipe.items() if k in known and k != "device"}
        recipe.update(seed=int(r["twin_seed"]), steps=int(r["twin_steps"]), exclude_ids=[],
                      n_people=len(ctx.corpus.people))
        base_dir = ctx.model_dir(spec.name + TWIN_BASE_SUFFIX)
        twin, report = train_organism(OrganismConfig(**recipe), out=base_dir, corpus=ctx.corpus,
                                      progress=lambda f, m: progress(0.6 * f, f"twin original: {m}"))
        twin_metrics = ctx.metrics(twin)
        res = run_probe(twin, ctx.retain, ctx.forget, [layer - 1])
        acc = float(res.acc_by_layer[layer - 1] or 0.0)
        probe = {**ctx.probe_checks(layer - 1, acc), "probe_of": "the twin original", "twin_seed": int(r["twin_seed"]),
                 "twin_forget_acc": twin_metrics["forget_acc"], "twin_retain_acc": twin_metrics["retain_acc"]}
        if twin_metrics["forget_acc"] < ctx.options.min_retain_kept * ctx.original_metrics["forget_acc"]:
            return _member(spec, "excluded", probe, ctx,
                           f"the twin original recalls only {twin_metrics['forget_acc']:.2f} of the forget facts")
        return _suppression_member(ctx, spec, DepthSuppression(layer, "npo"),
                                   lambda f, m: progress(0.6 + 0.4 * f, m), source=twin, probe=probe,
                                   base_dir=base_dir)


def plan_members(ctx: ZooContext) -> list[MemberSpec]:
    """Every member of the zoo, in build order (N first: the unlearned retrains need their sources)."""
    specs = [spec for kind in MEMBER_KINDS for spec in MEMBER_KINDS.get(kind)().plan(ctx)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise AnalysisInputError(f"the zoo's plan names a member twice: {names}")
    clash = [s.name for s in specs if s.kind != "readout" and s.name in ctx.study.manifest.models
             and Path(ctx.study.entry(s.name).path) != member_path(s.name)]
    if clash:
        raise AnalysisInputError(f"the study already has models named {clash} that the zoo did not build")
    return specs


__all__ = ["MEMBER_KINDS", "MemberRecipe", "MemberSpec", "ZooContext", "changed_tensors", "frozen_checks",
           "member_complete", "plan_members", "training_checks"]
