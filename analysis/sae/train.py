"""Train, cache and load a TopK SAE (SAELens ``TopKSAE``) on the ORIGINAL model's residual stream.

The SAE is trained with SAELens's TopK SAE class and a short Adam loop over cached activations of the
study's own text (prompts + answers of every split, plus the training templates in
``sample.metadata["train_prompts"]``), packed to the model's context. (SAELens's ``SAETrainingRunner`` is
built for streaming large corpora; for a few thousand tokens this loop is simpler and offline by design.)

Cached under ``study.root / "sae" / "<hook>-k<k>-d<d_sae>-<fingerprint>"`` as SAELens's own
``save_model`` format plus ``erasure_sae.json`` recording the original's fingerprint, hook and health.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens import TopKSAE, TopKSAEConfig

from analysis.errors import AnalysisInputError
from analysis.models.handle import ModelHandle
from analysis.scoring import answer_correct, chunks, make_batch

META = "erasure_sae.json"


def hook_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def check_layer(handle: ModelHandle, layer: int) -> int:
    if not 0 <= int(layer) < handle.n_layers:
        raise AnalysisInputError(f"layer {layer} is out of range: the model has layers 0..{handle.n_layers - 1}")
    return int(layer)


@dataclass
class SAEOptions:
    layer: int | None = None  # default: n_layers // 2
    k: int = 16
    expansion: int = 4  # d_sae = expansion * d_model
    steps: int = 1500
    batch_tokens: int = 512
    lr: float = 2e-3
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


@dataclass
class TrainedSAE:
    sae: TopKSAE
    layer: int
    hook: str
    fingerprint: str  # of the model the SAE was trained on (the original)
    path: Path
    health: SAEHealth
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def sae_id(self) -> str:
        return self.path.name

    def summary(self) -> dict[str, Any]:
        return {"layer": self.layer, "hook": self.hook, "fingerprint": self.fingerprint, "path": str(self.path),
                "sae_id": self.sae_id, "k": int(self.sae.cfg.k), "d_sae": int(self.sae.cfg.d_sae),
                **self.health.to_dict()}


def training_texts(study: Any) -> list[str]:
    """Every prompt + answer of the study (all splits, the training templates and paraphrases too)."""
    out: list[str] = []
    for s in study.samples():
        prompts = [s.prompt, *s.metadata.get("train_prompts", []), *s.paraphrases]
        for p in dict.fromkeys(prompts):
            out.append(f"{p} {s.answer}")
    return out


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


def sae_dir(study: Any, layer: int, k: int, d_sae: int, fingerprint: str) -> Path:
    return Path(study.root) / "sae" / f"{hook_name(layer)}-k{k}-d{d_sae}-{fingerprint}"


@torch.no_grad()
def spliced_accuracy(handle: ModelHandle, sae: TopKSAE, hook: str, prompts: Sequence[str],
                     answers: Sequence[str]) -> tuple[float, float]:
    """(accuracy, accuracy with the SAE reconstruction replacing the activation at ``hook``)."""
    batch = make_batch(handle, prompts, answers)
    clean = handle.model(batch.tokens, return_type="logits")

    def splice(x: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        return sae.decode(sae.encode(x.float())).to(x.dtype)

    spliced = handle.model.run_with_hooks(batch.tokens, return_type="logits", fwd_hooks=[(hook, splice)])
    return (float(answer_correct(clean, batch).float().mean()), float(answer_correct(spliced, batch).float().mean()))


def train_sae(study: Any, options: SAEOptions | None = None, force: bool = False) -> TrainedSAE:
    """Train (or load from the study's cache) a TopK SAE on the original model at ``blocks.L.hook_resid_post``."""
    opts = options or SAEOptions()
    handle = study.load("original")
    layer = check_layer(handle, handle.n_layers // 2 if opts.layer is None else opts.layer)
    if opts.k < 1 or opts.expansion < 1 or opts.steps < 1:
        raise AnalysisInputError("k, expansion and steps must be positive")
    hook = hook_name(layer)
    d_model = int(handle.model.cfg.d_model)
    d_sae = opts.expansion * d_model
    fp = study.fingerprint("original")
    out = sae_dir(study, layer, opts.k, d_sae, fp)
    if (out / META).is_file() and not force:
        return load_sae(study, layer=layer, k=opts.k, d_sae=d_sae)

    torch.manual_seed(opts.seed)
    tokens = token_rows(handle, training_texts(study), int(handle.model.cfg.n_ctx))
    acts = collect_activations(handle, tokens, hook, layer)
    cfg = TopKSAEConfig(d_in=d_model, d_sae=d_sae, k=opts.k, dtype="float32", device="cpu")
    cfg.metadata.hook_name = hook
    cfg.metadata.model_name = f"erasure:{fp}"
    sae = TopKSAE(cfg)
    with torch.no_grad():  # start the decoder bias at the data mean (standard for TopK SAEs)
        sae.b_dec.copy_(acts.mean(0))
    optim = torch.optim.Adam(sae.parameters(), lr=opts.lr)
    gen = torch.Generator().manual_seed(opts.seed)
    t0 = time.perf_counter()
    n_seen = 0
    for step in range(opts.steps):
        idx = torch.randint(0, acts.shape[0], (min(opts.batch_tokens, acts.shape[0]),), generator=gen)
        x = acts[idx]
        recon = sae.decode(sae.encode(x))
        loss = (recon - x).pow(2).sum(-1).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():  # unit-norm decoder rows
            sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8))
        n_seen += x.shape[0]
        for g in optim.param_groups:  # linear decay over the last 20%
            g["lr"] = opts.lr * min(1.0, (opts.steps - step) / max(1, 0.2 * opts.steps))
    secs = time.perf_counter() - t0

    health = _health(handle, sae, hook, acts, study, secs, n_seen)
    out.mkdir(parents=True, exist_ok=True)
    sae.save_model(out)
    meta = {"fingerprint": fp, "layer": layer, "hook": hook, "options": opts.to_dict(), "health": health.to_dict()}
    (out / META).write_text(json.dumps(meta, indent=2))
    return TrainedSAE(sae=sae, layer=layer, hook=hook, fingerprint=fp, path=out, health=health,
                      options=opts.to_dict())


