"""Device and dtype choice: cuda > mps > cpu, overridable."""

from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def pick_device(preference: str | None = None) -> torch.device:
    """``preference`` None/"auto" picks cuda > mps > cpu; anything else is taken as given."""
    if preference and preference != "auto":
        dev = torch.device(preference)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {preference!r} requested but CUDA is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(preference: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None/"auto": bf16 on CUDA, float32 elsewhere (CPU bf16 matmuls are slow and lossy)."""
    if isinstance(preference, torch.dtype):
        return preference
    if preference is None or preference == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[preference]
    except KeyError:
        raise ValueError(f"unknown dtype {preference!r} (expected one of {', '.join(_DTYPES)})") from None
