"""The zoo of the real-model study: the members of ``analysis.zoo`` that make sense on a pretrained checkpoint,
built with the recipes `erasure unlearn` exposes (``analysis.unlearn.unlearn_checkpoint``) and recorded like the
organism's zoo (``manifest.extra["zoo"]``: ``analysis.zoo.ZooMember`` records, read by ``zoo_members`` and the
meta-evaluation).

==================  ========  ===================================================================================
member              status    recipe and the checks that show the status by construction
==================  ========  ===================================================================================
zoo_retrain_<i>     absent    the base fine-tuned on the retain facts only (the retrain control's recipe, another
                              seed). Checks: its training rows hold no forget id, prompt or subject; its seed is
                              not the reference's; it keeps >= ``MIN_RETAIN_KEPT`` of the original's retain
                              accuracy (else excluded: undertrained).
zoo_retrain_<i>_<m> absent    "never knew, then unlearned": zoo_retrain_<i> put through method m (pretrained
                              preset). Check: its source is an N member.
zoo_readout[_<i>]   present   the readout control's method (readout_suppression) at ``zoo_readout_lr`` 1e-3 with
                              the retain term at weight 5, one member per seed offset (``zoo_readout_seeds``; on
                              SmolLM2 the preset's 1e-4 hides nothing, 3e-4 little, 1e-3 at weight 1 costs retain). Checks: only the readout changed (the final
                              norm and the unembedding), the forget answers are decodable from the original's last
                              layer (below), it hides them and keeps retain.
zoo_depth<L>        present   depth-limited suppression: every weight below layer L the original's (embeddings
                              and blocks 0..L-1 bit-identical in the saved files), blocks >= L and the readout
                              trained (NPO + retain NLL). Checks: decodable at L - 1, hides and keeps.
==================  ========  ===================================================================================

"Decodable at layer l" (a P member's premise: the states it kept hold the answers): a retain-trained linear probe
(the organism's check, ``analysis.sae.probe``) OR the original's own readout (the logit lens at l,
``lens_checks``) gets >= ``PROBE_THRESHOLD`` of the forget answers from the original's residual stream after block
l. The second is a departure from the organism's zoo, made because the probe is too weak on a real model: on
SmolLM2 it decodes 0.25 at layer 14 and 0.5 at the last layer, where the original's own readout decodes all.

Not built on a real model (``NOT_BUILT`` says why, and the study records it): the decoy and the mimic (their
recipe, ``analysis.zoo.suppression.DepthDecoy``, trains organisms only and `erasure unlearn` does not expose it)
and the twin (an original of another seed trained from scratch: here every original is fine-tuned from the same
pretrained base, so a "twin" would share the original's residual basis, which is what the twin exists to avoid).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.data.schema import Sample
from analysis.hooks import resid_post
from analysis.store import ProgressFn
from analysis.study import Study
from analysis.unlearn.options import UnlearnRunOptions
from analysis.zoo.options import MAX_FORGET_ACC, MIN_RETAIN_KEPT, PROBE_THRESHOLD
from analysis.zoo.result import ZooMember

NOT_BUILT: dict[str, str] = {
    "decoy": "its recipe (DepthDecoy: forget prompts redirected to another answer) trains organisms only; "
             "`erasure unlearn` does not expose it",
    "mimic": "its recipe (DepthDecoy trained on a zoo retrain's guesses) trains organisms only; `erasure unlearn` "
             "does not expose it",
    "twin": "a twin is an original trained from scratch with another seed, so that the knowledge sits in another "
            "residual basis; every original here is fine-tuned from the same pretrained base and would share "
            "its basis",
}
READOUT_METHOD = "readout_suppression"
READOUT_MODEL = "zoo_readout"  # its own model: the study's readout control is trained with the preset's rate
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_EMBED = re.compile(r"embed|wte|wpe|word_embeddings")


@dataclass(frozen=True)
class RealMember:
    """A planned member: its name, kind, the source model it is trained from (a study model name; the base for a
    retrain), the `erasure unlearn` options, the sample sets, and its recipe (what decides its weights)."""

    name: str
    kind: str
    source: str
    run: UnlearnRunOptions
    retain_rows: str  # "retain" (the study's retain split) or "train" (the fine-tune's retain training rows)
    recipe: dict[str, Any] = field(default_factory=dict)


def tensor_group(name: str) -> int | str:
    """Where an HF state-dict tensor sits: its block index, ``"embed"`` (below every block) or ``"readout"``
    (above every block: the final norm and the unembedding)."""
    m = _LAYER.search(name)
    if m:
        return int(m.group(1))
    return "embed" if _EMBED.search(name) else "readout"


def load_tensors(model_dir: Path) -> dict[str, Any]:
    """Every tensor of a checkpoint directory's safetensors files, by name."""
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def changed_hf_tensors(original_dir: Path, model_dir: Path) -> tuple[list[str], list[str]]:
    """(changed, identical) tensor names between two saved checkpoints, compared bit for bit. A tensor only one
    of them has (e.g. an unembedding untied on export) counts as changed."""
    import torch

    a, b = load_tensors(original_dir), load_tensors(model_dir)
    changed = sorted(k for k in set(a) | set(b) if k not in a or k not in b or not torch.equal(a[k], b[k]))
    return changed, sorted(k for k in set(a) & set(b) if k not in set(changed))