@torch.no_grad()
def _health(handle: ModelHandle, sae: TopKSAE, hook: str, acts: torch.Tensor, study: Any, secs: float,
            n_seen: int) -> SAEHealth:
    feats = sae.encode(acts)
    recon = sae.decode(feats)
    fvu = float((recon - acts).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum())
    active = feats > 0
    l0 = float(active.sum(-1).float().mean())
    n_dead = int((~active.any(0)).sum())
    retain = study.retain
    if retain:
        acc, acc_s = spliced_accuracy(handle, sae, hook, [s.prompt for s in retain], [s.answer for s in retain])
    else:
        acc = acc_s = float("nan")
    d_sae = int(sae.cfg.d_sae)
    return SAEHealth(fvu=fvu, l0=l0, dead_fraction=n_dead / d_sae, n_dead=n_dead, d_sae=d_sae, retain_acc=acc,
                     retain_acc_spliced=acc_s, n_tokens=int(acts.shape[0]), train_seconds=secs,
                     tokens_per_s=n_seen / max(secs, 1e-9))


def load_sae(study: Any, layer: int | None = None, k: int = 16, d_sae: int | None = None,
             path: str | Path | None = None) -> TrainedSAE:
    """Load a cached SAE; refuses one trained on a model other than this study's original."""
    fp = study.fingerprint("original")
    if path is None:
        handle = study.load("original")
        layer = check_layer(handle, handle.n_layers // 2 if layer is None else layer)
        d_sae = d_sae or 4 * int(handle.model.cfg.d_model)
        path = sae_dir(study, layer, k, d_sae, fp)
        if not (path / META).is_file():
            cands = sorted((Path(study.root) / "sae").glob(f"{hook_name(layer)}-k{k}-*")) if (
                Path(study.root) / "sae").is_dir() else []
            cands = [c for c in cands if (c / META).is_file()]
            if not cands:
                raise AnalysisInputError(f"no SAE trained at layer {layer} (k={k}); run `erasure sae train "
                                         f"{study.root} --layer {layer}` first")
            path = cands[0]
    path = Path(path)
    if not (path / META).is_file():
        raise AnalysisInputError(f"{path} is not an SAE directory of this workbench (no {META})")
    meta = json.loads((path / META).read_text())
    if meta.get("fingerprint") != fp:
        raise AnalysisInputError(f"the SAE at {path} was trained on a model with fingerprint "
                                 f"{meta.get('fingerprint')!r}, not this study's original ({fp!r}); retrain it")
    sae = TopKSAE.load_from_disk(path, device="cpu")
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return TrainedSAE(sae=sae, layer=int(meta["layer"]), hook=meta["hook"], fingerprint=fp, path=path,
                      health=SAEHealth(**meta["health"]), options=meta.get("options", {}))
