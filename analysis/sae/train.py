"""Train, cache and load a TopK SAE on the ORIGINAL model's residual stream, with SAELens's own training
runner (``LanguageModelSAETrainingRunner`` + ``TopKTrainingSAEConfig``: Adam, linear LR decay, the TopK
auxiliary loss that revives dead features, decoder-norm folding on save).

The training text is the study's own (prompts + answers of every split, plus the training templates in
``sample.metadata["train_prompts"]``), tokenised through the model's tokenizer and packed into rows of the
model's context. Those rows go to the runner as an in-memory ``datasets.IterableDataset``, the
HookedTransformer as ``override_model``: nothing is downloaded and nothing is logged to W&B. The rows are
repeated, each epoch in a fresh seeded order, up to the training-token budget, so the runner never reaches
the end of its dataset (at an epoch end SAELens drops the rows of the unfinished LLM batch, which would
leave the same tail of the study out of every epoch).

Cost: the runner re-runs the model over the rows each epoch instead of caching the activations once, so on
the organism it takes about 48 CPU-seconds for the default 1500 steps x 512 tokens (a hand-written Adam loop over
cached activations, used before, took about 12), for a slightly better SAE (FVU 0.088 vs 0.098 on the demo).

The options (``SAEOptions``) live in ``analysis.sae.options``.

Devices: SAELens trains on the CPU (the model itself runs on its own device); the inference SAE is then loaded
on the device of the activations it reads, the original's at its hook (``hook_device``), and every analysis
that applies it to a model asks ``TrainedSAE.on(device)`` for it on that model's device: a copy moved there,
made once per device, so an SAE shared between models on different devices is never moved under another.

Deterministic for a given ``SAEOptions.seed``: the SAE's init and SAELens's buffer shuffles draw from torch's
global RNG, which is seeded inside ``torch.random.fork_rng`` (the caller's RNG state is left as it was).

Cached under ``study.root / "sae" / "<hook>-k<k>-d<d_sae>-<fingerprint>-<options hash>"``: the hash covers
every ``SAEOptions`` field (and the trainer version), so an SAE trained with other steps, lr or seed is never
silently reused. The directory holds SAELens's inference SAE (``cfg.json``, ``sae_weights.safetensors``),
its ``runner_cfg.json`` and ``sparsity.safetensors``, plus ``erasure_sae.json`` recording the original's
fingerprint, the hook, the options and the health.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from datasets import Dataset
from sae_lens import (
    LanguageModelSAERunnerConfig,
    LanguageModelSAETrainingRunner,
    LoggingConfig,
    TopKSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.saes.sae import TrainingSAE
from sae_lens.training.sae_trainer import SAETrainer

from analysis.errors import AnalysisInputError, StudyError
from analysis.hooks import resid_post
from analysis.models.handle import ModelHandle, is_fingerprint
from analysis.names import is_inside
from analysis.sae.fit import FitSums, reconstruct
from analysis.sae.options import TRAINER, SAEOptions
from analysis.scoring import answer_correct, chunks, make_batch
from analysis.store import ProgressFn

if TYPE_CHECKING:
    from analysis.study import Study


META = "erasure_sae.json"
LLM_BATCH_TOKENS = 8192  # tokens per forward of the model while SAELens collects activations
BUFFER_TOKENS = 8192  # SAELens's mixing buffer (at least 4 training batches)
# Rows the SAE trains on: the study's texts packed into rows of at most this many tokens. Not the model's n_ctx:
# on a real model (SmolLM2: 8192) every activation batch would be one long row with quadratic attention, over
# the same few thousand tokens of study text; 300 steps took over 25 minutes on 2 CPU cores without finishing.
SAE_CONTEXT = 128


@dataclass
class SAEHealth:
    fvu: float  # fraction of variance unexplained on the training activations
    l0: float  # mean active features per token
    dead_fraction: float  # features never active on the training tokens
    n_dead: int
    d_sae: int
    retain_acc: float  # retain answer accuracy of the original
    retain_acc_spliced: float  # ... with the SAE reconstruction spliced in at the hook
    n_tokens: int
    train_seconds: float
    tokens_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Device = torch.device | str


def same_device(a: Device, b: Device) -> bool:
    """True when ``a`` and ``b`` name the same device ("cuda" is the current CUDA device)."""
    da, db = torch.device(a), torch.device(b)
    if da.type != db.type:
        return False
    if da.type == "cuda":
        current = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (da.index if da.index is not None else current) == (db.index if db.index is not None else current)
    return da.index == db.index or da.index is None or db.index is None


def sae_device(sae: TopKSAE) -> torch.device:
    """The device the SAE's parameters are on."""
    return sae.W_enc.device


