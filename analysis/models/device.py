"""Device and dtype choice: cuda > mps > cpu, overridable; models split over several GPUs; memory budgets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from analysis import hooks

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

CPU_BUDGET_BYTES = 1 << 30  # activations per forward on the CPU
GPU_BUDGET_FRACTION = 0.5  # of the free memory of the GPU

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


def check_n_devices(n_devices: int, device: torch.device) -> None:
    """``n_devices`` GPUs to split a model over (TransformerLens ``n_devices``); raises ValueError when the
    machine has fewer."""
    if n_devices < 1:
        raise ValueError(f"n_devices must be at least 1, got {n_devices}")
    if n_devices > 1:
        have = torch.cuda.device_count() if device.type == "cuda" else 0
        first = device.index or 0
        if first + n_devices > have:
            raise ValueError(f"splitting the model over {n_devices} GPUs (from {device}) needs {first + n_devices} "
                             f"CUDA devices; this machine has {have}")


def place_on_devices(model: HookedTransformer) -> None:
    """Put a model built with ``cfg.n_devices > 1`` where its forward expects it: block i on TransformerLens's
    ``get_device_for_block_index(i)`` (consecutive layers per GPU), the embeddings on the first block's GPU,
    the final norm and unembedding on the last block's; logits come back on ``cfg.device``, the device every
    analysis puts its tokens on. Activations cached from a block stay on that block's GPU."""
    from transformer_lens.utilities.multi_gpu import get_device_for_block_index

    cfg = model.cfg
    if cfg.n_devices <= 1:
        return
    blocks = [get_device_for_block_index(i, cfg) for i in range(cfg.n_layers)]
    for name in ("embed", hooks.EMBED, "pos_embed", hooks.POS_EMBED):  # modules, and the hook points after them
        if hasattr(model, name):
            getattr(model, name).to(blocks[0])
    for block, dev in zip(model.blocks, blocks, strict=True):
        block.to(dev)
    for name in ("ln_final", "unembed"):
        if hasattr(model, name):
            getattr(model, name).to(blocks[-1])
    home = torch.device(cfg.device)

    def logits_home(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:  # noqa: ARG001
        return output.to(home)

    model.unembed.register_forward_hook(logits_home)


def memory_budget(device: torch.device) -> int:
    """Bytes of activations one forward may use: half the free memory of a GPU (so a big model never gets a
    batch that overflows it), a fixed 1 GiB elsewhere (which keeps CPU batch sizes, and so CPU results,
    independent of what else runs)."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_BUDGET_FRACTION)
    return CPU_BUDGET_BYTES
