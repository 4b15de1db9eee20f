"""The one model loader: organism directories and local Hugging Face checkpoints -> ModelHandle."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from analysis.errors import ModelLoadError
from analysis.models.device import check_n_devices, pick_device, pick_dtype, place_on_devices
from analysis.models.handle import MODEL_ROLES, ModelHandle, fingerprint_dir

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
               device: str | None = None, dtype: str | torch.dtype | None = None, n_devices: int = 1) -> ModelHandle:
    """Load a model directory, offline, into a hooked model on ``device`` (cuda > mps > cpu by default; bf16
    on CUDA, float32 elsewhere). ``n_devices`` > 1 splits the layers over that many GPUs from ``device`` on
    (TransformerLens ``n_devices``), for models that do not fit one."""
    p = Path(path).expanduser()
    if role not in MODEL_ROLES:
        raise ModelLoadError(f"unknown role {role!r} (expected one of {', '.join(MODEL_ROLES)})")
    fmt = detect_format(p)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    try:
        check_n_devices(n_devices, dev)
    except ValueError as e:
        raise ModelLoadError(str(e)) from None
    if fmt == "organism":
        from analysis.models.organism_io import load_organism_dir

        model, tokenizer, meta = load_organism_dir(p, dev, dt, n_devices)
    else:
        from analysis.models.hf import load_hf_dir

        model, tokenizer, meta = load_hf_dir(p, dev, dt, n_devices)
    place_on_devices(model)
    model.eval()
    return ModelHandle(model=model, tokenizer=tokenizer, name=name or p.name, role=role, path=p,
                       fingerprint=fingerprint_dir(p), fmt=fmt, meta=meta)