def sae_on(sae: TopKSAE, device: Device) -> TopKSAE:
    """``sae`` itself when it is on ``device``, else a frozen copy moved there (``sae`` is left where it is)."""
    if same_device(sae_device(sae), device):
        return sae
    moved = copy.deepcopy(sae).to(torch.device(device))
    _freeze(moved)
    return moved


def hook_device(handle: ModelHandle, layer: int) -> torch.device:
    """The device of ``handle``'s residual stream at block ``layer`` (its block's GPU when the model is split
    over several: TransformerLens's ``get_device_for_block_index``; else the model's device)."""
    cfg = handle.model.cfg
    if int(getattr(cfg, "n_devices", 1) or 1) > 1:
        from transformer_lens.utilities.multi_gpu import get_device_for_block_index

        return torch.device(get_device_for_block_index(int(layer), cfg))
    return torch.device(handle.device)


@dataclass
class TrainedSAE:
    sae: TopKSAE
    layer: int
    hook: str
    fingerprint: str  # of the model the SAE was trained on (the original)
    path: Path
    health: SAEHealth
    options: dict[str, Any] = field(default_factory=dict)
    # copies of this SAE on other devices (``on``), made once each; never compared, never carried by ``replace``
    _copies: dict[str, TrainedSAE] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def sae_id(self) -> str:
        return self.path.name

    @property
    def device(self) -> torch.device:
        return sae_device(self.sae)

    def on(self, device: Device) -> TrainedSAE:
        """This SAE on ``device`` (the device of the activations it is about to read): itself when already
        there, else a copy moved there, made once per device and kept. This one is never moved, so an SAE
        shared by models on different devices keeps working for each."""
        if same_device(self.device, device):
            return self
        key = str(torch.device(device))
        if key not in self._copies:
            self._copies[key] = replace(self, sae=sae_on(self.sae, device))
        return self._copies[key]

    def for_model(self, handle: ModelHandle) -> TrainedSAE:
        """This SAE on the device of ``handle``'s activations at the SAE's hook."""
        return self.on(hook_device(handle, self.layer))

    def summary(self) -> dict[str, Any]:
        return {"layer": self.layer, "hook": self.hook, "fingerprint": self.fingerprint, "path": str(self.path),
                "sae_id": self.sae_id, "k": int(self.sae.cfg.k), "d_sae": int(self.sae.cfg.d_sae),
                "options": self.options, **self.health.to_dict()}


def training_texts(study: Study) -> list[str]:
    """Every prompt + answer of the study (all splits, the training templates and paraphrases too)."""
    out: list[str] = []
    for s in study.samples():
        prompts = [s.prompt, *s.metadata.get("train_prompts", []), *s.paraphrases]
        for p in dict.fromkeys(prompts):
            out.append(f"{p} {s.answer}")
    return out


def sae_context(handle: ModelHandle) -> int:
    """The SAE's training row length: the model's context, at most ``SAE_CONTEXT``."""
    return min(int(handle.model.cfg.n_ctx), SAE_CONTEXT)


