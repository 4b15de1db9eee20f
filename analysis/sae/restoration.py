"""Active restoration (Jang et al.) and passive retention of a model's expert features, through the
original's SAE: the raw signals of one model (``model_signals``), before any comparison with the retrain
control (``analysis.sae.verdict``).

1. Passive retention: the unlearned model's expert-feature activations (through the original's SAE, last
   prompt token of forget samples) relative to the original's.
2. Active restoration: at layer L of the unlearned model set the expert features
   ``f = f_u + alpha * (f_o - f_u)`` (f_o: the original on the same tokens), decode with the SAE error term
   kept (so alpha = 0 changes nothing): ``x' = x + (alpha * (f_o - f_u) * mask) @ W_dec``. Mode "add" adds
   the expert decoder directions instead: ``x' = x + alpha * (a_max * mask) @ W_dec``. Restoration rate =
   (acc_restored - acc_unlearned) / (acc_original - acc_unlearned) on forget samples. The same run on the
   retrain control measures injection (trap a); the net rate subtracts it.
3. Probe readout (analysis.sae.probe): catches trap (b), a model changed only after layer L (e.g. at its
   readout), which mid-layer patching cannot see.
4. The SAE's fit to the model's own activations (``analysis.sae.fit.model_fit``): how far 1 and 2 can be read.

The SAE runs on the device of the activations it reads (``TrainedSAE.for_model``): the original's features on
the original's device, the steering on the steered model's.

Steering modes are a registry (``STEERING_MODES``): a mode maps (SAE, f_o, expert mask, add scale) to the
function giving the residual-stream change ``delta(x)`` that alpha scales.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from sae_lens import TopKSAE

from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.registry import Registry
from analysis.sae.features import ExpertFeatures, sample_features
from analysis.sae.fit import fit_batches, model_fit
from analysis.sae.options import ALPHAS, STEERING_MODE_LABELS, SteeringMode
from analysis.sae.probe import probe_units, run_probe
from analysis.sae.progress import Units
from analysis.sae.result import Signals
from analysis.sae.train import TrainedSAE
from analysis.scoring import PairBatch, answer_correct, make_batch
from analysis.store import ProgressFn

if TYPE_CHECKING:
    from analysis.study import Study

Delta = Callable[[torch.Tensor], torch.Tensor]  # residual stream x [B, T, d_model] -> change at alpha 1
SteeringFn = Callable[[TopKSAE, torch.Tensor, torch.Tensor, "torch.Tensor | None"], Delta]

STEERING_MODES: Registry[SteeringFn] = Registry("steering mode")


@STEERING_MODES.register("replace", label=STEERING_MODE_LABELS["replace"])
def replace_features(sae: TopKSAE, f_o: torch.Tensor, mask: torch.Tensor, add_scale: torch.Tensor | None) -> Delta:
    """``(f_o - f_u) * mask @ W_dec``: the expert features moved to the original's (f_u encoded from x)."""

    def delta(x: torch.Tensor) -> torch.Tensor:
        return ((f_o - sae.encode(x.float())) * mask) @ sae.W_dec

    return delta


@STEERING_MODES.register("add", label=STEERING_MODE_LABELS["add"])
def add_directions(sae: TopKSAE, f_o: torch.Tensor, mask: torch.Tensor,  # noqa: ARG001
                   add_scale: torch.Tensor | None) -> Delta:
    """``(a_max * mask) @ W_dec`` at every position: the expert decoder directions, each scaled by
    ``add_scale`` (the feature's largest activation on the original)."""
    if add_scale is None:
        raise AnalysisInputError("mode 'add' needs add_scale")
    vec = (mask * add_scale[None, None, :]) @ sae.W_dec  # [A*N, 1, d_model]
    return lambda x: vec.expand(-1, x.shape[1], -1)


def expert_mask(experts: ExpertFeatures, samples: Sequence[Sample], d_sae: int) -> torch.Tensor:
    """[N, d_sae] bool: the expert features of each sample's person and relation."""
    mask = torch.zeros(len(samples), d_sae, dtype=torch.bool)
    for i, s in enumerate(samples):
        mask[i, experts.for_sample(s)] = True
    return mask


