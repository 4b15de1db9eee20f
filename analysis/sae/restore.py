"""Three signals of suppression vs deletion per unlearned model, and a verdict.

1. Passive retention: the unlearned model's expert-feature activations (through the original's SAE, last
   prompt token of forget samples) relative to the original's.
2. Active restoration (Jang et al.): at layer L of the unlearned model set the expert features
   ``f = f_u + alpha * (f_o - f_u)`` (f_o: the original on the same tokens), decode with the SAE error term
   kept (so alpha = 0 changes nothing): ``x' = x + (alpha * (f_o - f_u) * mask) @ W_dec``. Mode "add" adds
   the expert decoder directions instead: ``x' = x + alpha * (a_max * mask) @ W_dec``. Restoration rate =
   (acc_restored - acc_unlearned) / (acc_original - acc_unlearned) on forget samples. The same run on the
   retrain control measures injection (trap a); the net rate subtracts it.
3. Probe readout (analysis.sae.probe): catches trap (b), a model changed only after layer L (e.g. at its
   readout), which mid-layer patching cannot see.

Verdict rule (``verdict``), relative to the retrain control (true deletion):
- suppressed if probe accuracy on forget exceeds the retrain control's by >= PROBE_MARGIN at some layer,
  or the net restoration rate (max over alpha) is >= RESTORE_NET;
- erased if the probe gap is <= ERASE_PROBE_GAP, the net restoration rate is <= ERASE_RESTORE_NET (or
  undefined because the model never forgot nothing), and feature retention is <= the retrain control's
  + ERASE_RETENTION_GAP;
- inconclusive otherwise.
Per sample: suppressed if the probe decodes it at the model's best probe layer while the retrain
control's probe does not, or steering restores it while it does not inject it into the retrain control;
erased if neither and its feature retention is within ERASE_RETENTION_GAP of the retrain control's;
inconclusive otherwise. By construction the retrain control itself is erased.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.sae.features import ExpertFeatures, find_expert_features, last_prompt_acts
from analysis.sae.probe import ProbeResult, run_probe
from analysis.sae.train import TrainedSAE, load_sae
from analysis.scoring import PairBatch, answer_correct, make_batch
from analysis.store import ChunkJob, Compute, Executor, map_chunks

ALPHAS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
PROBE_MARGIN = 0.25
RESTORE_NET = 0.3
ERASE_PROBE_GAP = 0.125
ERASE_RESTORE_NET = 0.1
ERASE_RETENTION_GAP = 0.25
MIN_FORGET_DROP = 0.05  # below this drop in forget accuracy a restoration rate is undefined
KIND = "sae_restoration"


def expert_mask(experts: ExpertFeatures, samples: Sequence[Sample], d_sae: int) -> torch.Tensor:
    """[N, d_sae] bool: the expert features of each sample's person and relation."""
    mask = torch.zeros(len(samples), d_sae, dtype=torch.bool)
    for i, s in enumerate(samples):
        mask[i, experts.for_sample(s)] = True
    return mask


@torch.no_grad()
def original_features(original: ModelHandle, trained: TrainedSAE, batch: PairBatch) -> torch.Tensor:
    """[N, T, d_sae] the original's SAE features on ``batch`` at the SAE's hook."""
    _, cache = original.model.run_with_cache(batch.tokens, names_filter=trained.hook,
                                             stop_at_layer=trained.layer + 1)
    return trained.sae.encode(cache[trained.hook].float())


@torch.no_grad()
def steered_correct(handle: ModelHandle, trained: TrainedSAE, batch: PairBatch, f_o: torch.Tensor,
                    mask: torch.Tensor, alphas: Sequence[float], mode: str = "replace",
                    add_scale: torch.Tensor | None = None) -> torch.Tensor:
    """[A, N] bool answer correctness of ``handle`` steered at each alpha, in ONE batched forward."""
    logits = steered_logits(handle, trained, batch, f_o, mask, alphas, mode, add_scale)
    return answer_correct(logits, batch.repeat(len(alphas))).view(len(alphas), -1).cpu()


