"""ModelHandle: a hooked model with its tokenizer and identity."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from analysis.errors import ModelLoadError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerBase

# What a model is in a study: the model before unlearning, a model after it, or a ground-truth control
# (the retrain model, the readout-suppression model). Not the token groups of causal tracing.
ModelRole = Literal["original", "unlearned", "control"]
MODEL_ROLES: tuple[str, ...] = get_args(ModelRole)
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt")
CONFIG_NAMES: tuple[str, ...] = ("config.json", "organism.json")


@dataclass
class ModelHandle:
    """A loaded model. ``fingerprint`` is a hash of the weight files + config, stable across loads."""

    model: HookedTransformer
    tokenizer: PreTrainedTokenizerBase
    name: str
    role: str
    path: Path | None
    fingerprint: str
    fmt: str  # "organism" or "hf"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.model.cfg.device if isinstance(self.model.cfg.device, torch.device) else torch.device(
            self.model.cfg.device or "cpu")

    @property
    def dtype(self) -> torch.dtype:
        return self.model.cfg.dtype

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def prepend_bos(self) -> bool:
        return bool(self.model.cfg.default_prepend_bos) and self.tokenizer.bos_token_id is not None

    def info(self) -> dict[str, Any]:
        cfg = self.model.cfg
        return {
            "name": self.name, "role": self.role, "format": self.fmt, "path": str(self.path) if self.path else None,
            "fingerprint": self.fingerprint, "architecture": cfg.original_architecture or "HookedTransformer",
            "n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
            "n_key_value_heads": cfg.n_key_value_heads or cfg.n_heads, "d_mlp": cfg.d_mlp,
            "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx, "n_params": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
            "tokenizer_vocab": len(self.tokenizer), **self.meta,
        }


FINGERPRINT_CHARS = 16  # hex characters of a model fingerprint
FileStat = tuple[str, int, int, int]  # (file name, size, mtime_ns, ctime_ns)


def is_fingerprint(value: object) -> bool:
    """True for a well-formed fingerprint (``FINGERPRINT_CHARS`` lowercase hex characters), the only kind of
    value that may go into a store key or a path."""
    return isinstance(value, str) and len(value) == FINGERPRINT_CHARS and all(c in "0123456789abcdef" for c in value)


def fingerprint_files(path: Path) -> list[Path]:
    """The files a model's fingerprint covers: its weight and config files, sorted by name."""
    try:
        files = sorted(p for p in Path(path).iterdir()
                       if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in CONFIG_NAMES))
    except FileNotFoundError:
        raise ModelLoadError(f"model directory not found: {path}") from None
    except NotADirectoryError:
        raise ModelLoadError(f"model path is not a directory: {path}") from None
    except OSError as e:
        raise ModelLoadError(f"model directory {path} cannot be read ({e.strerror})") from None
    if not files:
        raise ModelLoadError(f"no weights or config found in {path}")
    return files


def file_stats(path: Path) -> list[FileStat]:
    """(name, size, mtime_ns, ctime_ns) of every file the fingerprint covers: cheap (no file is read), and
    different whenever a file is replaced or rewritten, so a study hashes again only then."""
    out = []
    for f in fingerprint_files(path):
        try:
            st = f.stat()
        except OSError as e:
            raise ModelLoadError(f"model file {f} cannot be read ({e.strerror})") from None
        out.append((f.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return out


def fingerprint_dir(path: Path) -> str:
    """SHA-256 over the weight and config files of a model directory (names + bytes), 16 hex chars.

    Hashing the files on disk (rather than the loaded tensors) is cheaper and equally stable: the same
    files always give the same model.
    """
    h = hashlib.sha256()
    for f in fingerprint_files(path):
        h.update(f.name.encode())
        try:
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise ModelLoadError(f"model file {f} cannot be read ({e.strerror})") from None
    return h.hexdigest()[:FINGERPRINT_CHARS]


def tokenizer_signature(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of the vocabulary and special tokens: equal signatures mean interchangeable token ids."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return hashlib.sha256(repr((vocab, special)).encode()).hexdigest()[:16]


def check_same_tokenizer(handles: list[ModelHandle]) -> None:
    """Models compared in one study must share token ids; raise ModelLoadError naming the first mismatch."""
    if not handles:
        return
    ref = handles[0]
    ref_sig = tokenizer_signature(ref.tokenizer)
    for h in handles[1:]:
        if tokenizer_signature(h.tokenizer) != ref_sig:
            raise ModelLoadError(
                f"models {ref.name!r} and {h.name!r} have different tokenizers; all models of a study must share one"
            )