def frozen_below(original_dir: Path, model_dir: Path, layer: int) -> dict[str, Any]:
    """The depth construction's check from the saved files: every tensor below ``layer`` (embeddings, blocks
    0..layer-1) bit-identical to the original's. Raises if not (the construction is broken, not the member)."""
    changed, same = changed_hf_tensors(original_dir, model_dir)
    below = [k for k in changed if tensor_group(k) == "embed" or
             (isinstance(tensor_group(k), int) and int(tensor_group(k)) < layer)]
    if below:
        raise RuntimeError(f"{model_dir.name}: weights below layer {layer} changed: {below[:5]}")
    n_frozen = sum(1 for k in same if tensor_group(k) == "embed" or
                   (isinstance(tensor_group(k), int) and int(tensor_group(k)) < layer))
    return {"frozen_below": layer, "frozen_identical": True, "n_frozen_tensors": n_frozen,
            "changed_tensors": changed}


def training_checks(forget: list[Sample], rows: list[Sample]) -> dict[str, Any]:
    """What a retrain was trained on, against the forget set: no forget id, prompt or subject."""
    ids = {s.id for s in forget}
    prompts = {p for s in forget for p in (s.prompt, *s.metadata.get("train_prompts", []), *s.paraphrases)}
    subjects = {s.subject for s in forget if s.subject}
    base_ids = {r.id.split("@t")[0] for r in rows}
    n_ids = len(ids & base_ids)
    n_prompts = sum(1 for r in rows if r.prompt in prompts)
    n_subjects = sum(1 for r in rows if any(subj in r.prompt for subj in subjects))
    return {"n_training_rows": len(rows), "n_trained_facts": len(base_ids), "forget_ids_trained": n_ids,
            "forget_prompts_trained": n_prompts, "forget_subjects_trained": n_subjects,
            "excluded_every_forget_fact": n_ids == 0 and n_prompts == 0 and n_subjects == 0}


def plan_members(opts: Any, n_layers: int, base_recipe: dict[str, Any], base_fp: str,
                 method_run: Callable[[str, int], UnlearnRunOptions], retrain_run: Callable[[int], UnlearnRunOptions]
                 ) -> list[RealMember]:
    """Every member, in build order (N first: the unlearned retrains need their sources). ``method_run(method,
    seed)`` / ``retrain_run(seed)`` give the `erasure unlearn` options the study's own models were built with."""
    seed = int(opts.seed)
    out: list[RealMember] = []
    for i, off in enumerate(opts.zoo_retrain_seeds):
        run = retrain_run(seed + off)
        out.append(RealMember(f"zoo_retrain_{i + 1}", "retrain", "original", run, "train",
                              {"kind": "retrain", **base_recipe, "method": "retrain", "seed": seed + off,
                               "base": base_fp, "steps": run.steps, "lr": run.lr, "batch_size": run.batch_size}))
    for i, method in enumerate(opts.zoo_unlearned):
        run = method_run(method, seed)
        out.append(RealMember(f"zoo_retrain_{i + 1}_{method}", "retrain_unlearned", f"zoo_retrain_{i + 1}", run,
                              "retain", {"kind": "retrain_unlearned", **base_recipe, "source": f"zoo_retrain_{i + 1}",
                                         "method": method, "seed": seed, "steps": run.steps,
                                         "batch_size": run.batch_size}))
    for i, off in enumerate(opts.zoo_readout_seeds):
        run = UnlearnRunOptions(method=READOUT_METHOD, preset="pretrained", seed=seed + off, lr=opts.zoo_readout_lr,
                                steps=opts.zoo_readout_steps or opts.method_steps, batch_size=opts.method_batch,
                                retain_weight=opts.zoo_readout_retain_weight)
        out.append(RealMember(READOUT_MODEL + (f"_{i + 1}" if i else ""), "readout", "original", run, "retain",
                              {"kind": "readout", **base_recipe, "method": READOUT_METHOD, "layer": n_layers,
                               "seed": seed + off, "steps": run.steps, "lr": run.lr, "batch_size": run.batch_size,
                               "retain_weight": run.retain_weight}))
    layers = opts.zoo_depth_layers or depth_layers(n_layers)
    for layer in layers:
        if not 1 <= layer < n_layers:
            raise ValueError(f"zoo_depth_layers: {layer} is out of range 1..{n_layers - 1}")
        run = UnlearnRunOptions(method="depth_suppression", preset="pretrained", layer=layer, seed=seed,
                                lr=opts.zoo_depth_lr, steps=opts.zoo_depth_steps or opts.method_steps,
                                batch_size=opts.method_batch)
        out.append(RealMember(f"zoo_depth{layer}", "depth", "original", run, "retain",
                              {"kind": "depth", **base_recipe, "method": "depth_suppression", "layer": layer,
                               "loss": "npo", "seed": seed, "steps": run.steps, "lr": run.lr,
                               "batch_size": run.batch_size}))
    return out


