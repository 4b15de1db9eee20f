"""Read and write organism model directories: organism.json + model.safetensors + tokenizer files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from analysis.errors import ModelLoadError

ORGANISM_CONFIG = "organism.json"
WEIGHTS = "model.safetensors"
# HookedTransformerConfig fields that define the architecture; everything else is derived or runtime.
ARCH_FIELDS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "act_fn",
               "normalization_type", "positional_embedding_type", "attn_only", "default_prepend_bos")


def organism_config(model: HookedTransformer) -> dict[str, Any]:
    return {k: getattr(model.cfg, k) for k in ARCH_FIELDS}


def build_hooked(arch: dict[str, Any], tokenizer: PreTrainedTokenizerBase | None, device: torch.device | str,
                 dtype: torch.dtype = torch.float32, seed: int | None = None, n_devices: int = 1) -> HookedTransformer:
    cfg = HookedTransformerConfig(**arch, device=str(device), dtype=dtype, seed=seed, n_devices=n_devices,
                                  original_architecture="ErasureOrganism", model_name="erasure-organism")
    return HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=True)


def save_organism_dir(model: HookedTransformer, tokenizer: PreTrainedTokenizerBase, out: str | os.PathLike[str],
                      meta: dict[str, Any] | None = None) -> Path:
    """Write atomically: into a temp dir beside ``out``, then rename, so a crash never leaves half a model."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
                 if not k.endswith((".IGNORE", ".mask"))}
        save_file(state, str(tmp / WEIGHTS))
        tokenizer.save_pretrained(str(tmp))
        config = {"format": "erasure-organism", "version": 1, "architecture": organism_config(model),
                  "meta": meta or {}}
        (tmp / ORGANISM_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_organism_dir(path: Path, device: torch.device, dtype: torch.dtype, n_devices: int = 1
                      ) -> tuple[HookedTransformer, PreTrainedTokenizerBase, dict[str, Any]]:
    try:
        config = json.loads((path / ORGANISM_CONFIG).read_text())
        arch = config["architecture"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ModelLoadError(f"{path / ORGANISM_CONFIG} is malformed ({e})") from None
    if not (path / WEIGHTS).is_file():
        raise ModelLoadError(f"weights file missing: {path / WEIGHTS}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raise many types; the message is what matters
        raise ModelLoadError(f"tokenizer in {path} could not be loaded: {e}") from None
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"corrupt or truncated weights in {path / WEIGHTS}: {e}") from None
    model = build_hooked(arch, tokenizer, device, dtype, n_devices=n_devices)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith((".IGNORE", ".mask"))]
    if missing or unexpected:
        raise ModelLoadError(f"weights in {path} do not match the config (missing {missing[:3]}, unexpected "
                             f"{list(unexpected)[:3]})")
    return model, tokenizer, {"organism": config.get("meta", {})}
