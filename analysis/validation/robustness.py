"""Robustness of a signal (UDS-style): how far each zoo member's score moves when the member's weights are
perturbed in ways that should not change what it knows.

Two variants of every zoo member, each saved as a model of the study so that every signal reads it by name:

- **quantised** (:func:`quantise_weights`): 8-bit weight quantisation, simulated. Every weight *matrix* (every
  parameter with two or more dimensions: embeddings, unembedding, attention and MLP weights) is round-tripped
  through per-tensor symmetric integers: ``scale = max|W| / (2**(bits-1) - 1)``, ``q = clamp(round(W / scale),
  -qmax, qmax)``, ``W' = q * scale``, dequantised back to float32. Each weight moves by at most half a step
  (``scale / 2``). Biases and LayerNorm gains stay in float (as int8 inference keeps them).
- **finetuned** (:func:`benign_finetune`): a short benign fine-tune: a few Adam steps (seeded batch order,
  deterministic kernels) on the answer NLL of the study's retain (or utility) samples, every weight trained.

Variants are recorded in ``study.manifest.extra["zoo_variants"]`` (name -> the member, the kind, the recipe and
the member's fingerprint when it was built) and are never zoo members. A variant whose record matches the
recipe and the member's current fingerprint is reused.

The scores (:func:`robustness`): R = 1 - mean over members of |score(finetuned) - score(member)|,
Q = 1 - mean |score(quantised) - score(member)|, and H their harmonic mean (UDS reports the same three;
its scores lie in [0, 1], and so do most signals here; a signal on a wider scale can give R or Q below 0,
and H is then 0).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from analysis.determinism import deterministic
from analysis.errors import AnalysisInputError
from analysis.names import is_safe_name
from analysis.validation.options import ValidationOptions, VariantKind, recipe_hash

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from analysis.data.schema import Sample
    from analysis.models.handle import ModelHandle
    from analysis.store import ProgressFn
    from analysis.study import Study

VARIANTS_KEY = "zoo_variants"  # study.manifest.extra[VARIANTS_KEY]: variant name -> record
VARIANT_DIR = "variants"  # study.root / "models" / VARIANT_DIR / <variant name>


# ---- quantisation ---------------------------------------------------------------------------------------
def quant_scale(w: torch.Tensor, bits: int) -> float:
    """The step of per-tensor symmetric quantisation of ``w``: max |w| / (2**(bits-1) - 1) (0 for a zero tensor)."""
    qmax = 2 ** (bits - 1) - 1
    return float(w.detach().abs().max()) / qmax if w.numel() else 0.0


def quantise_tensor(w: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """``w`` through symmetric per-tensor integers of ``bits`` bits and back (same dtype and shape)."""
    qmax = 2 ** (bits - 1) - 1
    scale = quant_scale(w, bits)
    if scale == 0.0:
        return w.detach().clone()
    x = w.detach().double()
    return (torch.round(x / scale).clamp(-qmax, qmax) * scale).to(w.dtype)


def is_weight_matrix(name: str, p: torch.Tensor) -> bool:  # noqa: ARG001 - the name documents the rule in callers
    """Every parameter with 2 or more dimensions (TransformerLens keeps attention weights as [heads, d, d_head])."""
    return p.ndim >= 2


@torch.no_grad()
def quantise_weights(model: HookedTransformer, bits: int = 8) -> HookedTransformer:
    """A copy of ``model`` with every weight matrix quantised (``quantise_tensor``); the rest unchanged."""
    out = copy.deepcopy(model)
    for name, p in out.named_parameters():
        if is_weight_matrix(name, p):
            p.copy_(quantise_tensor(p, bits))
    return out


# ---- benign fine-tune -------------------------------------------------------------------------------------
def benign_finetune(handle: ModelHandle, samples: Sequence[Sample], steps: int, lr: float, batch_size: int,
                    seed: int) -> HookedTransformer:
    """A copy of ``handle.model`` after ``steps`` Adam steps on the mean answer NLL of ``samples`` (batches drawn
    without replacement from seeded permutations, as the unlearning loop draws them; gradient norm clipped at
    1; deterministic kernels). The original model is not modified."""
    from analysis.scoring import make_batch
    from analysis.unlearning.base import RowSampler, nll, take_rows

    if not samples:
        raise AnalysisInputError("the benign fine-tune has no samples to train on")
    batch = make_batch(handle, [s.prompt for s in samples], [s.answer for s in samples])
    model = copy.deepcopy(handle.model)
    params = list(model.parameters())
    with torch.random.fork_rng(devices=[]), deterministic(), torch.enable_grad():
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        sampler = RowSampler(len(samples), batch_size, gen)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr, weight_decay=0.0)
        model.eval()
        for _ in range(steps):
            rows = take_rows(batch, sampler.next().to(batch.tokens.device))
            loss = nll(model(rows.tokens, return_type="logits"), rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
    for p in params:
        p.requires_grad_(False)
    return model


def finetune_samples(study: Study, split: str) -> list[Sample]:
    if split not in study.manifest.samples:
        raise AnalysisInputError(f"the benign fine-tune trains on the {split} samples, and this study has none")
    return study.samples(split)


# ---- variants as study models ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    name: str
    of: str  # the zoo member
    kind: VariantKind
    recipe: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "of": self.of, "kind": self.kind, "recipe": dict(self.recipe)}


def variant_name(member: str, kind: VariantKind, options: ValidationOptions) -> str:
    """``<member>.q8`` / ``<member>.ft10-<recipe hash>``: a safe model name (the member's name is cut to fit)."""
    if kind == "quantised":
        tail = f".q{options.quant_bits}"
    else:
        tail = f".ft{options.finetune_steps}-{recipe_hash(options.finetune_recipe())}"
    name = member[: 64 - len(tail)] + tail
    if not is_safe_name(name):
        raise AnalysisInputError(f"cannot name a variant of {member!r} safely ({name!r})")
    return name


def recorded_variants(study: Study) -> dict[str, dict[str, Any]]:
    """The variants recorded in the manifest (name -> record)."""
    rec = study.manifest.extra.get(VARIANTS_KEY)
    return dict(rec) if isinstance(rec, dict) else {}


def _reusable(study: Study, v: Variant, member_fp: str) -> bool:
    rec = recorded_variants(study).get(v.name)
    if not isinstance(rec, dict) or v.name not in study.manifest.models:
        return False
    if rec.get("recipe") != v.recipe or rec.get("of") != v.of or rec.get("of_fingerprint") != member_fp:
        return False
    from analysis.models.organism_io import ORGANISM_CONFIG, WEIGHTS

    path = study.model_path(v.name)
    return (path / WEIGHTS).is_file() and (path / ORGANISM_CONFIG).is_file()


def build_variant(study: Study, v: Variant, options: ValidationOptions) -> None:
    """Build ``v`` (quantised or fine-tuned copy of its member), save it under models/variants/ and add it to the
    study (same role as its member), recorded in ``manifest.extra["zoo_variants"]``."""
    from analysis.models.organism_io import save_organism_dir

    member = study.load(v.of)
    if member.fmt != "organism":
        raise AnalysisInputError(f"robustness variants are saved as organism-format models; {v.of!r} is a "
                                 f"{member.fmt!r} checkpoint")
    if v.kind == "quantised":
        model = quantise_weights(member.model, options.quant_bits)
    else:
        model = benign_finetune(member, finetune_samples(study, options.finetune_split), options.finetune_steps,
                                options.finetune_lr, options.finetune_batch, options.seed)
    out = study.root / "models" / VARIANT_DIR / v.name
    save_organism_dir(model, member.tokenizer, out, meta={"variant": v.to_dict()})
    member_fp = study.fingerprint(v.of)
    study.manifest.extra.setdefault(VARIANTS_KEY, {})[v.name] = {**v.to_dict(), "of_fingerprint": member_fp}
    study.add_model(v.name, out, study.entry(v.of).role, method=f"variant:{v.kind}")


def ensure_variants(study: Study, members: Sequence[str], options: ValidationOptions,
                    progress: ProgressFn | None = None) -> dict[str, dict[VariantKind, str]]:
    """Both variants of every member (built when missing or outdated): member -> {kind: variant name}."""
    out: dict[str, dict[VariantKind, str]] = {}
    todo = len(members) * 2
    done = 0
    for m in members:
        fp = study.fingerprint(m)
        out[m] = {}
        for kind, recipe in (("quantised", options.quant_recipe()), ("finetuned", options.finetune_recipe())):
            v = Variant(variant_name(m, kind, options), m, kind, recipe)  # type: ignore[arg-type]
            if not _reusable(study, v, fp):
                if progress is not None:
                    progress(done / todo, f"building the {kind} variant of {m}")
                build_variant(study, v, options)
            out[m][v.kind] = v.name
            done += 1
    if progress is not None:
        progress(1.0, "variants ready")
    return out


# ---- the scores ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Robustness:
    """R (fine-tune), Q (quantisation), H (harmonic mean), the raw mean shifts and how many members had a defined
    score on the member and the variant (``n_ft``, ``n_q``)."""

    r: float | None
    q: float | None
    h: float | None
    shift_ft: float | None
    shift_q: float | None
    n_ft: int
    n_q: int


def _mean_shift(member: Mapping[str, float | None], variant: Mapping[str, float | None]) -> tuple[float | None, int]:
    shifts = [abs(float(variant[m]) - float(v)) for m, v in member.items()  # type: ignore[arg-type]
              if v is not None and variant.get(m) is not None and np.isfinite(float(v))
              and np.isfinite(float(variant[m]))]  # type: ignore[arg-type]
    return (float(np.mean(shifts)) if shifts else None), len(shifts)


def harmonic(r: float | None, q: float | None) -> float | None:
    if r is None or q is None:
        return None
    if r <= 0 or q <= 0:
        return 0.0
    return 2 * r * q / (r + q)


def robustness(member: Mapping[str, float | None], finetuned: Mapping[str, float | None],
               quantised: Mapping[str, float | None]) -> Robustness:
    """R, Q and H of one signal from its scores per member name: on the members, on their fine-tuned variants
    and on their quantised variants (each keyed by the member's name)."""
    shift_ft, n_ft = _mean_shift(member, finetuned)
    shift_q, n_q = _mean_shift(member, quantised)
    r = None if shift_ft is None else 1.0 - shift_ft
    q = None if shift_q is None else 1.0 - shift_q
    return Robustness(r, q, harmonic(r, q), shift_ft, shift_q, n_ft, n_q)
