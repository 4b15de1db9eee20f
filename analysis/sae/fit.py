"""How well the original's SAE reconstructs a model's own activations at its hook (``SAEFit``), and the
caveat a report carries when it does not.

The SAE is trained on the original only; restoration and retention then read every other model through it.
That is only meaningful where the SAE still reconstructs the model's residual stream: a model trained from
another seed has its knowledge in another basis, and the original's features say little about it. ``model_fit``
measures, on the model's own activations at the SAE's hook (every prompt token of the forget and retain samples,
BOS left out: its activation is one fixed outlier vector), the fraction of variance explained

    FVE = 1 - sum_t |x_t - x_hat_t|^2 / sum_t |x_t - mean_t(x)|^2          (x_hat = decode(encode(x)))

(1 - the FVU of ``SAEHealth``, same definition) and the normalised MSE ``sum |x - x_hat|^2 / sum |x|^2``.
The sums are accumulated in float64 over batches (``FitSums``), so no [tokens, d_model] tensor is kept.
``analysis.sae.verdict.fit_caveat`` turns a poor fit into a sentence of the report (thresholds ``MIN_SAE_FVE``
and ``MAX_SAE_FVE_DROP`` in ``analysis.sae.options``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.sae.result import SAEFit
from analysis.scoring import chunks, make_batch
from analysis.store import ProgressFn

if TYPE_CHECKING:
    from sae_lens import TopKSAE

    from analysis.sae.train import TrainedSAE


class FitSums:
    """Running sums of a reconstruction (float64): squared error, sum and squared norm of the activations."""

    def __init__(self) -> None:
        self.sse = 0.0
        self.sxx = 0.0
        self.sx: torch.Tensor | None = None
        self.n = 0

    def add(self, acts: torch.Tensor, recon: torch.Tensor) -> FitSums:
        """Adds [N, d] activations and their [N, d] reconstruction; returns itself."""
        if acts.shape != recon.shape or acts.dim() != 2:
            raise AnalysisInputError(f"activations {tuple(acts.shape)} and reconstruction {tuple(recon.shape)} "
                                     "must both be [tokens, d_model]")
        x, r = acts.double(), recon.double()
        self.sse += float((r - x).pow(2).sum())
        self.sxx += float(x.pow(2).sum())
        sx = x.sum(0).cpu()
        self.sx = sx if self.sx is None else self.sx + sx
        self.n += int(x.shape[0])
        return self

    def result(self) -> SAEFit:
        if self.n == 0 or self.sx is None:
            return SAEFit(fve=None, nmse=None, n_tokens=0)
        sst = self.sxx - float(self.sx.pow(2).sum()) / self.n  # sum |x - mean|^2
        fve = None if sst <= 0 else 1.0 - self.sse / sst
        nmse = None if self.sxx <= 0 else self.sse / self.sxx
        return SAEFit(fve=fve, nmse=nmse, n_tokens=self.n)


def reconstruction_fit(acts: torch.Tensor, recon: torch.Tensor) -> SAEFit:
    """FVE and normalised MSE of ``recon`` as a reconstruction of the [N, d] activations ``acts``."""
    return FitSums().add(acts, recon).result()


@torch.no_grad()
def reconstruct(sae: TopKSAE, x: torch.Tensor) -> torch.Tensor:
    """The SAE's reconstruction of ``x`` (float32, on the SAE's device)."""
    return sae.decode(sae.encode(x.float()))


def fit_batches(samples: Sequence[Sample], batch_size: int = 64) -> int:
    """The sample batches ``model_fit`` runs (the units it reports progress by)."""
    return max(1, -(-len(samples) // batch_size))


@torch.no_grad()
def model_fit(handle: ModelHandle, trained: TrainedSAE, samples: Sequence[Sample], batch_size: int = 64,
              progress: ProgressFn | None = None) -> SAEFit:
    """The SAE's fit to ``handle``'s own activations at its hook: every prompt token of ``samples`` (BOS
    left out), the SAE run on the device of those activations. ``progress``: after each sample batch."""
    if not samples:
        raise AnalysisInputError("no samples to measure the SAE's fit on")
    if int(handle.model.cfg.d_model) != int(trained.sae.cfg.d_in):
        raise AnalysisInputError(f"model {handle.name!r} has d_model {handle.model.cfg.d_model}, the SAE reads "
                                 f"{trained.sae.cfg.d_in}: the SAE does not apply")
    sums = FitSums()
    start = 1 if handle.prepend_bos else 0
    for sl in chunks(len(samples), batch_size):
        part = samples[sl]
        batch = make_batch(handle, [s.prompt for s in part], [s.answer for s in part])
        _, cache = handle.model.run_with_cache(batch.tokens, names_filter=trained.hook,
                                               stop_at_layer=trained.layer + 1)
        acts = cache[trained.hook]
        pos = torch.arange(acts.shape[1], device=acts.device)
        keep = (pos[None, :] >= start) & (pos[None, :] < batch.prompt_lens.to(acts.device)[:, None])
        x = acts[keep].float()
        sums.add(x, reconstruct(trained.on(x.device).sae, x))
        if progress is not None:
            progress(sl.stop / len(samples), f"the SAE's fit: {sl.stop}/{len(samples)} samples")
    return sums.result()

