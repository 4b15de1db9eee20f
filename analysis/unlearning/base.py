"""Unlearning methods behind one registry, and the observed per-sample difficulty of unlearning.

Every method takes a model, a forget set and a retain set and returns a *new* model: the original is
deep-copied first and never mutated. Callers use one entry point::

    handle, result = run_unlearning(original, "npo", forget, retain, UnlearnConfig(seed=0))
    handle, result = run_unlearning(original, "retrain", forget, retain, cfg, corpus=corpus)

Gradient methods share one loop (:class:`GradientMethod`): at each of ``cfg.steps`` steps a forget batch
and (for methods with a retain term) a retain batch of ``cfg.batch_size`` rows are drawn without
replacement from seeded permutations (a ``torch.Generator`` seeded with ``cfg.seed``, reshuffled each
epoch), the method's loss is minimised with Adam (constant ``cfg.lr``, no weight decay, gradient norm
clipped to ``cfg.max_grad_norm``) over the method's trainable parameters only. Every random choice comes
from ``cfg.seed``, so the same seed on the same device gives bit-identical weights.

Trajectory
----------
``trajectory[t, i]`` is the joint probability ``p(answer_i | prompt_i) = exp(sum of answer-token
log-probs)`` (the ``prob`` of :func:`analysis.scoring.score_answers`) of forget sample ``i`` after ``t``
optimisation steps; row 0 is the original model. Gradient methods record a row after every step
(shape ``[steps + 1, n_forget]``); the ``retrain`` control records only the original and the retrained
model (shape ``[2, n_forget]``).

Observed difficulty
-------------------
How hard a forget sample was to unlearn, read off its trajectory by :func:`observed_difficulty`:

* ``final_loss`` = ``-log p(answer)`` after unlearning (the last trajectory row): the forget NLL that
  unlearning pushes *up*. A sample whose final loss is still *low* is one the method failed to erase,
  so for this score **lower = harder** (still remembered); rank by ``-final_loss`` for hardest first.
  A probability that underflowed to 0 is clipped at the smallest positive float64, so the value stays
  finite (at most ~708).
* ``auc`` = the mean over recorded steps of ``p(answer)``: the area under the probability-vs-step curve
  with the step axis normalised to [0, 1], so it lies in [0, 1]. **Higher = harder**: the answer stayed
  likely for longer (or for good). Its first row is the original model's own probability, the very
  quantity of CUD's "original model's answer loss" baseline, so a predictor built on that probability
  agrees with ``auc`` partly by construction.
* ``auc_after`` = the mean of ``p(answer)`` over the rows *after* row 0 (the original excluded): the same
  area without the original's own probability, in [0, 1], higher = harder. CUD's calibration labels use it
  by default (analysis.circuits.cud). NaN when the trajectory has no row after the original.

Both are observed after the fact, per method: the same sample can be easy for one method and hard for
another.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from analysis.data.corpus import Corpus
from analysis.data.schema import Sample
from analysis.determinism import deterministic
from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle, ModelRole
from analysis.registry import Registry
from analysis.scoring import PairBatch, answer_correct, answer_logprob, make_batch
from analysis.store import ProgressFn

_TINY = float(np.finfo(np.float64).tiny)


FALLBACKS: dict[str, Any] = {"retain_weight": 1.0}  # for None fields a method has no default for


@dataclass
class UnlearnConfig:
    """Settings shared by every method, plus method-specific fields (ignored by the other methods).

    The defaults (steps / lr / retain_weight from each method's ``defaults``) are tuned on the built-in organism;
    for a pretrained checkpoint use :func:`pretrained_config` (``PRETRAINED_PRESET``: open-unlearning's TOFU
    settings, lr 1e-5 and 10 epochs; the organism's NPO rate, 3e-4, is reported to wreck a pretrained model).

    Shared:
      steps: optimisation steps (None = the method's default, ``UnlearnMethod.defaults``; the ``retrain``
        control ignores it, see ``retrain_steps``).
      lr: Adam learning rate, constant, no weight decay (None = the method's default).
      batch_size: rows per forget batch and per retain batch.
      seed: seeds every random choice (batch order, the RMU direction, the retrain control).
      retain_weight: weight of the retain term (retain NLL, or RMU's activation term via ``rmu_alpha``)
        against the forget term (None = the method's default, else 1.0). ``grad_ascent`` has no retain term.
      max_grad_norm: gradient-norm clip per step.

    NPO (Zhang et al. 2024): ``npo_beta`` is the inverse temperature beta of
      ``-(2/beta) logsigmoid(-beta (log p_theta - log p_ref))``; small beta approaches gradient ascent,
      large beta saturates sooner (the loss stops pushing once p_theta << p_ref).
    SimNPO (Fan et al. 2024): ``simnpo_beta`` (beta) and ``simnpo_gamma`` (reward margin gamma) of the
      reference-free ``-(2/beta) logsigmoid(-(beta/|y|) log p_theta - gamma)``.
    RMU (Li et al. 2024): ``rmu_layer`` is the layer whose ``hooks.resid_post`` is steered (None = the
      middle layer, ``n_layers // 2``); ``rmu_coeff`` is the norm c of the random target ``c * u`` (in
      residual-stream units: the built-in organism's residual norm at its middle layer is ~55);
      ``rmu_alpha`` weights the retain activation-matching term (multiplied by ``retain_weight``).
    Readout suppression (control): ``readout_ln_final`` also trains ``ln_final``'s weight and bias.
      ``readout_beta`` is the NPO beta of its forget term.
    Retrain (control): ``retrain_steps`` overrides the organism recipe's training steps (None = the
      original organism's own recipe, read from its saved metadata, else ``OrganismConfig`` defaults).
    """

    steps: int | None = None
    lr: float | None = None
    batch_size: int = 32
    seed: int = 0
    retain_weight: float | None = None
    max_grad_norm: float = 1.0
    npo_beta: float = 0.1
    simnpo_beta: float = 2.5
    simnpo_gamma: float = 0.0
    rmu_layer: int | None = None
    rmu_coeff: float = 100.0
    rmu_alpha: float = 10.0
    readout_ln_final: bool = False
    readout_beta: float = 0.1
    retrain_steps: int | None = None

    def resolved(self, defaults: dict[str, Any]) -> UnlearnConfig:
        """A copy with the None fields filled from ``defaults`` (a method's), then from ``FALLBACKS``."""
        fill = {k: v for k, v in {**FALLBACKS, **defaults}.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **fill)

    def validate(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise AnalysisInputError(f"steps must be at least 1, got {self.steps}")
        if self.lr is not None and not self.lr > 0:
            raise AnalysisInputError(f"lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise AnalysisInputError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.retain_weight is not None and self.retain_weight < 0:
            raise AnalysisInputError(f"retain_weight must be non-negative, got {self.retain_weight}")
        for name in ("npo_beta", "simnpo_beta", "readout_beta"):
            if not getattr(self, name) > 0:
                raise AnalysisInputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.retrain_steps is not None and self.retrain_steps < 1:
            raise AnalysisInputError(f"retrain_steps must be at least 1, got {self.retrain_steps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------
# Presets: the organism's defaults (each method's ``defaults``) and the one for pretrained models

PRESETS: tuple[str, ...] = ("pretrained", "organism")
PRETRAINED_EPOCHS = 10  # passes over the forget set (open-unlearning's TOFU unlearning: num_train_epochs 10)
RETRAIN_EPOCHS = 5  # passes over the retain set of the retrain-from-a-base control (TOFU's fine-tuning: 5)

# Settings for a pretrained checkpoint (``erasure unlearn``), per method: the UnlearnConfig fields that differ
# from the organism's, and the epochs that decide the steps (``pretrained_config``). The values follow
# open-unlearning (locuslab/open-unlearning, configs/trainer/*.yaml on configs/trainer/finetune.yaml, with
# configs/experiment/unlearn/tofu/default.yaml: learning_rate 1e-5, num_train_epochs 10, effective batch 32 in
# scripts/tofu_unlearn.sh), the settings of its TOFU results on Llama-3.2-1B / Llama-3.1-8B:
#
# - grad_ascent: lr 1e-5 (GradAscent.yaml).
# - grad_diff: lr 1e-5, retain_weight 1.0 (GradDiff.yaml: gamma 1.0 on the forget term, alpha 1.0 on the retain
#   NLL).
# - npo: lr 1e-5, npo_beta 0.1, retain_weight 1.0 (NPO.yaml: beta 0.1, alpha 1.0, gamma 1.0). The organism's lr
#   3e-4 is 30 times this (issue 16 reports that it wrecks a pretrained model).
# - simnpo: lr 1e-5, simnpo_beta 4.5, simnpo_gamma 0.0, retain_weight 8.0 (SimNPO.yaml: beta 4.5, delta 0.0 =
#   our reward margin gamma, forget weight gamma 0.125, alpha 1.0; 0.125 F + 1.0 R is 0.125 x (F + 8 R), and
#   Adam's step does not change when the loss is scaled, up to its epsilon and the gradient clip).
# - rmu: lr 1e-5, rmu_coeff 2.0, rmu_alpha 1.0, retain_weight 1.0 (RMU.yaml: steering_coeff 2, alpha 1; the file
#   itself warns that these depend on the model and data; WMDP's reference used 6.5 for Zephyr-7B). Layer: the
#   middle one (open-unlearning steers model.layers.7 of Llama-3.2-1B's 16), MLPs of layers l-2..l trained as
#   in WMDP's reference (open-unlearning trains every parameter).
# - readout_suppression (control): lr 1e-4, readout_beta 0.1, retain_weight 1.0. No published setting: only
#   the unembedding trains, so 10 x NPO's rate (on the organism the readout control's rate is 17 x NPO's).
# - depth_suppression (zoo control, ``analysis.zoo.suppression``): NPO's settings, on blocks >= L and the
#   readout only.
# - retrain (control, from a base checkpoint): lr 1e-5, 5 epochs over the RETAIN set (open-unlearning's
#   configs/experiment/finetune/tofu/default.yaml: how TOFU's retain models are fine-tuned from the base).
#
# Departures from open-unlearning, kept from the organism's loop: Adam with a constant rate and no weight decay
# (open-unlearning: paged AdamW 32-bit, weight_decay 0.01, one warm-up epoch then linear decay), the forget
# term's NLL length-normalised per sample (theirs: per token over the batch), and steps = epochs x
# floor(n / batch) (our sampler drops an epoch's incomplete last batch).
#
# Measured here on a tiny Llama only (benchmarks/unlearn_presets.py: 2 layers, hidden 64, fine-tuned to give 4
# forget and 8 retain facts top-1; mean length-normalised answer log-prob, original -0.003 on both sets). With
# 4 forget samples the preset's 10 epochs are 10 steps, and at lr 1e-5 nothing moves (every change < 0.001);
# at TOFU forget10's 130 steps (10 epochs of 400 samples) and the preset's rates:
#
#   method               forget log-prob  forget acc  retain log-prob  retain acc
#   grad_ascent          -0.61            0.75        -0.021           1.00
#   grad_diff            -0.61            0.75        -0.006           1.00
#   npo                  -0.62            0.50        -0.011           1.00
#   simnpo               -0.54            0.50        -0.003           1.00
#   readout_suppression  -0.010           1.00        -0.005           1.00
#   depth_suppression    -0.005           1.00        -0.003           1.00
#   rmu                  -0.003           1.00        -0.003           1.00
#
# So the direction holds (forget falls, retain holds) and the sizes say nothing about a 1B model: RMU's c = 2 is
# far below this model's residual norm (~30 at the steered layer), and the controls train few weights. Pass
# --lr / --steps for small models.
PRETRAINED_PRESET: dict[str, dict[str, Any]] = {
    "grad_ascent": {"lr": 1e-5},
    "grad_diff": {"lr": 1e-5, "retain_weight": 1.0},
    "npo": {"lr": 1e-5, "npo_beta": 0.1, "retain_weight": 1.0},
    "simnpo": {"lr": 1e-5, "simnpo_beta": 4.5, "simnpo_gamma": 0.0, "retain_weight": 8.0},
    "rmu": {"lr": 1e-5, "rmu_coeff": 2.0, "rmu_alpha": 1.0, "retain_weight": 1.0},
    "readout_suppression": {"lr": 1e-4, "readout_beta": 0.1, "retain_weight": 1.0},
    "depth_suppression": {"lr": 1e-5, "npo_beta": 0.1, "retain_weight": 1.0},
    "retrain": {"lr": 1e-5},
}
PRESET_EPOCHS: dict[str, tuple[int, str]] = {  # method -> (epochs, the set they pass over)
    **{m: (PRETRAINED_EPOCHS, "forget") for m in PRETRAINED_PRESET}, "retrain": (RETRAIN_EPOCHS, "retain")}


def epoch_steps(epochs: int, n: int, batch_size: int) -> int:
    """Steps of ``epochs`` passes over ``n`` rows in batches of ``batch_size`` (RowSampler's batches: at most n
    rows each, an epoch's incomplete last batch dropped)."""
    return max(1, epochs * (n // max(1, min(batch_size, n))))


def pretrained_config(method: str, n_forget: int, n_retain: int, **overrides: Any) -> UnlearnConfig:
    """The pretrained preset of ``method`` (``PRETRAINED_PRESET``) with ``overrides`` (fields given explicitly;
    None values are ignored); ``steps``, unless given, is the preset's epochs over the forget set (the retain
    set for ``retrain``)."""
    if method not in PRETRAINED_PRESET:
        raise AnalysisInputError(f"no pretrained preset for method {method!r} (expected one of "
                                 f"{', '.join(PRETRAINED_PRESET)})")
    given = {k: v for k, v in overrides.items() if v is not None}
    cfg = dataclasses.replace(UnlearnConfig(), **{**PRETRAINED_PRESET[method], **given})
    if cfg.steps is None:
        epochs, over = PRESET_EPOCHS[method]
        cfg = dataclasses.replace(cfg, steps=epoch_steps(epochs, n_retain if over == "retain" else n_forget,
                                                         cfg.batch_size))
    return cfg


@dataclass
class UnlearnResult:
    """What one unlearning run did, aligned with ``forget_ids``.

    ``trajectory`` [n_recorded, n_forget] float64 answer probabilities (row 0 = original; see the module
    docstring); ``correct`` the matching top-1 correctness; ``losses`` the training loss per step;
    ``difficulty`` is :func:`observed_difficulty` of the trajectory; ``extra`` holds method-specific
    records (e.g. the retrain control's ``training_pairs``).
    """

    method: str
    config: UnlearnConfig
    trajectory: np.ndarray
    forget_ids: list[str]
    seconds: float
    difficulty: dict[str, np.ndarray]
    correct: np.ndarray | None = None
    losses: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def forget_accuracy(self) -> float:
        """Top-1 accuracy of the forget set's canonical prompts after unlearning."""
        return float(self.correct[-1].mean()) if self.correct is not None else float("nan")

    def difficulty_by_id(self) -> dict[str, dict[str, float]]:
        return {
            sid: {k: float(v[i]) for k, v in self.difficulty.items()} for i, sid in enumerate(self.forget_ids)
        }


def observed_difficulty(trajectory: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample difficulty from a ``[n_recorded, n_forget]`` probability trajectory (module docstring)."""
    traj = np.asarray(trajectory, dtype=np.float64)
    if traj.ndim != 2 or traj.shape[0] < 1:
        raise AnalysisInputError(f"trajectory must be [steps + 1, n_forget], got shape {traj.shape}")
    if np.any(traj < 0) or np.any(traj > 1) or not np.all(np.isfinite(traj)):
        raise AnalysisInputError("trajectory values must be probabilities in [0, 1]")
    after = traj[1:].mean(axis=0) if traj.shape[0] > 1 else np.full(traj.shape[1], np.nan)
    return {"final_loss": -np.log(np.maximum(traj[-1], _TINY)), "auc": traj.mean(axis=0), "auc_after": after}


# ----------------------------------------------------------------------------------------------------
# Registry


class UnlearnMethod:
    """One unlearning method. Subclasses register with :func:`register` and implement :meth:`unlearn`."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # for menus and tables (the registry's label; default: the name)
    role: ClassVar[ModelRole] = "unlearned"  # role of the returned handle ("control" for the controls)
    needs_retain: ClassVar[bool] = True
    # Values for the config fields left None (steps, lr), tuned on the built-in organism (200 people,
    # forget = the 80 facts of 20 people); measured results are in the package docstring.
    defaults: ClassVar[dict[str, Any]] = {}

    def unlearn(self, ctx: UnlearnContext) -> None:
        raise NotImplementedError


# Every method, in registration order (the import order of analysis/unlearning/__init__.py).
UNLEARNING_METHODS: Registry[type[UnlearnMethod]] = Registry("unlearning method")


def register(name: str, label: str | None = None) -> Callable[[type[UnlearnMethod]], type[UnlearnMethod]]:
    """Class decorator: ``@register("npo", label="NPO") class NPO(GradientMethod): ...``; sets ``cls.name``
    and adds the class to :data:`UNLEARNING_METHODS` (a second class under the same name is a ValueError)."""

    def deco(cls: type[UnlearnMethod]) -> type[UnlearnMethod]:
        UNLEARNING_METHODS.register(name, label if label is not None else cls.__dict__.get("label") or name)(cls)
        cls.name = name
        cls.label = UNLEARNING_METHODS.label(name)
        return cls

    return deco


def get_method(name: str) -> UnlearnMethod:
    """A fresh instance of the method registered as ``name``; AnalysisInputError naming the known methods."""
    return UNLEARNING_METHODS.get(name)()


# ----------------------------------------------------------------------------------------------------
# Shared machinery


def take_rows(batch: PairBatch, idx: torch.Tensor) -> PairBatch:
    """Rows ``idx`` of a right-padded batch, with the padding trimmed to the longest selected row."""
    lengths = batch.lengths[idx]
    t = int(lengths.max())
    return PairBatch(
        tokens=batch.tokens[idx, :t],
        target_mask=batch.target_mask[idx, : max(t - 1, 1)],
        prompt_lens=batch.prompt_lens[idx],
        answer_lens=batch.answer_lens[idx],
        lengths=lengths,
    )


def real_positions(batch: PairBatch) -> torch.Tensor:
    """[B, T] bool: True at every non-pad token."""
    pos = torch.arange(batch.tokens.shape[1], device=batch.tokens.device)
    return pos[None, :] < batch.lengths[:, None]


def nll(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """Mean over rows of the per-token (length-normalised) answer NLL."""
    return -answer_logprob(logits, batch, "mean").mean()


def retain_term(ctx: UnlearnContext, retain: PairBatch | None) -> torch.Tensor:
    """``retain_weight`` x the NLL of a retain batch: the utility-preserving term shared by the methods."""
    assert retain is not None, "this method needs a retain batch"
    return ctx.cfg.retain_weight * nll(ctx.model(retain.tokens, return_type="logits"), retain)


class RowSampler:
    """Batches of row indices without replacement from seeded permutations, reshuffled every epoch."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.size, self.gen = n, min(batch_size, n), generator
        self.order = torch.randperm(n, generator=generator)
        self.cursor = 0

    def next(self) -> torch.Tensor:
        if self.cursor + self.size > self.n:
            self.order, self.cursor = torch.randperm(self.n, generator=self.gen), 0
        idx = self.order[self.cursor : self.cursor + self.size]
        self.cursor += self.size
        return idx


@dataclass
class LoopState:
    """What the shared loop holds between steps, for a :class:`LoopCheckpoint` to save and restore: the
    context (model, generator, trajectory, losses), the optimiser, the trained parameters by name, the batch
    samplers (``"forget"``, and ``"retain"`` for methods with a retain term) and the steps done."""

    ctx: UnlearnContext
    optimizer: torch.optim.Optimizer
    params: dict[str, torch.nn.Parameter]
    samplers: dict[str, RowSampler]
    step: int = 0


class LoopCheckpoint(Protocol):
    """Makes the shared loop resumable (``analysis.unlearn.checkpoint.Checkpointer``).

    ``restore(state)`` runs once after the optimiser and samplers are built and before the first step: it
    loads a saved state into ``state`` (parameters, optimiser, samplers, generators, trajectory rows, losses)
    and returns the steps already done (0 = start afresh). ``after_step(state)`` runs after every step, with
    ``state.step`` the steps done; it saves when it chooses to (every N steps, and after the last)."""

    def restore(self, state: LoopState) -> int: ...

    def after_step(self, state: LoopState) -> None: ...


@dataclass
class UnlearnContext:
    """Everything a method needs. ``model`` is the copy being trained (methods may replace it)."""

    original: ModelHandle
    model: torch.nn.Module
    forget: list[Sample]
    retain: list[Sample]
    cfg: UnlearnConfig
    corpus: Corpus | None
    progress: ProgressFn | None
    generator: torch.Generator
    forget_batch: PairBatch
    retain_batch: PairBatch | None
    trajectory: list[np.ndarray] = field(default_factory=list)
    correct: list[np.ndarray] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # Parameters (by name) the shared loop never trains, whatever the method asks for: those with no source
    # in the checkpoint the model will be saved back to (e.g. the zero biases TransformerLens adds to a Llama).
    frozen: frozenset[str] = frozenset()
    # Saves and restores the loop's state (resumable runs, analysis.unlearn.checkpoint); None = not resumable.
    checkpoint: LoopCheckpoint | None = None

    @property
    def device(self) -> torch.device:
        return self.original.device

    @torch.no_grad()
    def record(self, model: torch.nn.Module | None = None) -> None:
        """Append one trajectory row: every forget sample's answer probability, in one forward."""
        m = model if model is not None else self.model
        logits = m(self.forget_batch.tokens, return_type="logits")
        lp = answer_logprob(logits, self.forget_batch, "sum").double().cpu().numpy()
        self.trajectory.append(np.clip(np.exp(lp), 0.0, 1.0))
        self.correct.append(answer_correct(logits, self.forget_batch).cpu().numpy())

    def report(self, frac: float, message: str) -> None:
        if self.progress is not None:
            self.progress(frac, message)


@dataclass(frozen=True)
class StepBatch:
    """One optimisation step's input (like SAELens's ``TrainStepInput``): the forget rows and their indices
    into the forget set, and the retain rows and indices (None for methods without a retain term)."""

    forget: PairBatch
    forget_idx: torch.Tensor
    retain: PairBatch | None
    retain_idx: torch.Tensor | None


def forget_logprob(ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
    """[B] summed answer log-prob of the step's forget rows under the model being unlearned (NPO, SimNPO and
    the readout control's forget terms)."""
    return answer_logprob(ctx.model(step.forget.tokens, return_type="logits"), step.forget, "sum")


class GradientMethod(UnlearnMethod):
    """The shared optimisation loop; subclasses define :meth:`loss` (and optionally what is trained)."""

    def prepare(self, ctx: UnlearnContext) -> None:
        """Precompute anything fixed (reference log-probs, target vectors) before the first step."""

    def trainable(self, ctx: UnlearnContext) -> list[torch.nn.Parameter]:
        return list(ctx.model.parameters())

    def loss(self, ctx: UnlearnContext, step: StepBatch) -> torch.Tensor:
        raise NotImplementedError

    def trained_parameters(self, ctx: UnlearnContext) -> dict[str, torch.nn.Parameter]:
        """:meth:`trainable` by name, less ``ctx.frozen`` (recorded in ``ctx.extra["frozen_parameters"]``)."""
        names = {id(p): n for n, p in ctx.model.named_parameters()}
        wanted = {names[id(p)]: p for p in self.trainable(ctx)}
        held = sorted(n for n in wanted if n in ctx.frozen)
        if held:
            ctx.extra["frozen_parameters"] = held
        params = {n: p for n, p in wanted.items() if n not in ctx.frozen}
        if not params:
            raise AnalysisInputError(f"method {self.name!r} would train no parameter: every one it trains "
                                     f"({', '.join(sorted(wanted)[:4])} ...) has to stay frozen")
        return params

    def unlearn(self, ctx: UnlearnContext) -> None:
        cfg, model = ctx.cfg, ctx.model
        if cfg.steps is None or cfg.lr is None:
            raise AnalysisInputError(f"method {self.name!r} needs steps and lr (it has no default for them)")
        self.prepare(ctx)
        named = self.trained_parameters(ctx)
        params = list(named.values())
        trainable_ids = {id(p) for p in params}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable_ids)
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=0.0)
        f_sampler = RowSampler(len(ctx.forget), cfg.batch_size, ctx.generator)
        r_sampler = (
            RowSampler(len(ctx.retain), cfg.batch_size, ctx.generator)
            if self.needs_retain and ctx.retain_batch is not None
            else None
        )
        model.eval()  # HookedTransformer has no dropout; eval keeps any other model deterministic
        samplers = {"forget": f_sampler, **({"retain": r_sampler} if r_sampler is not None else {})}
        state = LoopState(ctx=ctx, optimizer=opt, params=named, samplers=samplers)
        start = ctx.checkpoint.restore(state) if ctx.checkpoint is not None else 0
        if start == 0:
            ctx.record()
        for step in range(start, cfg.steps):
            fi = f_sampler.next()
            ri = r_sampler.next() if r_sampler is not None else None
            fb = take_rows(ctx.forget_batch, fi.to(ctx.forget_batch.tokens.device))
            rb = (
                take_rows(ctx.retain_batch, ri.to(ctx.retain_batch.tokens.device))
                if ri is not None and ctx.retain_batch is not None
                else None
            )
            loss = self.loss(ctx, StepBatch(fb, fi, rb, ri))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            ctx.losses.append(float(loss.detach()))
            ctx.record()
            if ctx.checkpoint is not None:  # before the report: an interrupt raised there keeps this step
                state.step = step + 1
                ctx.checkpoint.after_step(state)
            if step % 10 == 0 or step == cfg.steps - 1:
                ctx.report(
                    (step + 1) / cfg.steps,
                    f"{self.name}: step {step + 1}/{cfg.steps}, loss {ctx.losses[-1]:.3f}",
                )
        for p in model.parameters():
            p.requires_grad_(False)


# ----------------------------------------------------------------------------------------------------
# Entry point


def as_handle(handle_or_model: ModelHandle | torch.nn.Module) -> ModelHandle:
    if isinstance(handle_or_model, ModelHandle):
        return handle_or_model
    tokenizer = getattr(handle_or_model, "tokenizer", None)
    if tokenizer is None:
        raise AnalysisInputError(
            "a bare model needs a tokenizer attached (model.tokenizer); pass a ModelHandle"
        )
    from analysis.organism.train import in_memory_handle

    return in_memory_handle(handle_or_model, tokenizer)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over parameter and buffer names and bytes, 16 hex chars: equal iff the weights are."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _check_samples(forget: list[Sample], retain: list[Sample], method: UnlearnMethod) -> None:
    if not forget:
        raise AnalysisInputError("the forget set is empty: nothing to unlearn")
    if method.needs_retain and not retain:
        raise AnalysisInputError(f"method {method.name!r} needs a non-empty retain set")
    ids = [s.id for s in forget]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise AnalysisInputError(f"forget set lists sample {dup!r} more than once")
    both = set(ids) & {s.id for s in retain}
    if both:
        raise AnalysisInputError(f"samples in both the forget and retain sets: {sorted(both)[:3]}")


def run_unlearning(
    handle_or_model: ModelHandle | torch.nn.Module,
    method: str,
    forget: list[Sample],
    retain: list[Sample],
    cfg: UnlearnConfig | None = None,
    corpus: Corpus | None = None,
    progress: ProgressFn | None = None,
) -> tuple[ModelHandle, UnlearnResult]:
    """Unlearn ``forget`` from a copy of the model with ``method``; the original is never modified.

    ``corpus`` is needed only by the ``retrain`` control (it retrains the organism on the corpus minus
    the forget facts). Returns the new in-memory model and the run's :class:`UnlearnResult`.
    """
    return run_method(handle_or_model, get_method(method), forget, retain, cfg, corpus, progress)


def run_method(
    handle_or_model: ModelHandle | torch.nn.Module,
    m: UnlearnMethod,
    forget: list[Sample],
    retain: list[Sample],
    cfg: UnlearnConfig | None = None,
    corpus: Corpus | None = None,
    progress: ProgressFn | None = None,
    *,
    frozen: Collection[str] = (),
    checkpoint: LoopCheckpoint | None = None,
) -> tuple[ModelHandle, UnlearnResult]:
    """:func:`run_unlearning` with a method instance rather than a registered name: for methods built with
    their own parameters (the zoo's depth-limited suppressions, ``analysis.zoo.suppression``).

    ``frozen`` names parameters the shared loop of :class:`GradientMethod` never trains (those with no source
    in the checkpoint the result is saved back to); ``checkpoint`` makes that loop resumable (see
    :class:`LoopCheckpoint`). Both are for gradient methods; the organism's ``retrain`` control ignores them."""
    cfg = (cfg if cfg is not None else UnlearnConfig()).resolved(m.defaults)
    cfg.validate()
    forget, retain = list(forget), list(retain)
    _check_samples(forget, retain, m)
    original = as_handle(handle_or_model)
    t0 = time.perf_counter()
    forget_batch = make_batch(original, [s.prompt for s in forget], [s.answer for s in forget])
    retain_batch = (
        make_batch(original, [s.prompt for s in retain], [s.answer for s in retain])
        if retain and m.needs_retain
        else None
    )
    model = copy.deepcopy(original.model)
    for p in model.parameters():
        p.requires_grad_(False)
    ctx = UnlearnContext(
        original=original,
        model=model,
        forget=forget,
        retain=retain,
        cfg=cfg,
        corpus=corpus,
        progress=progress,
        generator=torch.Generator().manual_seed(cfg.seed),
        forget_batch=forget_batch,
        retain_batch=retain_batch,
        frozen=frozenset(frozen),
        checkpoint=checkpoint,
    )
    with torch.random.fork_rng(devices=[]), deterministic():
        torch.manual_seed(cfg.seed)  # for any op that draws from the global RNG
        m.unlearn(ctx)
    ctx.model.eval()
    for p_new, p_orig in zip(ctx.model.parameters(), original.model.parameters(), strict=True):
        p_new.requires_grad_(p_orig.requires_grad)  # hand back a model that behaves like the original
    trajectory = np.stack(ctx.trajectory)
    seconds = time.perf_counter() - t0
    result = UnlearnResult(
        method=m.name,
        config=cfg,
        trajectory=trajectory,
        forget_ids=[s.id for s in forget],
        seconds=seconds,
        difficulty=observed_difficulty(trajectory),
        correct=np.stack(ctx.correct),
        losses=ctx.losses,
        extra=ctx.extra,
    )
    handle = ModelHandle(
        model=ctx.model,
        tokenizer=original.tokenizer,
        name=f"{original.name}-{m.name}",
        role=m.role,
        path=None,
        fingerprint=f"mem-{weights_fingerprint(ctx.model)}",
        fmt=original.fmt,
        meta={
            "unlearning": {
                "method": m.name,
                "config": cfg.to_dict(),
                "source": original.name,
                "source_fingerprint": original.fingerprint,
                "n_forget": len(forget),
            }
        },
    )
    return handle, result