def depth_layers(n_layers: int) -> tuple[int, ...]:
    """A late and the last-but-one layer: 3n/4 and n-2 (22 and 28 of SmolLM2's 30). Not the middle one: on
    SmolLM2 neither the probe (0.25) nor the original's own readout decodes the forget answers after block 14, so a
    member frozen below 15 is not known to hold them (it was built once and excluded; docs/REAL_MODEL.md)."""
    picks = {min(n_layers - 1, max(1, round(n_layers * 3 / 4))), max(1, n_layers - 2)}
    return tuple(sorted(picks))


class ProbeCache:
    """The original's retain-trained probe accuracy at the layers the P members need (``analysis.sae.probe``),
    computed once per build and kept in the manifest under the original's fingerprint and the samples' digest."""

    def __init__(self, study: Study, record: dict[str, Any]) -> None:
        self.study, self.record = study, record

    def acc(self, layers: list[int]) -> dict[int, float]:
        key = {"original": self.study.fingerprint("original"), "samples": self.study.samples_digest()}
        cached = self.record.get("probe") or {}
        acc = {int(k): float(v) for k, v in (cached.get("acc_by_layer") or {}).items()} \
            if cached.get("key") == key else {}
        todo = [layer for layer in layers if layer not in acc]
        if todo:
            from analysis.sae.probe import run_probe

            res = run_probe(self.study.load("original"), self.study.retain, self.study.forget, todo)
            acc.update({int(k): float(v) if v is not None else 0.0 for k, v in res.acc_by_layer.items()})
            self.record["probe"] = {"key": key, "acc_by_layer": {str(k): v for k, v in sorted(acc.items())},
                                    "hooks": {str(k): resid_post(k) for k in sorted(acc)}}
        return acc

    def checks(self, layer: int) -> dict[str, Any]:
        acc = self.acc([layer])[layer]
        return {"probe_layer": layer, "probe_hook": resid_post(layer), "probe_acc": acc,
                "probe_threshold": PROBE_THRESHOLD, "probe_passes": acc >= PROBE_THRESHOLD}


def lens_checks(study: Study, layer: int) -> dict[str, Any]:
    """The original's OWN readout (final norm and unembedding, i.e. the logit lens, ``analysis.logit_lens``) on its
    residual stream after block ``layer``: the share of forget answers whose every token it ranks first. At the
    last layer that is the original's forget accuracy; below it, a decoder the original already has. Used beside
    the retain-trained probe (the organism's check): on SmolLM2 a linear probe fitted on 144 retain facts over
    hundreds of answer classes decodes only 0.5 of the forget answers even from the last layer, from which the
    original's own readout decodes all of them."""
    import numpy as np

    from analysis.logit_lens.runner import lens_result

    res = lens_result(study, "original")
    idx = res.layers.index(layer)
    acc = float(np.mean(res.array("mean_rank")[:, idx] <= 1.0))
    return {"lens_layer": layer, "lens_hook": resid_post(layer), "lens_acc": acc,
            "lens_passes": acc >= PROBE_THRESHOLD}