@torch.no_grad()
def steered_logits(handle: ModelHandle, trained: TrainedSAE, batch: PairBatch, f_o: torch.Tensor,
                   mask: torch.Tensor, alphas: Sequence[float], mode: str = "replace",
                   add_scale: torch.Tensor | None = None) -> torch.Tensor:
    """[A * N, T, vocab] logits of ``handle`` steered at layer L, rows alpha-major (alpha 0 = unchanged)."""
    if mode not in ("replace", "add"):
        raise AnalysisInputError(f"unknown steering mode {mode!r} (replace or add)")
    n, a = batch.tokens.shape[0], len(alphas)
    big = batch.repeat(a)
    alpha = torch.tensor([float(x) for x in alphas], device=batch.tokens.device).repeat_interleave(n)
    m = mask.to(f_o.device).float()[:, None, :].repeat(a, 1, 1)  # [A*N, 1, d_sae]
    sae = trained.sae
    if mode == "add":
        if add_scale is None:
            raise AnalysisInputError("mode 'add' needs add_scale")
        vec = (m * add_scale[None, None, :]) @ sae.W_dec  # [A*N, 1, d_model]
    f_o_rep = f_o.repeat(a, 1, 1)

    def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        if mode == "replace":
            f_u = sae.encode(x.float())
            delta = ((f_o_rep - f_u) * m) @ sae.W_dec
        else:
            delta = vec.expand(-1, x.shape[1], -1)
        return x + (alpha[:, None, None] * delta).to(x.dtype)

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


@dataclass
class Signals:
    """Raw signals of one model (no comparison with the retrain control)."""

    model: str
    fingerprint: str
    acc_original: float
    acc_unlearned: float
    per_alpha: dict[float, float]  # replace mode
    per_alpha_add: dict[float, float]
    correct_unlearned: dict[str, bool]
    restored: dict[float, dict[str, bool]]  # alpha -> id -> correct when steered
    feature_retention: float
    retention_by_sample: dict[str, float]
    probe: ProbeResult

    def rate(self, acc: float) -> float | None:
        den = self.acc_original - self.acc_unlearned
        return None if den < MIN_FORGET_DROP else (acc - self.acc_unlearned) / den


@torch.no_grad()
def model_signals(study: Any, name: str, trained: TrainedSAE, experts: ExpertFeatures,
                  alphas: Sequence[float] = ALPHAS, probe_layers: Sequence[int] | None = None) -> Signals:
    forget = study.forget
    if not forget:
        raise AnalysisInputError("the forget set is empty: nothing to restore")
    original, handle = study.load("original"), study.load(name)
    if handle.n_layers != original.n_layers or handle.model.cfg.d_model != original.model.cfg.d_model:
        raise AnalysisInputError(f"model {name!r} does not have the original's shape; the SAE does not apply")
    batch = make_batch(handle, [s.prompt for s in forget], [s.answer for s in forget])
    f_o = original_features(original, trained, batch)
    d_sae = int(trained.sae.cfg.d_sae)
    mask = expert_mask(experts, forget, d_sae)
    ids = [s.id for s in forget]
    acc_o = float(answer_correct(original.model(batch.tokens, return_type="logits"), batch).float().mean())
    alist = [0.0, *[float(a) for a in alphas]]
    corr = steered_correct(handle, trained, batch, f_o, mask, alist)
    # add mode: each expert feature's largest activation on the original's forget samples (last prompt token)
    rows = torch.arange(len(forget))
    last_o = f_o[rows, batch.prompt_lens.cpu() - 1]
    add_scale = last_o.max(0).values
    corr_add = steered_correct(handle, trained, batch, f_o, mask, [float(a) for a in alphas], "add", add_scale)
    # passive retention at the last prompt token
    last_u = trained.sae.encode(last_prompt_acts(handle, forget, [trained.hook], trained.layer + 1)[trained.hook])
    mo, mu = (last_o * mask).sum(-1), (last_u * mask).sum(-1)
    retention = float(mu.sum() / mo.sum().clamp(min=1e-9))
    by_sample = {i: float(u / o) if o > 0 else 0.0 for i, u, o in zip(ids, mu.tolist(), mo.tolist(), strict=True)}
    probe = run_probe(handle, study.retain, forget, probe_layers)
    return Signals(model=name, fingerprint=study.fingerprint(name), acc_original=acc_o,
                   acc_unlearned=float(corr[0].float().mean()),
                   per_alpha={a: float(corr[j + 1].float().mean()) for j, a in enumerate(alist[1:])},
                   per_alpha_add={a: float(corr_add[j].float().mean()) for j, a in enumerate(alist[1:])},
                   correct_unlearned=dict(zip(ids, corr[0].tolist(), strict=True)),
                   restored={a: dict(zip(ids, corr[j + 1].tolist(), strict=True)) for j, a in enumerate(alist[1:])},
                   feature_retention=retention, retention_by_sample=by_sample, probe=probe)