@torch.no_grad()
def original_features(original: ModelHandle, trained: TrainedSAE, batch: PairBatch) -> torch.Tensor:
    """[N, T, d_sae] the original's SAE features on ``batch`` at the SAE's hook (on the activations' device)."""
    _, cache = original.model.run_with_cache(batch.tokens, names_filter=trained.hook,
                                             stop_at_layer=trained.layer + 1)
    acts = cache[trained.hook].float()
    return trained.on(acts.device).sae.encode(acts)


@torch.no_grad()
def steered_correct(handle: ModelHandle, trained: TrainedSAE, batch: PairBatch, f_o: torch.Tensor,
                    mask: torch.Tensor, alphas: Sequence[float], mode: SteeringMode = "replace",
                    add_scale: torch.Tensor | None = None) -> torch.Tensor:
    """[A, N] bool answer correctness of ``handle`` steered at each alpha, in ONE batched forward."""
    logits = steered_logits(handle, trained, batch, f_o, mask, alphas, mode, add_scale)
    return answer_correct(logits, batch.repeat(len(alphas))).view(len(alphas), -1).cpu()


@torch.no_grad()
def steered_logits(handle: ModelHandle, trained: TrainedSAE, batch: PairBatch, f_o: torch.Tensor,
                   mask: torch.Tensor, alphas: Sequence[float], mode: SteeringMode = "replace",
                   add_scale: torch.Tensor | None = None) -> torch.Tensor:
    """[A * N, T, vocab] logits of ``handle`` steered at layer L, rows alpha-major (alpha 0 = unchanged). The
    SAE, ``f_o``, ``mask`` and ``add_scale`` are used on the device of ``handle``'s activations at layer L."""
    steering = STEERING_MODES.get(mode)
    here = trained.for_model(handle)
    dev = here.device
    n, a = batch.tokens.shape[0], len(alphas)
    big = batch.repeat(a)
    alpha = torch.tensor([float(x) for x in alphas], device=dev).repeat_interleave(n)
    m = mask.to(dev).float()[:, None, :].repeat(a, 1, 1)  # [A*N, 1, d_sae]
    delta = steering(here.sae, f_o.to(dev).repeat(a, 1, 1), m, None if add_scale is None else add_scale.to(dev))

    def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        return x + (alpha[:, None, None] * delta(x)).to(x.dtype)

    return handle.model.run_with_hooks(big.tokens, return_type="logits", fwd_hooks=[(trained.hook, hook)])


@torch.no_grad()
def steered_correct_loop(handle: ModelHandle, trained: TrainedSAE, batch: PairBatch, f_o: torch.Tensor,
                         mask: torch.Tensor, alphas: Sequence[float]) -> torch.Tensor:
    """Reference for the benchmark: one forward per (alpha, sample)."""
    out = torch.zeros(len(alphas), batch.tokens.shape[0], dtype=torch.bool)
    for j, al in enumerate(alphas):
        for i in range(batch.tokens.shape[0]):
            one = PairBatch(*(t[i:i + 1] for t in (batch.tokens, batch.target_mask, batch.prompt_lens,
                                                   batch.answer_lens, batch.lengths)))
            out[j, i] = steered_correct(handle, trained, one, f_o[i:i + 1], mask[i:i + 1], [al])[0, 0]
    return out


def signal_units(study: Study, n_layers: int, probe_layers: Sequence[int] | None = None) -> int:
    """The units of work ``model_signals`` reports by: the original's forward, the two steering forwards, the
    retention forward, the probe's passes and fits, the fit's sample batches."""
    n_probe = probe_units(study.forget, n_layers if probe_layers is None else len(probe_layers))
    return 4 + n_probe + fit_batches([*study.forget, *study.retain])