def token_rows(handle: ModelHandle, texts: Sequence[str], context: int) -> torch.Tensor:
    """Texts tokenised (each with BOS) and packed into rows of exactly ``context`` tokens."""
    tok = handle.tokenizer
    stream: list[int] = []
    for t in texts:
        ids = list(tok(t, add_special_tokens=False)["input_ids"])
        if handle.prepend_bos:
            ids = [int(tok.bos_token_id), *ids]
        eos = tok.eos_token_id
        stream.extend(ids + ([int(eos)] if eos is not None else []))
    n = len(stream) // context
    if n == 0:
        raise AnalysisInputError("not enough text in the study to train an SAE")
    return torch.tensor(stream[: n * context], dtype=torch.long).view(n, context)


def epoch_rows(rows: torch.Tensor, n_rows: int, seed: int) -> torch.Tensor:
    """``n_rows`` rows: ``rows`` repeated epoch after epoch, each epoch in its own seeded order."""
    gen = torch.Generator().manual_seed(seed)
    reps = math.ceil(n_rows / rows.shape[0])
    return torch.cat([rows[torch.randperm(rows.shape[0], generator=gen)] for _ in range(reps)])[:n_rows]


@torch.no_grad()
def collect_activations(handle: ModelHandle, tokens: torch.Tensor, hook: str, layer: int,
                        batch_size: int = 64) -> torch.Tensor:
    """[n_rows * T, d_model] activations at ``hook``."""
    acts = []
    for sl in chunks(tokens.shape[0], batch_size):
        _, cache = handle.model.run_with_cache(tokens[sl].to(handle.device), names_filter=hook,
                                               stop_at_layer=layer + 1)
        acts.append(cache[hook].reshape(-1, cache[hook].shape[-1]).float().cpu())
    return torch.cat(acts)


def _checked_fingerprint(study: Study, fingerprint: str) -> str:
    """``fingerprint`` if it is a hex digest (the only kind of value a cache path is built from)."""
    if not is_fingerprint(fingerprint):
        raise StudyError(f"model 'original' of {study.root} has the fingerprint {fingerprint!r}, not a hex digest; "
                         "an SAE cache path is never built from it")
    return fingerprint


def sae_dir(study: Study, opts: SAEOptions, d_sae: int, fingerprint: str) -> Path:
    """Cache directory of the SAE trained with ``opts`` (layer resolved) on the model ``fingerprint``: built
    from validated parts only (a hex fingerprint, integers, the options hash) and checked to lie inside the
    study (StudyError otherwise, e.g. when ``sae/`` is a symlink out of it)."""
    if opts.layer is None:
        raise AnalysisInputError("resolve the SAE layer before asking for its cache directory")
    fp = _checked_fingerprint(study, fingerprint)
    out = Path(study.root) / "sae" / f"{resid_post(int(opts.layer))}-k{int(opts.k)}-d{int(d_sae)}-{fp}-{opts.key()}"
    if not is_inside(study.root, out):
        raise StudyError(f"the SAE cache directory {out} resolves to {out.resolve()}, outside the study "
                         f"{study.root}; refusing to write there")
    return out


