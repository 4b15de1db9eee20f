"""TransformerLens weights back to the checkpoint's own Hugging Face state dict, for every loadable architecture.

No mapping per architecture: the inverse is derived from TransformerLens's own weight converter (the one the
loader ran, ``hf_arch.converter``). Every converter is affine and element-wise: each TL element is ``s * x + b``
of at most one HF element ``x`` (copies, reshapes, transposes, splits of fused q/k/v and gate/up projections;
Gemma's RMSNorm gain ``1 + w`` and embedding ``x * sqrt(d_model)``), or a constant TL adds (zero biases). So
with ``J`` the converter's Jacobian (constant), ``b = convert(0)`` and ``s = convert(1) - b``:

* the HF weights are the least-squares solution ``x = J^T (tl - b) / J^T s`` (``J^T s`` is the sum of s^2 over
  the TL elements an HF element feeds; an HF element copied twice, like Phi-1.5's one LayerNorm that TL holds
  as ``ln1`` and ``ln2``, gets their mean), computed with autograd's vector-Jacobian product on an empty HF
  model of the checkpoint's architecture;
* the result is checked by running the converter forward on it: it must give the TL weights back (to float
  rounding). It does not when a TL parameter that comes from no HF tensor was changed (``ExportPlan.unsourced``:
  freeze them) or two TL copies of one HF tensor were changed apart (``ExportPlan.tied``: keep them equal);
  the export then refuses with the parameter's name rather than writing a different model.

Tied input/output embeddings: the empty HF model is built untied, so ``embed.W_E`` and ``unembed.W_U`` each map
to their own tensor; when the checkpoint ties them and they still agree the export stays tied (no
``lm_head.weight``), else it unties (``tie_word_embeddings: false`` in ``config_changes``, ``lm_head.weight``
written).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from analysis.errors import ModelExportError, ModelLoadError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformers import PretrainedConfig, PreTrainedModel

    from analysis.models.handle import ModelHandle

Values = dict[str, torch.Tensor]
Affine = dict[str, torch.Tensor | float]  # per TL key: a tensor, or a float when every element is equal
MAX_SHARD_BYTES = 4 << 30
COPIED_SUFFIXES: tuple[str, ...] = (".json", ".txt", ".model", ".jinja", ".tiktoken")
WEIGHT_NAMES: tuple[str, ...] = ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ExportPlan:
    """What of a TL model maps back to the HF checkpoint: read it before training the TL model."""

    architecture: str
    unsourced: tuple[str, ...]  # TL parameters no HF tensor feeds (zero biases TL adds): freeze them
    partly_unsourced: tuple[str, ...]  # TL parameters some elements of which no HF tensor feeds
    tied: tuple[tuple[str, ...], ...]  # TL parameters that are copies of one HF tensor: keep them equal
    untouched: tuple[str, ...]  # HF tensors (some elements) no TL parameter carries: kept from the source
    tied_embeddings: bool  # the checkpoint ties lm_head to the input embedding

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "unsourced": list(self.unsourced),
                "partly_unsourced": list(self.partly_unsourced), "tied": [list(g) for g in self.tied],
                "untouched": list(self.untouched), "tied_embeddings": self.tied_embeddings}


# ------------------------------------------------------------------------------------------ the affine map


class _Converter:
    """TL's weight converter for one checkpoint, run on an empty (float32, CPU, untied) HF model."""

    def __init__(self, arch: str, hf_config: PretrainedConfig, tl_cfg: Any) -> None:
        from analysis.models.hf_arch import converter

        self.fn: Callable[[Any, Any], Values] = converter(arch)
        self.cfg = copy.copy(tl_cfg)
        self.cfg.device, self.cfg.dtype = "cpu", torch.float32
        self.hf = _empty_untied(hf_config)
        self.params: dict[str, torch.nn.Parameter] = dict(self.hf.named_parameters())
        self.b = {k: _compact(v) for k, v in self.forward(0.0).items()}
        self.s = {k: _compact(v - self.b[k]) for k, v in self.forward(1.0).items()}

    def _set(self, values: Values | float) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                if isinstance(values, float):
                    p.fill_(values)
                else:
                    p.copy_(values[name])

    def forward(self, values: Values | float, clone: bool = True) -> Values:
        """``J x + b``: the TL tensors the converter makes from HF weights ``x`` (``clone=False``: views of the
        weights where the converter makes views, valid until the next call)."""
        self._set(values)
        with torch.no_grad():
            out = self.fn(self.hf, self.cfg)
        return {k: v.detach().clone().float() if clone else v.detach() for k, v in out.items()}

    def adjoint(self, grads: Affine) -> Values:
        """``J^T g`` for TL-shaped ``g`` (keys missing from ``grads`` count as zero)."""
        for p in self.params.values():
            p.requires_grad_(True)
        try:
            with torch.enable_grad():
                out = self.fn(self.hf, self.cfg)
                keys = [k for k in grads if k in out and out[k].requires_grad]
                if not keys:
                    return {n: torch.zeros_like(p) for n, p in self.params.items()}
                got = torch.autograd.grad([out[k] for k in keys], list(self.params.values()),
                                          [_full(grads[k], out[k]) for k in keys], allow_unused=True)
        finally:
            for p in self.params.values():
                p.requires_grad_(False)
        return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(self.params.items(), got, strict=True)}