@torch.no_grad()
def model_signals(study: Study, name: str, trained: TrainedSAE, experts: ExpertFeatures,
                  alphas: Sequence[float] = ALPHAS, probe_layers: Sequence[int] | None = None,
                  handle: ModelHandle | None = None, progress: ProgressFn | None = None) -> Signals:
    """Restoration at each alpha (both steering modes), expert-feature retention and the probe readout of
    the model ``name``, on the study's forget samples. ``handle``: read this model instead of the study's
    ``name`` (a model derived in memory, e.g. ``analysis.sae.control``'s positive control; its fingerprint is
    the handle's). ``progress(fraction, message)``: by units of work (the original's forward, each steering
    mode's batched forward, the retention forward, each probe pass and fit, each sample batch of the fit)."""
    forget = study.forget
    if not forget:
        raise AnalysisInputError("the forget set is empty: nothing to restore")
    original = study.load("original")
    fingerprint = study.fingerprint(name) if handle is None else handle.fingerprint
    handle = handle if handle is not None else study.load(name)
    if handle.n_layers != original.n_layers or handle.model.cfg.d_model != original.model.cfg.d_model:
        raise AnalysisInputError(f"model {name!r} does not have the original's shape; the SAE does not apply")
    n_probe = probe_units(forget, handle.n_layers if probe_layers is None else len(probe_layers))
    fit_samples = [*forget, *study.retain]
    n_fit = fit_batches(fit_samples)
    units = Units(progress, signal_units(study, handle.n_layers, probe_layers))
    units.say(f"the original's SAE features on {len(forget)} forget samples")
    batch = make_batch(handle, [s.prompt for s in forget], [s.answer for s in forget])
    f_o = original_features(original, trained, batch)
    d_sae = int(trained.sae.cfg.d_sae)
    mask = expert_mask(experts, forget, d_sae)
    ids = [s.id for s in forget]
    acc_o = float(answer_correct(original.model(batch.tokens, return_type="logits"), batch).float().mean())
    alist = [0.0, *[float(a) for a in alphas]]
    units.tick(f"restoration, replace mode ({len(alist)} strength(s) x {len(forget)} samples)")
    corr = steered_correct(handle, trained, batch, f_o, mask, alist)
    # add mode: each expert feature's largest activation on the original's forget samples (last prompt token)
    rows = torch.arange(len(forget))
    last_o = f_o[rows.to(f_o.device), batch.prompt_lens.to(f_o.device) - 1].cpu()
    add_scale = last_o.max(0).values
    units.tick(f"restoration, add mode ({len(alphas)} strength(s) x {len(forget)} samples)")
    corr_add = steered_correct(handle, trained, batch, f_o, mask, [float(a) for a in alphas], "add", add_scale)
    # passive retention at the last prompt token (features on the CPU, as last_o)
    units.tick("expert-feature retention")
    last_u = sample_features(handle, trained, forget)
    mo, mu = (last_o * mask).sum(-1), (last_u * mask).sum(-1)
    retention = float(mu.sum() / mo.sum().clamp(min=1e-9))
    by_sample = {i: float(u / o) if o > 0 else 0.0 for i, u, o in zip(ids, mu.tolist(), mo.tolist(), strict=True)}
    units.tick("probe readout")
    probe = run_probe(handle, study.retain, forget, probe_layers, progress=units.sub(n_probe))
    units.tick("the SAE's fit to its own activations", n_probe)
    fit = model_fit(handle, trained, fit_samples, progress=units.sub(n_fit))
    units.tick("signals done", n_fit)
    return Signals(model=name, fingerprint=fingerprint, acc_original=acc_o,
                   acc_unlearned=float(corr[0].float().mean()),
                   per_alpha={a: float(corr[j + 1].float().mean()) for j, a in enumerate(alist[1:])},
                   per_alpha_add={a: float(corr_add[j].float().mean()) for j, a in enumerate(alist[1:])},
                   correct_unlearned=dict(zip(ids, corr[0].tolist(), strict=True)),
                   restored={a: dict(zip(ids, corr[j + 1].tolist(), strict=True)) for j, a in enumerate(alist[1:])},
                   feature_retention=retention, retention_by_sample=by_sample, probe=probe, fit=fit)