@torch.no_grad()
def spliced_accuracy(handle: ModelHandle, sae: TopKSAE, hook: str, prompts: Sequence[str],
                     answers: Sequence[str]) -> tuple[float, float]:
    """(accuracy, accuracy with the SAE reconstruction replacing the activation at ``hook``); the SAE runs on
    the activation's device (a copy moved there if ``sae`` is elsewhere)."""
    batch = make_batch(handle, prompts, answers)
    clean = handle.model(batch.tokens, return_type="logits")
    moved: dict[str, TopKSAE] = {}

    def splice(x: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        key = str(x.device)
        if key not in moved:
            moved[key] = sae_on(sae, x.device)
        return reconstruct(moved[key], x).to(x.dtype)

    spliced = handle.model.run_with_hooks(batch.tokens, return_type="logits", fwd_hooks=[(hook, splice)])
    return (float(answer_correct(clean, batch).float().mean()), float(answer_correct(spliced, batch).float().mean()))


StepFn = Callable[[int, int], None]  # (training steps done, total steps)


class _StudyRunner(LanguageModelSAETrainingRunner):
    """SAELens's runner without its SIGINT/SIGTERM handlers: ``signal.signal`` raises outside the main
    thread (Streamlit runs a page in a script thread), and the runner never puts the host's handlers back.
    An interrupted training simply raises; nothing half-trained is cached (no ``erasure_sae.json``).

    ``on_step(done, total)`` is called after every training step: the trainer's ``step`` (SAELens's public
    seam, one call per optimiser step of ``fit``) is wrapped on this trainer only. ``done`` counts the steps
    by the samples the trainer has consumed, as ``fit``'s own loop does (it stops when ``total`` steps' worth
    of samples are in)."""

    on_step: StepFn | None = None

    def run_trainer_with_interruption_handling(self, trainer: SAETrainer[Any, Any]) -> TrainingSAE[Any]:
        on_step = self.on_step
        if on_step is not None:
            step, per = trainer.step, max(1, int(trainer.cfg.train_batch_size_samples))
            total = max(1, math.ceil(int(trainer.cfg.total_training_samples) / per))

            def counted(batch: torch.Tensor) -> Any:
                out = step(batch)
                on_step(min(total, math.ceil(trainer.n_training_samples / per)), total)
                return out

            trainer.step = counted  # type: ignore[method-assign]
        return trainer.fit()


@contextmanager
def _quiet_saelens() -> Iterator[None]:
    """SAELens warns that an override dataset/model makes a run irreproducible from its config alone; here
    the options are recorded in erasure_sae.json and the data is the study's, so the warning is noise."""
    log = logging.getLogger("sae_lens")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


RunnerConfig = LanguageModelSAERunnerConfig[TopKTrainingSAEConfig]


def runner_config(handle: ModelHandle, opts: SAEOptions, out: Path, fingerprint: str) -> RunnerConfig:
    """SAELens's runner config for ``opts`` (layer resolved), writing the final SAE to ``out``. (SAELens only
    records ``seed``; ``train_sae`` seeds torch itself.)"""
    assert opts.layer is not None
    d_model, ctx = int(handle.model.cfg.d_model), sae_context(handle)
    return LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=d_model, d_sae=opts.expansion * d_model, k=opts.k, dtype="float32",
                                  device="cpu"),
        model_name=f"erasure:{fingerprint}", hook_name=resid_post(opts.layer), dataset_path="", streaming=False,
        is_dataset_tokenized=True, context_size=ctx, prepend_bos=False,  # rows already carry BOS per text
        model_from_pretrained_kwargs={},
        store_batch_size_prompts=max(1, LLM_BATCH_TOKENS // ctx),
        # SAELens's buffer holds n_batches_in_buffer * context_size tokens and must fit a training batch
        n_batches_in_buffer=math.ceil(max(BUFFER_TOKENS, 4 * opts.batch_tokens) / ctx),
        training_tokens=opts.steps * opts.batch_tokens, train_batch_size_tokens=opts.batch_tokens,
        lr=opts.lr, lr_scheduler_name="constant", lr_warm_up_steps=0, lr_decay_steps=opts.steps // 5,
        # a feature unfired for this many steps counts as dead and gets the TopK auxiliary loss
        dead_feature_window=max(10, opts.steps // 30),
        device="cpu", llm_device=str(handle.device), act_store_device="cpu", seed=opts.seed,
        logger=LoggingConfig(log_to_wandb=False), output_path=str(out), checkpoint_path=None, n_checkpoints=0,
        verbose=False)


def train_sae(study: Study, options: SAEOptions | None = None, force: bool = False,
              device: Device | None = None, progress: ProgressFn | None = None) -> TrainedSAE:
    """Train (or load from the study's cache) a TopK SAE on the original model at ``blocks.L.hook_resid_post``.
    The SAE comes back on ``device`` (default: the device of the original's activations at the hook).

    ``progress(fraction, message)`` is called after every training step with ``step / (steps + 1)`` (the
    last unit is measuring the trained SAE's health), then with 1.0 once the SAE is saved; a cached SAE
    reports 1.0 at once. The fractions strictly increase."""
    handle = study.load("original")
    opts = (options or SAEOptions()).resolved(handle)
    assert opts.layer is not None
    layer, hook = opts.layer, resid_post(opts.layer)
    fp = study.fingerprint("original")
    out = sae_dir(study, opts, opts.expansion * int(handle.model.cfg.d_model), fp)
    if (out / META).is_file() and not force:
        trained = load_sae(study, path=out, device=device)
        if progress is not None:
            progress(1.0, f"SAE at {hook} loaded from the study's cache")
        return trained

    rows = token_rows(handle, training_texts(study), sae_context(handle))
    cfg = runner_config(handle, opts, out, fp)
    # enough rows that SAELens never wraps around its dataset (buffer and one LLM batch of slack)
    n_rows = math.ceil((cfg.training_tokens + cfg.n_batches_in_buffer * cfg.context_size) / cfg.context_size) + \
        2 * cfg.store_batch_size_prompts
    dataset = Dataset.from_dict({"tokens": epoch_rows(rows, n_rows, opts.seed).tolist()}).to_iterable_dataset()
    (out / META).unlink(missing_ok=True)
    t0 = time.perf_counter()
    if progress is not None:
        progress(0.0, f"training the SAE at {hook}: {opts.steps} steps")
    with torch.random.fork_rng(devices=[]), _quiet_saelens():
        torch.manual_seed(opts.seed)  # before the runner: it initialises the SAE's weights
        runner = _StudyRunner(cfg, override_dataset=dataset, override_model=handle.model)
        runner.on_step = None if progress is None else _step_progress(progress, hook)
        runner.run()
    secs = time.perf_counter() - t0
    # the inference SAE, decoder norms folded in, on the device of the activations it reads
    sae = TopKSAE.load_from_disk(out, device="cpu").to(hook_device(handle, layer) if device is None else
                                                       torch.device(device))
    _freeze(sae)
    acts = collect_activations(handle, rows, hook, layer)
    health = _health(handle, sae, hook, acts, study, secs, cfg.training_tokens)
    meta = {"fingerprint": fp, "layer": layer, "hook": hook, "options": opts.to_dict(), "trainer": TRAINER,
            "health": health.to_dict()}
    (out / META).write_text(json.dumps(meta, indent=2))
    if progress is not None:
        progress(1.0, f"SAE at {hook} trained and saved")
    return TrainedSAE(sae=sae, layer=layer, hook=hook, fingerprint=fp, path=out, health=health,
                      options=opts.to_dict())


def _step_progress(progress: ProgressFn, hook: str) -> StepFn:
    """The runner's ``on_step`` for ``train_sae``: step i of n is ``i / (n + 1)`` of the work (the last unit,
    after the last step, is the health measurement), each fraction reported once."""
    last = [0]

    def on_step(done: int, total: int) -> None:
        if done <= last[0]:
            return
        last[0] = done
        after = "; measuring its health" if done >= total else ""
        progress(done / (total + 1), f"training the SAE at {hook}: step {done}/{total}{after}")

    return on_step


def _freeze(sae: TopKSAE) -> None:
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)


