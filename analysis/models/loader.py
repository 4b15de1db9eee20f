"""The one model loader: organism directories and local Hugging Face checkpoints -> ModelHandle."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from analysis.errors import ModelLoadError
from analysis.models.device import pick_device, pick_dtype
from analysis.models.handle import ROLES, ModelHandle, fingerprint_dir

ORGANISM_CONFIG = "organism.json"


def detect_format(path: Path) -> str:
    """"organism" (our own format) or "hf" (a Hugging Face checkpoint directory)."""
    if not path.exists():
        raise ModelLoadError(f"model directory not found: {path}")
    if not path.is_dir():
        raise ModelLoadError(f"model path is not a directory: {path}")
    if (path / ORGANISM_CONFIG).is_file():
        return "organism"
    if (path / "config.json").is_file():
        return "hf"
    raise ModelLoadError(f"{path} is not a model directory (no {ORGANISM_CONFIG} or config.json)")


def load_model(path: str | os.PathLike[str], name: str | None = None, role: str = "original",
               device: str | None = None, dtype: str | torch.dtype | None = None) -> ModelHandle:
    """Load a model directory, offline, into a hooked model on ``device`` (cuda > mps > cpu by default)."""
    p = Path(path).expanduser()
    if role not in ROLES:
        raise ModelLoadError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    fmt = detect_format(p)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    if fmt == "organism":
        from analysis.models.organism_io import load_organism_dir

        model, tokenizer, meta = load_organism_dir(p, dev, dt)
    else:
        from analysis.models.hf import load_hf_dir

        model, tokenizer, meta = load_hf_dir(p, dev, dt)
    model.eval()
    return ModelHandle(model=model, tokenizer=tokenizer, name=name or p.name, role=role, path=p,
                       fingerprint=fingerprint_dir(p), fmt=fmt, meta=meta)

