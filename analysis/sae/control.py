"""The positive control of restoration: a model in which restoration must succeed.

The original with the SAE's expert feature directions (the decoder rows ``W_dec[f]`` of every expert feature
restoration steers, ``ExpertFeatures.all_features``) projected out of its residual stream at the SAE's hook
(``hooks.resid_post(L)``, every position): ``x' = x - B B^T x`` with ``B`` an orthonormal basis of those
directions. The knowledge is hidden exactly where restoration looks for it and nowhere else (the layers up to
L are the original's; the layers after L read ``x'``). Its forget answers drop, and steering the expert
features back to the original's ("replace" mode, ``analysis.sae.restoration``) puts the removed component
back: restoration that cannot undo this cannot be trusted to see suppression anywhere.

``projected_model`` builds it (a deep copy of the original's HookedTransformer with a permanent hook at the
SAE's hook; the study's handle is untouched); ``analysis.sae.runner.positive_control`` judges it against the
reference retrain control like any model.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.sae.train import TrainedSAE

CONTROL_NAME = "positive_control"  # the name its signals and report carry (never a model of the study)


def expert_basis(trained: TrainedSAE, features: Sequence[int]) -> torch.Tensor:
    """[d_model, r] an orthonormal basis (float32, on the CPU) of the span of the SAE's decoder directions
    ``W_dec[features]`` (r = their rank)."""
    feats = sorted({int(f) for f in features})
    if not feats:
        raise AnalysisInputError("no expert features: there is no direction to project out")
    d_sae = int(trained.sae.cfg.d_sae)
    if feats[0] < 0 or feats[-1] >= d_sae:
        raise AnalysisInputError(f"expert features must be in 0..{d_sae - 1} (the SAE's features), got {feats}")
    dirs = trained.sae.W_dec.detach().float().cpu()[feats].T  # [d_model, n]
    u, s, _ = torch.linalg.svd(dirs, full_matrices=False)
    return u[:, s > s.max() * 1e-6].contiguous()


def projected_model(original: ModelHandle, trained: TrainedSAE, features: Sequence[int],
                    name: str = CONTROL_NAME) -> ModelHandle:
    """A copy of ``original`` whose residual stream at ``trained.hook`` (every position) has its component
    along the decoder directions of ``features`` removed. Its fingerprint is derived from the original's, the
    SAE's and the features (it is no file of the study)."""
    basis = expert_basis(trained, features)
    cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def project(x: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        b = cache.get((x.device, x.dtype))
        if b is None:
            b = cache[(x.device, x.dtype)] = basis.to(device=x.device, dtype=x.dtype)
        return x - (x @ b) @ b.T

    model = copy.deepcopy(original.model)
    model.add_hook(trained.hook, project, is_permanent=True)
    text = f"{original.fingerprint}|{trained.sae_id}|{trained.hook}|{sorted({int(f) for f in features})}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return replace(original, model=model, name=name, role="control", path=None, fingerprint=digest,
                   meta={**original.meta, "positive_control": {"hook": trained.hook, "sae": trained.sae_id,
                                                               "features": sorted({int(f) for f in features}),
                                                               "rank": int(basis.shape[1])}})
