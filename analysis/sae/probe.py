"""Probe readout: does the model's own residual stream still decode the forgotten answers?

Per relation and layer, a multinomial logistic regression (torch, L-BFGS) is trained on the model's
activations at the last prompt token of RETAIN samples only (their prompt and training templates),
predicting the answer value among the retain answers of that relation, and is applied to the forget
samples. A forget sample whose answer is not among the retain classes of its relation cannot be decoded
and is left out (counted in ``n_skipped``). The probe never sees a forget sample in training:
``probe_training_set`` refuses any overlap (by id or by prompt). The result, ``ProbeResult``, lives in
``analysis.sae.result``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError
from analysis.hooks import resid_post
from analysis.models.handle import ModelHandle
from analysis.sae.result import ProbeResult
from analysis.scoring import chunks, make_batch
from analysis.store import ProgressFn


def probe_training_set(retain: Sequence[Sample], forget: Sequence[Sample]) -> list[tuple[str, str, str, str]]:
    """(sample id, relation, prompt, answer) rows the probe trains on: retain samples and their training
    templates. Raises if any forget sample (id or prompt) would leak in."""
    forget_ids = {s.id for s in forget}
    forget_prompts = {p for s in forget for p in (s.prompt, *s.metadata.get("train_prompts", []), *s.paraphrases)}
    rows: list[tuple[str, str, str, str]] = []
    for s in retain:
        if s.id in forget_ids:
            raise AnalysisInputError(f"sample {s.id!r} is in both the forget and the retain set")
        for p in dict.fromkeys([s.prompt, *s.metadata.get("train_prompts", [])]):
            if p in forget_prompts:
                raise AnalysisInputError(f"retain prompt {p!r} is also a forget prompt")
            rows.append((s.id, s.relation, p, s.answer))
    return rows


@torch.no_grad()
def prompt_acts(handle: ModelHandle, prompts: Sequence[str], answers: Sequence[str], hooks: Sequence[str],
                batch_size: int = 256) -> dict[str, torch.Tensor]:
    """{hook: [N, d_model]} at the last prompt token (through the one tokenisation path, make_batch)."""
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    wanted = set(hooks)
    for sl in chunks(len(prompts), batch_size):
        batch = make_batch(handle, prompts[sl], answers[sl])
        _, cache = handle.model.run_with_cache(batch.tokens, names_filter=lambda n: n in wanted)
        rows = torch.arange(batch.tokens.shape[0], device=batch.tokens.device)
        for h in hooks:
            out[h].append(cache[h][rows, batch.prompt_lens - 1].float().cpu())
    return {h: torch.cat(v) for h, v in out.items()}


def fit_logreg(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = 1e-2,
               iters: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardised multinomial logistic regression; returns (mean, std, W, b)."""
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-4)
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return mu, sd, w.detach(), b.detach()


def probe_units(forget: Sequence[Sample], n_layers: int) -> int:
    """The units of work ``run_probe`` reports at most: its two activation passes and one fit per relation of
    the forget set and layer."""
    return 2 + len({s.relation for s in forget}) * n_layers


def run_probe(handle: ModelHandle, retain: Sequence[Sample], forget: Sequence[Sample],
              layers: Sequence[int] | None = None, progress: ProgressFn | None = None) -> ProbeResult:
    """Train per-relation probes on the model's retain activations; accuracy on forget per layer.
    ``progress(fraction, message)``: after each activation pass and each (relation, layer) fit."""
    if not forget:
        raise AnalysisInputError("the forget set is empty: nothing to probe")
    layers = list(range(handle.n_layers)) if layers is None else list(layers)
    for layer in layers:
        if not 0 <= layer < handle.n_layers:
            raise AnalysisInputError(f"layer {layer} is out of range: the model has layers 0..{handle.n_layers - 1}")
    hooks = [resid_post(layer) for layer in layers]
    rows = probe_training_set(retain, forget)
    if not rows:
        raise AnalysisInputError("the retain set is empty: the probe has nothing to train on")
    fits = []  # (relation, retain rows, classes, forget rows) of every relation a probe can be fitted for
    for rel in sorted({s.relation for s in forget}):
        tidx = [i for i, r in enumerate(rows) if r[1] == rel]
        classes = sorted({rows[i][3] for i in tidx})
        eidx = [i for i, s in enumerate(forget) if s.relation == rel and s.answer in classes]
        if len(classes) >= 2 and eidx:
            fits.append((rel, tidx, classes, eidx))
    done, total = 0, 2 + len(fits) * len(layers)

    def tick(msg: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done / total, f"probe: {msg}")

    tr = prompt_acts(handle, [r[2] for r in rows], [r[3] for r in rows], hooks)
    tick(f"activations of {len(rows)} retain prompts")
    ev = prompt_acts(handle, [s.prompt for s in forget], [s.answer for s in forget], hooks)
    tick(f"activations of {len(forget)} forget prompts")
    correct: dict[int, dict[str, bool]] = {layer: {} for layer in layers}
    train_hits: dict[int, list[float]] = {layer: [] for layer in layers}
    n_eval = 0
    for rel, tidx, classes, eidx in fits:
        n_eval += len(eidx)
        y = torch.tensor([classes.index(rows[i][3]) for i in tidx])
        for layer, h in zip(layers, hooks, strict=True):
            mu, sd, w, b = fit_logreg(tr[h][tidx], y, len(classes))
            train_hits[layer].append(float((((tr[h][tidx] - mu) / sd @ w + b).argmax(-1) == y).float().sum()))
            pred = (((ev[h][eidx] - mu) / sd) @ w + b).argmax(-1)
            for j, i in enumerate(eidx):
                correct[layer][forget[i].id] = classes[int(pred[j])] == forget[i].answer
            tick(f"{rel}, layer {layer}")
    n_train_rel = sum(1 for r in rows if r[1] in {s.relation for s in forget})
    acc = {layer: (sum(c.values()) / len(c) if c else None) for layer, c in correct.items()}
    tacc = {layer: sum(v) / max(1, n_train_rel) for layer, v in train_hits.items()}
    return ProbeResult(layers=layers, acc_by_layer=acc, train_acc_by_layer=tacc, correct=correct,
                       n_train=len(rows), n_eval=n_eval, n_skipped=len(forget) - n_eval,
                       train_ids=sorted({r[0] for r in rows}))
