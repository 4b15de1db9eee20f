"""Expert features: SAE features selective for a forget concept (a forget person, or a relation) against
retain samples, at the last prompt token."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.sae.train import TrainedSAE
from analysis.scoring import make_batch


def person_of(s: Sample) -> str:
    return str(s.metadata.get("person") or s.subject or s.id)


@torch.no_grad()
def last_prompt_acts(handle: ModelHandle, samples: Sequence[Sample], hooks: Sequence[str],
                     stop_at_layer: int | None = None) -> dict[str, torch.Tensor]:
    """{hook: [N, d_model]} residual activations at each sample's last prompt token."""
    if not samples:
        raise AnalysisInputError("no samples")
    batch = make_batch(handle, [s.prompt for s in samples], [s.answer for s in samples])
    _, cache = handle.model.run_with_cache(batch.tokens, names_filter=lambda n: n in set(hooks),
                                           stop_at_layer=stop_at_layer)
    rows = torch.arange(len(samples), device=batch.tokens.device)
    return {h: cache[h][rows, batch.prompt_lens - 1].float().cpu() for h in hooks}


@torch.no_grad()
def sample_features(handle: ModelHandle, trained: TrainedSAE, samples: Sequence[Sample]) -> torch.Tensor:
    """[N, d_sae] SAE feature activations at the last prompt token (the SAE run on ``handle``'s device at its
    hook; the features returned on the CPU, as ``last_prompt_acts`` returns the activations)."""
    acts = last_prompt_acts(handle, samples, [trained.hook], stop_at_layer=trained.layer + 1)[trained.hook]
    here = trained.for_model(handle)
    return here.sae.encode(acts.to(here.device)).cpu()


@dataclass
class ExpertFeature:
    feature: int
    f1: float
    mean_diff: float  # mean activation on the concept's forget samples minus on the negatives
    concept_frac: float  # fraction of retain people the feature fires for (generic if high)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExpertFeatures:
    by_person: dict[str, list[ExpertFeature]]
    by_relation: dict[str, list[ExpertFeature]]
    top_samples: dict[int, list[tuple[str, float]]]  # feature -> [(sample id, activation)] on the original
    options: dict[str, Any]

    def all_features(self) -> list[int]:
        return sorted({f.feature for fs in (*self.by_person.values(), *self.by_relation.values()) for f in fs})

    def for_sample(self, s: Sample) -> list[int]:
        fs = [*self.by_person.get(person_of(s), []), *self.by_relation.get(s.relation, [])]
        return sorted({f.feature for f in fs})

    def to_dict(self) -> dict[str, Any]:
        return {"by_person": {k: [f.to_dict() for f in v] for k, v in self.by_person.items()},
                "by_relation": {k: [f.to_dict() for f in v] for k, v in self.by_relation.items()},
                "top_samples": {str(k): v for k, v in self.top_samples.items()}, "options": self.options}


def _select(pos: torch.Tensor, neg: torch.Tensor, generic: torch.Tensor, concept_frac: torch.Tensor, top: int,
            min_f1: float) -> list[ExpertFeature]:
    """Features ranked by F1 of 'active' for pos vs neg (ties by mean-activation difference)."""
    tp = (pos > 0).float().sum(0)
    fp = (neg > 0).float().sum(0)
    fn = (pos <= 0).float().sum(0)
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1e-9)
    diff = pos.mean(0) - (neg.mean(0) if neg.shape[0] else 0.0)
    score = f1 + 1e-3 * diff / (diff.abs().max() + 1e-9)
    score[generic | (diff <= 0) | (f1 < min_f1)] = -1.0
    order = torch.argsort(score, descending=True)[:top]
    return [ExpertFeature(int(i), float(f1[i]), float(diff[i]), float(concept_frac[i])) for i in order
            if score[i] > 0]


@torch.no_grad()
def find_expert_features(handle: ModelHandle, trained: TrainedSAE, forget: Sequence[Sample],
                         retain: Sequence[Sample], top: int = 8, min_f1: float = 0.3,
                         max_concept_frac: float = 0.2) -> ExpertFeatures:
    """Per forget person and per relation: the ``top`` most selective features.

    Person concept: positives = that person's forget samples, negatives = all retain samples.
    Relation concept: positives = forget samples of the relation, negatives = retain samples of it.
    A feature active (on any sample) for more than ``max_concept_frac`` of the retain people is generic
    (e.g. a relation or position feature) and is excluded from person concepts.
    """
    if not forget:
        raise AnalysisInputError("the forget set is empty: no concept to find expert features for")
    if not retain:
        raise AnalysisInputError("the retain set is empty: expert features need retain samples to contrast")
    f_forget = sample_features(handle, trained, forget)
    f_retain = sample_features(handle, trained, retain)
    people = sorted({person_of(s) for s in retain})
    per_person_active = torch.stack([(f_retain[[i for i, s in enumerate(retain) if person_of(s) == p]] > 0).any(0)
                                     for p in people]).float()
    concept_frac = per_person_active.mean(0)
    generic = concept_frac > max_concept_frac
    by_person: dict[str, list[ExpertFeature]] = {}
    for p in sorted({person_of(s) for s in forget}):
        idx = [i for i, s in enumerate(forget) if person_of(s) == p]
        by_person[p] = _select(f_forget[idx], f_retain, generic, concept_frac, top, min_f1)
    by_relation: dict[str, list[ExpertFeature]] = {}
    for r in sorted({s.relation for s in forget}):
        idx = [i for i, s in enumerate(forget) if s.relation == r]
        nidx = [i for i, s in enumerate(retain) if s.relation == r]
        neg = f_retain[nidx] if nidx else f_retain
        # relation features are shared by every person of the relation, so no genericity filter here;
        # the negatives (retain samples of the same relation) already remove plain relation features
        by_relation[r] = _select(f_forget[idx], neg, torch.zeros_like(generic), concept_frac, top, min_f1)
    ex = ExpertFeatures(by_person, by_relation, {}, {"top": top, "min_f1": min_f1,
                                                     "max_concept_frac": max_concept_frac})
    everyone = [*forget, *retain]
    f_all = torch.cat([f_forget, f_retain])
    for f in ex.all_features():
        vals, idx = torch.topk(f_all[:, f], min(5, f_all.shape[0]))
        ex.top_samples[f] = [(everyone[int(i)].id, float(v)) for v, i in zip(vals, idx, strict=True) if v > 0]
    return ex
