"""Read and write organism model directories: organism.json + model.safetensors + tokenizer files.

``organism.json`` is validated on read (``read_organism_config``): a JSON object with ``format``,
``version``, ``architecture`` and ``meta`` only, every architecture field of the right type and range, and
(``load_organism_dir``) consistent with the shapes in the weights file, so a bad file is one ModelLoadError
naming the file and the field, never a traceback from the model constructor.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from analysis.errors import ModelLoadError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerBase

ORGANISM_CONFIG = "organism.json"
ORGANISM_FORMAT = "erasure-organism"
WEIGHTS = "model.safetensors"
# HookedTransformerConfig fields that define the architecture; everything else is derived or runtime.
ARCH_FIELDS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "act_fn",
               "normalization_type", "positional_embedding_type", "attn_only", "default_prepend_bos")
CONFIG_KEYS = ("format", "version", "architecture", "meta")
# Integer architecture fields and their sane upper bound (a typo must not allocate terabytes).
_INT_FIELDS: dict[str, int] = {"n_layers": 1_024, "d_model": 65_536, "n_heads": 1_024, "d_head": 4_096,
                               "d_mlp": 262_144, "n_ctx": 1_048_576, "d_vocab": 1_048_576}
_REQUIRED = ("n_layers", "d_model", "n_heads", "d_head", "n_ctx", "d_vocab")
_CHOICES: dict[str, tuple[Any, ...]] = {
    "act_fn": ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "relu", "silu", "solu_ln"),
    "normalization_type": ("LN", "LNPre", "RMS", "RMSPre", None),
    "positional_embedding_type": ("standard", "shortformer"),
}
_BOOL_FIELDS = ("attn_only", "default_prepend_bos")


def organism_config(model: HookedTransformer) -> dict[str, Any]:
    return {k: getattr(model.cfg, k) for k in ARCH_FIELDS}


def build_hooked(arch: dict[str, Any], tokenizer: PreTrainedTokenizerBase | None, device: torch.device | str,
                 dtype: torch.dtype = torch.float32, seed: int | None = None, n_devices: int = 1) -> HookedTransformer:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(**arch, device=str(device), dtype=dtype, seed=seed, n_devices=n_devices,
                                  original_architecture="ErasureOrganism", model_name="erasure-organism")
    return HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=True)


def save_organism_dir(model: HookedTransformer, tokenizer: PreTrainedTokenizerBase, out: str | os.PathLike[str],
                      meta: dict[str, Any] | None = None) -> Path:
    """Write atomically: into a temp dir beside ``out``, then rename, so a crash never leaves half a model."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
                 if not k.endswith((".IGNORE", ".mask"))}
        save_file(state, str(tmp / WEIGHTS))
        tokenizer.save_pretrained(str(tmp))
        config = {"format": ORGANISM_FORMAT, "version": 1, "architecture": organism_config(model),
                  "meta": meta or {}}
        (tmp / ORGANISM_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else type(value).__name__


def read_organism_config(path: Path) -> dict[str, Any]:
    """The validated ``organism.json`` of the model directory ``path`` (no torch work: cheap).

    Raises ModelLoadError naming the file, the field and what was expected."""
    cfg_path = Path(path) / ORGANISM_CONFIG

    def bad(field: str, expected: str, value: object = ...) -> ModelLoadError:
        got = "" if value is ... else f", got {_kind(value)}"
        return ModelLoadError(f"{cfg_path}: field {field!r}: expected {expected}{got}")

    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{cfg_path} is malformed (invalid JSON: {e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise ModelLoadError(f"{cfg_path} is malformed (JSON nested too deeply)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{cfg_path} could not be read ({e})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{cfg_path} is malformed: expected a JSON object "
                             f"{{format, version, architecture, meta}}, got {_kind(config)}")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise bad(unknown[0], f"only the keys {', '.join(CONFIG_KEYS)} (unknown key)")
    if config.get("format", ORGANISM_FORMAT) != ORGANISM_FORMAT:
        raise bad("format", repr(ORGANISM_FORMAT), config.get("format"))
    version = config.get("version", 1)
    if version != 1 or isinstance(version, bool):
        raise bad("version", "1", version)
    meta = config.get("meta", {})
    if not isinstance(meta, dict):
        raise bad("meta", "an object", meta)
    arch = config.get("architecture")
    if not isinstance(arch, dict):
        raise bad("architecture", f"an object of {', '.join(ARCH_FIELDS)}", arch)
    unknown = sorted(set(arch) - set(ARCH_FIELDS))
    if unknown:
        raise bad(f"architecture.{unknown[0]}", f"only the fields {', '.join(ARCH_FIELDS)} (unknown key)")
    for name in _REQUIRED:
        if name not in arch:
            raise bad(f"architecture.{name}", "a positive integer (missing)")
    for name, top in _INT_FIELDS.items():
        if name not in arch:
            continue
        v = arch[name]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
            raise bad(f"architecture.{name}", f"an integer from 1 to {top:,}", v)
    for name, choices in _CHOICES.items():
        if name in arch and arch[name] not in choices:
            raise bad(f"architecture.{name}", f"one of {', '.join(map(str, choices))}", arch[name])
    for name in _BOOL_FIELDS:
        if name in arch and not isinstance(arch[name], bool):
            raise bad(f"architecture.{name}", "true or false", arch[name])
    if not arch.get("attn_only", False):
        if "d_mlp" not in arch:
            raise bad("architecture.d_mlp", "a positive integer (missing; the model has MLPs)")
        if "act_fn" not in arch:
            raise bad("architecture.act_fn", f"one of {', '.join(_CHOICES['act_fn'])} (missing)")
    if arch["d_model"] % arch["n_heads"]:
        raise bad("architecture.n_heads", f"a divisor of d_model ({arch['d_model']})", arch["n_heads"])
    if arch["d_head"] * arch["n_heads"] != arch["d_model"]:
        raise bad("architecture.d_head", f"d_model / n_heads = {arch['d_model'] // arch['n_heads']}",
                  arch["d_head"])
    return {"format": ORGANISM_FORMAT, "version": 1, "architecture": dict(arch), "meta": meta}


def _expected_shapes(arch: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Weight name -> the architecture fields its dimensions are (checked against the weights file)."""
    shapes: dict[str, tuple[str, ...]] = {"embed.W_E": ("d_vocab", "d_model"),
                                          "unembed.W_U": ("d_model", "d_vocab"),
                                          "blocks.0.attn.W_Q": ("n_heads", "d_model", "d_head")}
    if arch.get("positional_embedding_type", "standard") in ("standard", "shortformer"):
        shapes["pos_embed.W_pos"] = ("n_ctx", "d_model")
    if not arch.get("attn_only", False):
        shapes["blocks.0.mlp.W_in"] = ("d_model", "d_mlp")
    return shapes


def check_weights_match(cfg_path: Path, arch: dict[str, Any], weights: Path) -> None:
    """Raise ModelLoadError naming the organism.json field that disagrees with the shapes in ``weights``
    (read from the safetensors header only)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            keys = set(f.keys())
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in _expected_shapes(arch) if k in keys}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"corrupt or truncated weights in {weights}: {e}") from None
    n_blocks = len({k.split(".")[1] for k in keys if k.split(".")[0] == "blocks"})
    if n_blocks != arch["n_layers"]:
        raise ModelLoadError(f"{cfg_path}: field 'architecture.n_layers': expected {n_blocks} (the number of "
                             f"blocks in {weights.name}), got {arch['n_layers']}")
    for key, fields in _expected_shapes(arch).items():
        if key not in shapes:
            raise ModelLoadError(f"weights in {weights} do not match {cfg_path.name} (missing {key})")
        got = shapes[key]
        if len(got) != len(fields):
            raise ModelLoadError(f"weights in {weights} do not match {cfg_path.name} ({key} has shape "
                                 f"{list(got)})")
        for dim, field in zip(got, fields, strict=True):
            if dim != arch[field]:
                raise ModelLoadError(f"{cfg_path}: field 'architecture.{field}': expected {dim} (from {key} "
                                     f"of shape {list(got)} in {weights.name}), got {arch[field]}")


def load_organism_dir(path: Path, device: torch.device, dtype: torch.dtype, n_devices: int = 1
                      ) -> tuple[HookedTransformer, PreTrainedTokenizerBase, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    config = read_organism_config(path)
    arch = config["architecture"]
    if not (path / WEIGHTS).is_file():
        raise ModelLoadError(f"weights file missing: {path / WEIGHTS}")
    check_weights_match(path / ORGANISM_CONFIG, arch, path / WEIGHTS)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raise many types; the message is what matters
        raise ModelLoadError(f"tokenizer in {path} could not be loaded: {e}") from None
    if len(tokenizer) > arch["d_vocab"]:
        raise ModelLoadError(f"{path / ORGANISM_CONFIG}: field 'architecture.d_vocab': expected at least the "
                             f"tokenizer's {len(tokenizer)} tokens, got {arch['d_vocab']}")
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"corrupt or truncated weights in {path / WEIGHTS}: {e}") from None
    try:
        model = build_hooked(arch, tokenizer, device, dtype, n_devices=n_devices)
    except (AssertionError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{path / ORGANISM_CONFIG} gives an invalid model configuration: {e}") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape the header check did not cover
        first = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"weights in {path} do not match {ORGANISM_CONFIG} ({first})") from None
    missing = [k for k in missing if not k.endswith((".IGNORE", ".mask"))]
    if missing or unexpected:
        raise ModelLoadError(f"weights in {path} do not match the config (missing {missing[:3]}, unexpected "
                             f"{list(unexpected)[:3]})")
    return model, tokenizer, {"organism": config.get("meta", {})}