@torch.no_grad()
def _health(handle: ModelHandle, sae: TopKSAE, hook: str, acts: torch.Tensor, study: Study, secs: float,
            n_seen: int, batch_rows: int = 8192) -> SAEHealth:
    """The SAE's health on ``acts`` (the training activations, [N, d_model], anywhere), run in batches on the
    SAE's own device."""
    dev = sae_device(sae)
    sums = FitSums()
    n_active, ever = 0, torch.zeros(int(sae.cfg.d_sae), dtype=torch.bool, device=dev)
    for sl in chunks(acts.shape[0], batch_rows):
        x = acts[sl].to(dev).float()
        feats = sae.encode(x)
        sums.add(x, sae.decode(feats))
        active = feats > 0
        n_active += int(active.sum())
        ever |= active.any(0)
    fve = sums.result().fve
    fvu = float("nan") if fve is None else 1.0 - fve
    l0 = n_active / max(1, acts.shape[0])
    n_dead = int((~ever).sum())
    retain = study.retain
    if retain:
        acc, acc_s = spliced_accuracy(handle, sae, hook, [s.prompt for s in retain], [s.answer for s in retain])
    else:
        acc = acc_s = float("nan")
    d_sae = int(sae.cfg.d_sae)
    return SAEHealth(fvu=fvu, l0=l0, dead_fraction=n_dead / d_sae, n_dead=n_dead, d_sae=d_sae, retain_acc=acc,
                     retain_acc_spliced=acc_s, n_tokens=int(acts.shape[0]), train_seconds=secs,
                     tokens_per_s=n_seen / max(secs, 1e-9))