def _compact(t: torch.Tensor) -> torch.Tensor | float:
    return float(t.flatten()[0]) if t.numel() and bool((t == t.flatten()[0]).all()) else t


def _is_zero(v: torch.Tensor | float) -> bool:
    return isinstance(v, float) and v == 0.0


def _full(v: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    return torch.full_like(like, v) if isinstance(v, float) else v.to(like.dtype).expand_as(like)


def _empty_untied(hf_config: PretrainedConfig) -> PreTrainedModel:
    """The checkpoint's HF architecture with uninitialised float32 weights and its own lm_head."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(hf_config)
    config.tie_word_embeddings = False
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model = model.to_empty(device="cpu")
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ------------------------------------------------------------------------------------------------ inputs


def _source(source: ModelHandle | HookedTransformer, hf_dir: str | Path | None
            ) -> tuple[HookedTransformer, Path, str, PretrainedConfig]:
    from analysis.models.hf import load_hf_config
    from analysis.models.hf_arch import read_architecture

    model = getattr(source, "model", source)
    if hf_dir is None and getattr(source, "fmt", None) == "hf":
        hf_dir = getattr(source, "path", None)
    if hf_dir is None:
        raise ModelExportError("export needs the Hugging Face checkpoint the model was loaded from (hf_dir)")
    path = Path(hf_dir)
    try:
        arch, _, _ = read_architecture(path)
        hf_config = load_hf_config(path)
    except ModelLoadError as e:
        raise ModelExportError(f"cannot export to {path}: {e}") from None
    if model.cfg.original_architecture != arch:
        raise ModelExportError(f"the model is a {model.cfg.original_architecture}, but {path} holds a {arch}")
    return model, path, arch, hf_config


def _tl_params(model: HookedTransformer) -> dict[str, torch.nn.Parameter]:
    """Every TL parameter under every name (a parameter shared by ``prepare_for_training`` under each)."""
    return dict(model.named_parameters(remove_duplicate=False))


# -------------------------------------------------------------------------------------------------- plan


def _plan(conv: _Converter, model: HookedTransformer, arch: str, hf_config: PretrainedConfig) -> ExportPlan:
    tl_params = _tl_params(model)
    keys = [k for k in conv.s if k in tl_params]
    zero = {k: _zero_scale(conv.s[k]) for k in keys}  # (every element unsourced, some element unsourced)
    unsourced = sorted({*(k for k in tl_params if k not in conv.s), *(k for k in keys if zero[k][0])})
    partly = sorted(k for k in keys if zero[k][1] and not zero[k][0])
    sourced = [k for k in keys if k not in unsourced]
    den = conv.adjoint({k: conv.s[k] for k in sourced})
    untouched = sorted(n for n, d in den.items() if bool((d == 0).any()))
    # How many TL elements share each one's HF element: count(j) = J^T (1/s), read back through J.
    inv = {k: _inverse(conv.s[k]) for k in sourced}
    del den
    counts = conv.forward(conv.adjoint(inv), clone=False)
    shared = [k for k in sourced if bool((((counts[k] - _full(conv.b[k], counts[k])) * _full(inv[k], counts[k]))
                                          > 1.5).any())]
    return ExportPlan(arch, tuple(unsourced), tuple(partly), _groups(conv, shared) if shared else (),
                      tuple(untouched), bool(getattr(hf_config, "tie_word_embeddings", False)))


def _inverse(s: torch.Tensor | float) -> torch.Tensor | float:
    """1 / s where s != 0, else 0."""
    if isinstance(s, float):
        return 1.0 / s if s else 0.0
    return torch.where(s == 0, 0.0, 1.0 / s)


def _groups(conv: _Converter, shared: list[str]) -> tuple[tuple[str, ...], ...]:
    """TL parameters that are whole copies of the same HF elements (equal under random HF weights)."""
    g = torch.Generator().manual_seed(0)
    coded = conv.forward({n: torch.randn(p.shape, generator=g) for n, p in conv.params.items()}, clone=False)
    groups: list[list[str]] = []
    for k in shared:
        for grp in groups:
            if coded[grp[0]].shape == coded[k].shape and torch.equal(coded[grp[0]], coded[k]):
                grp.append(k)
                break
        else:
            groups.append([k])
    return tuple(tuple(grp) for grp in groups if len(grp) > 1)


def _zero_scale(s: torch.Tensor | float) -> tuple[bool, bool]:
    if isinstance(s, float):
        return s == 0.0, s == 0.0
    z = s == 0
    return bool(z.all()), bool(z.any())


def export_plan(source: ModelHandle | HookedTransformer, hf_dir: str | Path | None = None) -> ExportPlan:
    """Which TL parameters map back to the checkpoint (``hf_dir``, default: the handle's own directory):
    a trainer freezes ``unsourced`` and keeps each group of ``tied`` equal (``prepare_for_training``)."""
    model, _, arch, hf_config = _source(source, hf_dir)
    return _plan(_Converter(arch, hf_config, model.cfg), model, arch, hf_config)


def prepare_for_training(model: HookedTransformer, plan: ExportPlan) -> list[str]:
    """Freeze the TL parameters no HF tensor feeds and make each tied group one shared parameter (so a
    trained model still exports); returns the frozen names."""
    frozen = [*plan.unsourced, *plan.partly_unsourced]
    params = _tl_params(model)
    for k in frozen:
        params[k].requires_grad_(False)
    for group in plan.tied:
        first = params[group[0]]
        for k in group[1:]:
            owner, leaf = k.rsplit(".", 1)
            setattr(model.get_submodule(owner), leaf, first)
    return frozen


# ------------------------------------------------------------------------------------------------ export


def tl_to_hf_state_dict(source: ModelHandle | HookedTransformer, hf_dir: str | Path | None = None
                        ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The HF state dict (the checkpoint's own names and shapes, float32 on the CPU) of a TL model loaded
    from the checkpoint ``hf_dir`` (default: the handle's directory) and maybe trained since, and the changes
    its config.json needs (``{"tie_word_embeddings": False}`` when tied embeddings no longer agree).

    Raises ``ModelExportError`` naming the parameter when the TL weights have no HF equivalent (an unsourced
    parameter changed, tied copies changed apart: see ``ExportPlan``).
    """
    model, path, arch, hf_config = _source(source, hf_dir)
    conv = _Converter(arch, hf_config, model.cfg)
    tl_params = _tl_params(model)
    theta = {k: tl_params[k].detach().to("cpu", torch.float32) for k in conv.s if k in tl_params}
    state = conv.adjoint({k: v if _is_zero(conv.b[k]) else v - _full(conv.b[k], v) for k, v in theta.items()})
    den = conv.adjoint({k: conv.s[k] for k in theta})
    for name, value in state.items():
        d = den.pop(name)
        value.div_(d.clamp(min=1e-30))
        if bool((d == 0).any()):
            state[name] = torch.where(d == 0, _checkpoint_tensor(path, name, hf_config).float(), value)
    _check_round_trip(conv, state, model, theta, arch)
    return _tie(state, conv.hf, hf_config)


def _check_round_trip(conv: _Converter, state: Values, model: HookedTransformer, theta: Values, arch: str) -> None:
    """The converter run on the exported weights must give the TL weights back."""
    back = conv.forward(state, clone=False)
    for k, want in theta.items():
        tol = 1e-5 * max(1.0, float(want.abs().max()) if want.numel() else 1.0)
        if float((back[k] - want).abs().max()) > tol:
            raise ModelExportError(f"TransformerLens parameter {k} has no exact place in the {arch} checkpoint "
                                   "(it comes from no HF tensor, or from one it shares with another parameter, and "
                                   "was changed: freeze it or keep the copies equal, see export_plan)")
    for k, p in _tl_params(model).items():
        if k not in conv.s and bool(p.detach().ne(0).any()):
            raise ModelExportError(f"TransformerLens parameter {k} has no place in the {arch} checkpoint and is "
                                   "no longer zero (freeze it, see export_plan)")


def _tie(state: Values, hf: PreTrainedModel, hf_config: PretrainedConfig) -> tuple[Values, dict[str, Any]]:
    emb = hf.get_input_embeddings().weight
    head = hf.get_output_embeddings().weight
    names = {id(p): n for n, p in hf.named_parameters()}
    emb_name, head_name = names[id(emb)], names[id(head)]
    if not getattr(hf_config, "tie_word_embeddings", False):
        return state, {}
    a, b = state[emb_name], state[head_name]
    if a.shape == b.shape and float((a - b).abs().max()) <= 1e-6 * max(1.0, float(a.abs().max())):
        return {k: v for k, v in state.items() if k != head_name}, {}
    return state, {"tie_word_embeddings": False}


def _checkpoint_tensor(path: Path, name: str, hf_config: PretrainedConfig) -> torch.Tensor:
    """One tensor of the source checkpoint, for the elements no TL parameter carries."""
    from safetensors import safe_open

    from analysis.models.hf import weight_files

    files, is_safe = weight_files(path)
    for f in files:
        if is_safe:
            with safe_open(str(f), framework="pt") as fh:
                if name in fh.keys():
                    return fh.get_tensor(name)
        else:
            state = torch.load(f, map_location="cpu", weights_only=True)
            if name in state:
                return state[name]
    raise ModelExportError(f"{name} is not carried by the TransformerLens model and not found in {path}")


# -------------------------------------------------------------------------------------------------- save


def save_hf_checkpoint(source: ModelHandle | HookedTransformer, out_dir: str | Path,
                       hf_dir: str | Path | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write the TL model as a standard HF checkpoint in ``out_dir``: safetensors weights (sharded above
    ``MAX_SHARD_BYTES``, with the index file), the source's config.json with ``config_changes`` applied, and
    its tokenizer and generation files (earlier weight files in ``out_dir`` are removed). ``dtype`` defaults to
    the source config's (float32 if it names none)."""
    from safetensors.torch import save_file

    _, path, _, hf_config = _source(source, hf_dir)
    state, changes = tl_to_hf_state_dict(source, hf_dir)
    dtype = dtype or _config_dtype(hf_config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("model*.safetensors"), out / "model.safetensors.index.json"]:
        stale.unlink(missing_ok=True)  # an earlier export's shards would be read with the new index
    shards = _shards({k: v.to(dtype).contiguous() for k, v in state.items()})
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        save_file(shard, str(out / name), metadata={"format": "pt"})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {k: n for n, s in zip(names, shards, strict=True) for k in s}}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    raw = json.loads((path / "config.json").read_text())
    raw.update(changes)
    raw["torch_dtype" if "torch_dtype" in raw else "dtype"] = str(dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix in COPIED_SUFFIXES and f.name not in WEIGHT_NAMES:
            shutil.copy2(f, out / f.name)
    return out


def _config_dtype(hf_config: PretrainedConfig) -> torch.dtype:
    name = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
    if isinstance(name, torch.dtype):
        return name
    value = getattr(torch, str(name), None) if name else None
    return value if isinstance(value, torch.dtype) else torch.float32


def _shards(state: Values) -> list[Values]:
    shards: list[Values] = [{}]
    size = 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if shards[-1] and size + n > MAX_SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    return shards