def hides_and_keeps(metrics: dict[str, Any], original_retain: float) -> tuple[bool, str]:
    """The zoo's bounds (``analysis.zoo.options``): forget accuracy <= MAX_FORGET_ACC, retain accuracy >=
    MIN_RETAIN_KEPT x the original's."""
    if metrics["forget_acc"] > MAX_FORGET_ACC:
        return False, (f"it still gives {metrics['forget_acc']:.2f} of the forget answers (> {MAX_FORGET_ACC}): "
                       "the knowledge is not hidden")
    if metrics["retain_acc"] < MIN_RETAIN_KEPT * original_retain:
        return False, (f"retain accuracy fell to {metrics['retain_acc']:.2f} (< {MIN_RETAIN_KEPT} x the original's "
                       f"{original_retain:.2f})")
    return True, ""


def judge(study: Study, member: RealMember, run: dict[str, Any], probe: ProbeCache, forget: list[Sample],
          train_rows: list[Sample], reference_seed: int | None, original: dict[str, float],
          recorded: dict[str, ZooMember]) -> ZooMember:
    """The member's record: its status (present / absent, or excluded with the reason) and the checks that show
    it, from the run's record (``unlearn_run.json``: forget and retain accuracy after) and the saved files."""
    after = run.get("after") or {}
    metrics = {"forget_acc": float(after["forget"]["accuracy"]), "retain_acc": float(after["retain"]["accuracy"])}
    checks: dict[str, Any] = {**metrics, "original_forget_acc": original["forget_acc"],
                              "original_retain_acc": original["retain_acc"], "run_seconds": run.get("seconds")}
    status, reason = ("absent" if member.kind in ("retrain", "retrain_unlearned") else "present"), ""
    if member.kind == "retrain":
        checks.update(training_checks(forget, train_rows))
        if not checks["excluded_every_forget_fact"]:
            raise RuntimeError(f"zoo member {member.name!r} was trained on forget facts: {checks}")
        checks.update(seed=member.recipe["seed"], reference=study.manifest.retrain, reference_seed=reference_seed,
                      seed_differs=reference_seed != member.recipe["seed"])
        if metrics["retain_acc"] < MIN_RETAIN_KEPT * original["retain_acc"]:
            status, reason = "excluded", (f"undertrained: retain accuracy {metrics['retain_acc']:.2f} < "
                                          f"{MIN_RETAIN_KEPT} x the original's {original['retain_acc']:.2f}")
    elif member.kind == "retrain_unlearned":
        src = recorded.get(member.source)
        checks.update(source=member.source, source_status=src.status if src else None)
        if src is None or src.status != "absent":
            status, reason = "excluded", f"its source {member.source!r} is not an N member of the zoo"
    else:
        layer = int(member.recipe.get("layer") or 0)
        orig_dir, mdir = study.model_path("original"), study.model_path(member.name)
        if member.kind == "readout":
            changed, _ = changed_hf_tensors(orig_dir, mdir)
            outside = [k for k in changed if tensor_group(k) != "readout"]
            if outside:
                raise RuntimeError(f"{member.name!r} is not readout-only: it changed {outside[:5]}")
            checks.update(frozen_below=layer, frozen_identical=True, changed_tensors=changed)
        else:
            checks.update(frozen_below(orig_dir, mdir, layer))
        checks.update(probe.checks(layer - 1))
        checks.update(lens_checks(study, layer - 1))
        checks["decodable"] = bool(checks["probe_passes"] or checks["lens_passes"])
        ok, why = hides_and_keeps(metrics, original["retain_acc"])
        if not checks["decodable"]:
            status, reason = "excluded", (f"neither a retain-trained probe ({checks['probe_acc']:.2f}) nor the "
                                          f"original's own readout ({checks['lens_acc']:.2f}) decodes >= "
                                          f"{PROBE_THRESHOLD} of the forget answers from the original at "
                                          f"{checks['probe_hook']}")
        elif not ok:
            status, reason = "excluded", why
    fp = study.fingerprint(member.name) if member.name in study.manifest.models else ""
    return ZooMember(name=member.name, status=status, recipe=member.recipe, checks=checks, reason=reason,
                     fingerprint=fp)


def zoo_progress(progress: ProgressFn | None, i: int, n: int, name: str) -> ProgressFn:
    """Member ``i`` of ``n``'s share of the stage's progress."""
    def report(frac: float, msg: str) -> None:
        if progress is not None:
            progress((i + max(0.0, min(1.0, frac))) / max(1, n), f"{name}: {msg}")

    return report


__all__ = ["NOT_BUILT", "ProbeCache", "RealMember", "changed_hf_tensors", "depth_layers", "frozen_below", "judge",
           "plan_members", "tensor_group", "training_checks", "zoo_progress"]