@dataclass
class RestorationReport:
    model: str
    verdict: str
    restoration_rate: float | None  # max over alpha (replace mode)
    restoration_rate_net: float | None  # max over alpha of (rate - retrain control's injection rate)
    feature_retention: float
    probe_accuracy: float | None  # best layer
    per_alpha: dict[str, float]
    per_alpha_add: dict[str, float]
    rate_by_alpha: dict[str, float | None]
    injection_by_alpha: dict[str, float | None]
    acc_original: float
    acc_unlearned: float
    retrain: dict[str, Any]  # the control's numbers the verdict compared against
    probe_by_layer: dict[str, float | None]
    probe_train_by_layer: dict[str, float]
    per_sample: list[dict[str, Any]]
    evidence: list[str]
    fingerprints: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _max(vals: Sequence[float | None]) -> float | None:
    v = [x for x in vals if x is not None]
    return max(v) if v else None


def verdict_of(probe_gap: float | None, net: float | None, retention: float, retrain_retention: float) -> str:
    if (probe_gap is not None and probe_gap >= PROBE_MARGIN) or (net is not None and net >= RESTORE_NET):
        return "suppressed"
    if (probe_gap is None or probe_gap <= ERASE_PROBE_GAP) and (net is None or net <= ERASE_RESTORE_NET) and \
            retention <= retrain_retention + ERASE_RETENTION_GAP:
        return "erased"
    return "inconclusive"


def compare(sig: Signals, ref: Signals, options: dict[str, Any]) -> RestorationReport:
    """The report of ``sig`` judged against the retrain control's signals ``ref``."""
    alphas = list(sig.per_alpha)
    rate = {a: sig.rate(sig.per_alpha[a]) for a in alphas}
    inj = {a: ref.rate(ref.per_alpha[a]) if a in ref.per_alpha else None for a in alphas}
    net = {a: None if rate[a] is None else rate[a] - (inj[a] or 0.0) for a in alphas}
    gaps = [(v - (ref.probe.acc_by_layer.get(layer) or 0.0), layer) for layer, v in sig.probe.acc_by_layer.items()
            if v is not None]
    probe_gap, gap_layer = max(gaps) if gaps else (None, None)
    net_max = _max(list(net.values()))
    v = verdict_of(probe_gap, net_max, sig.feature_retention, ref.feature_retention)
    best = sig.probe.best_layer()
    probe_acc = None if best is None else sig.probe.acc_by_layer[best]
    evidence = [
        f"forget accuracy: original {sig.acc_original:.2f}, this model {sig.acc_unlearned:.2f}",
        f"probe on its own activations decodes {probe_acc if probe_acc is None else f'{probe_acc:.2f}'} of forget "
        f"answers (best layer {best}); gap over the retrain control {probe_gap if probe_gap is None else f'{probe_gap:+.2f}'}"
        f" (layer {gap_layer}); suppressed at >= {PROBE_MARGIN}",
        f"restoration rate (max over alpha) {_fmt(_max(list(rate.values())))}, injection into the retrain control "
        f"{_fmt(_max(list(inj.values())))}, net {_fmt(net_max)}; suppressed at >= {RESTORE_NET}",
        f"expert-feature retention {sig.feature_retention:.2f} (retrain control {ref.feature_retention:.2f})",
    ]
    if sig.acc_original - sig.acc_unlearned < MIN_FORGET_DROP:
        evidence.append("this model did not forget (forget accuracy barely dropped): restoration is undefined")
    per_sample = []
    ref_layer = gap_layer if gap_layer is not None else best
    for sid in sig.correct_unlearned:
        probe_hit = ref_layer is not None and sig.probe.correct.get(ref_layer, {}).get(sid, False) and \
            not ref.probe.correct.get(ref_layer, {}).get(sid, False)
        restored = any(sig.restored[a][sid] and not sig.correct_unlearned[sid] and
                       not (ref.restored.get(a, {}).get(sid, False) and not ref.correct_unlearned.get(sid, False))
                       for a in alphas)
        ret, ref_ret = sig.retention_by_sample.get(sid, 0.0), ref.retention_by_sample.get(sid, 0.0)
        if probe_hit or restored:
            sv = "suppressed"
        elif ret <= ref_ret + ERASE_RETENTION_GAP:
            sv = "erased"
        else:
            sv = "inconclusive"
        per_sample.append({"id": sid, "verdict": sv, "probe_decodes": bool(probe_hit), "restored": bool(restored),
                           "answers_now": bool(sig.correct_unlearned[sid]), "feature_retention": ret,
                           "retrain_feature_retention": ref_ret})
    return RestorationReport(
        model=sig.model, verdict=v, restoration_rate=_max(list(rate.values())), restoration_rate_net=net_max,
        feature_retention=sig.feature_retention, probe_accuracy=probe_acc,
        per_alpha={_k(a): x for a, x in sig.per_alpha.items()}, per_alpha_add={_k(a): x for a, x in
                                                                                sig.per_alpha_add.items()},
        rate_by_alpha={_k(a): x for a, x in rate.items()}, injection_by_alpha={_k(a): x for a, x in inj.items()},
        acc_original=sig.acc_original, acc_unlearned=sig.acc_unlearned,
        retrain={"model": ref.model, "feature_retention": ref.feature_retention,
                 "probe_by_layer": {str(k): x for k, x in ref.probe.acc_by_layer.items()},
                 "per_alpha": {_k(a): x for a, x in ref.per_alpha.items()}, "acc_unlearned": ref.acc_unlearned},
        probe_by_layer={str(k): x for k, x in sig.probe.acc_by_layer.items()},
        probe_train_by_layer={str(k): x for k, x in sig.probe.train_acc_by_layer.items()},
        per_sample=per_sample, evidence=evidence, fingerprints={"model": sig.fingerprint, "retrain": ref.fingerprint},
        options=options)


