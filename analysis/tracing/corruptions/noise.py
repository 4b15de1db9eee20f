"""Gaussian noise on the subject tokens' embeddings (ROME, Meng et al. 2022).

The noise std is ``noise_scale`` (default 3, ROME's) times the std of the token embeddings of every
subject-token occurrence in the study. ``n_samples`` draws from a seeded ``torch.Generator`` (on the CPU,
so the same seed gives the same noise on any device); the same draws are used for every restored cell,
as in ROME.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from analysis.tracing.corruptions import CORRUPTIONS, Corrupted, Corruption
from analysis.tracing.options import CORRUPTION_HELP

if TYPE_CHECKING:
    from analysis.models.handle import ModelHandle
    from analysis.subjects import SubjectInput, SubjectPool
    from analysis.tracing.options import TraceOptions


def gaussian_noise(n: int, n_tokens: int, d_model: int, std: float, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn((n, n_tokens, d_model), generator=gen, dtype=torch.float32) * std


@CORRUPTIONS.register()
class GaussianNoise(Corruption):
    name = "noise"
    label = "Gaussian noise"
    description = CORRUPTION_HELP["noise"]
    stochastic = True
    uses_noise_scale = True

    def corrupt(self, handle: ModelHandle, inp: SubjectInput, pool: SubjectPool, options: TraceOptions) -> Corrupted:
        base_std = pool.embedding_std(handle)
        std = float(options.noise_scale) * base_std
        s0, s1 = inp.subject_range
        n, T, d = options.n_samples, len(inp.ids), int(handle.model.cfg.d_model)
        delta = torch.zeros((n, T, d), dtype=torch.float32)
        delta[:, s0:s1] = gaussian_noise(n, s1 - s0, d, std, options.seed)
        tokens = inp.tensor(handle.device)[None].expand(n, T).contiguous()
        return Corrupted(tokens=tokens, embed_delta=delta.to(handle.device, handle.dtype),
                         info={"embedding_std": base_std, "noise_std": std})