def load_sae(study: Study, layer: int | None = None, k: int = 16, d_sae: int | None = None,
             path: str | Path | None = None, options: SAEOptions | None = None,
             device: Device | None = None) -> TrainedSAE:
    """Load a cached SAE; refuses one trained on a model other than this study's original. It comes back on
    ``device`` (default: the device of the original's activations at its hook, the model it reads first);
    ``TrainedSAE.on`` gives it on another model's device.

    ``path`` loads that directory. Otherwise ``options`` (default: ``SAEOptions(layer=layer, k=k)``) name
    the SAE exactly; without ``options``, when the default-options SAE is not there, the most recently
    trained SAE at that layer and k (and ``d_sae``, if given) on this original is loaded."""
    fp = study.fingerprint("original")
    if path is None:
        handle = study.load("original")
        opts = (options or SAEOptions(layer=layer, k=k)).resolved(handle)
        assert opts.layer is not None
        path = sae_dir(study, opts, d_sae or opts.expansion * int(handle.model.cfg.d_model), fp)
        if not (path / META).is_file():
            if options is not None:
                raise AnalysisInputError(f"no SAE trained with these options ({opts.to_dict()}); run train_sae "
                                         "with them first")
            path = _latest(study, opts.layer, opts.k, d_sae, fp)
    path = Path(path)
    if not (path / META).is_file():
        raise AnalysisInputError(f"{path} is not an SAE directory of this workbench (no {META})")
    meta = json.loads((path / META).read_text())
    if meta.get("fingerprint") != fp:
        raise AnalysisInputError(f"the SAE at {path} was trained on a model with fingerprint "
                                 f"{meta.get('fingerprint')!r}, not this study's original ({fp!r}); retrain it")
    layer_of = int(meta["layer"])
    dev = hook_device(study.load("original"), layer_of) if device is None else torch.device(device)
    sae = TopKSAE.load_from_disk(path, device="cpu").to(dev)
    _freeze(sae)
    return TrainedSAE(sae=sae, layer=layer_of, hook=meta["hook"], fingerprint=fp, path=path,
                      health=SAEHealth(**meta["health"]), options=meta.get("options", {}))


def _latest(study: Study, layer: int, k: int, d_sae: int | None, fp: str) -> Path:
    """The most recently trained SAE at ``layer`` with ``k`` (and ``d_sae``) on the model ``fp``."""
    root = Path(study.root) / "sae"
    pattern = f"{resid_post(int(layer))}-k{int(k)}-d{int(d_sae) if d_sae else '*'}-{_checked_fingerprint(study, fp)}*"
    cands = [c for c in (root.glob(pattern) if root.is_dir() else []) if (c / META).is_file()]
    if not cands:
        raise AnalysisInputError(f"no SAE trained at layer {layer} (k={k}); run `erasure sae train "
                                 f"{study.root} --layer {layer}` first")
    return max(cands, key=lambda c: ((c / META).stat().st_mtime_ns, c.name))