def _k(a: float) -> str:
    return f"{a:g}"


def _fmt(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.2f}"


def _check(study: Any, model: str) -> str:
    if model == "original":
        raise AnalysisInputError("pick an unlearned model or a control, not the original")
    study.entry(model)
    if not study.forget:
        raise AnalysisInputError("the forget set is empty: nothing to restore")
    ref_name = study.manifest.retrain
    if not ref_name:
        raise AnalysisInputError("this study has no retrain control: the verdict needs one as the deletion "
                                 "reference (create the study with --retrain NAME)")
    return str(ref_name)


def restore(study: Any, model: str, layer: int | None = None, k: int = 16, alphas: Sequence[float] = ALPHAS,
            trained: TrainedSAE | None = None, use_store: bool = True,
            executor: Executor | None = None) -> RestorationReport:
    """Restoration report of ``model`` against the study's retrain control (stored in the study store)."""
    return restore_all(study, [model], layer=layer, k=k, alphas=alphas, trained=trained, use_store=use_store,
                       executor=executor)[model]


def make_signals_compute(study: Any, sae_path: str, experts: ExpertFeatures, alphas: Sequence[float],
                         trained: TrainedSAE | None = None) -> Compute:
    """The per-model work of ``restore_all``: ``compute(names) -> {name: Signals}`` with the SAE at
    ``sae_path`` (``trained`` when already loaded). Built here or in a Ray worker."""
    sae = trained or load_sae(study, path=sae_path)
    return lambda names: {n: model_signals(study, n, sae, experts, alphas) for n in names}


def restore_all(study: Any, names: Sequence[str] | None = None, layer: int | None = None, k: int = 16,
                alphas: Sequence[float] = ALPHAS, trained: TrainedSAE | None = None,
                use_store: bool = True, executor: Executor | None = None) -> dict[str, RestorationReport]:
    """Reports for ``names`` (default: every non-original model), sharing the SAE, the expert features and
    the retrain control's signals; each report is read from / written to the study store as soon as its
    model's signals are in. The signals of each model are computed here or, one model per worker, on
    ``executor`` (e.g. analysis.distributed.RayExecutor)."""
    names = [n for n in study.model_names if n != "original"] if names is None else list(names)
    ref_name = ""
    for n in names:
        ref_name = _check(study, n)
    trained = trained or load_sae(study, layer=layer, k=k)
    options = {"sae": trained.sae_id, "layer": trained.layer, "alphas": [float(a) for a in alphas], "version": 1}
    out: dict[str, RestorationReport] = {}
    todo = []
    for n in names:
        fps = [study.fingerprint("original"), study.fingerprint(n), study.fingerprint(ref_name)]
        hit = study.store.get(KIND, fps, options) if use_store else None
        if hit is not None:
            out[n] = RestorationReport(**hit)
        else:
            todo.append((n, fps))
    if todo:
        experts = find_expert_features(study.load("original"), trained, study.forget, study.retain)
        job = ChunkJob(make_signals_compute, study, (str(trained.path), experts, tuple(alphas)), {"trained": trained})
        pending, signals = dict(todo), {}
        for _, values in map_chunks(job, [[ref_name], *[[n] for n in pending if n != ref_name]], executor):
            signals.update(values)
            for n in [n for n in pending if n in signals and ref_name in signals]:
                out[n] = compare(signals[n], signals[ref_name], options)
                if use_store:
                    study.store.put(KIND, pending[n], options, out[n].to_dict())
                del pending[n]
    return {n: out[n] for n in names}
