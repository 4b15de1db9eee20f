"""Load a local Hugging Face causal-LM checkpoint directory, offline, into a TransformerLens HookedTransformer.

``HookedTransformer.from_pretrained`` only takes hub names and routes by name; here the checkpoint's own
config.json decides (``analysis.models.hf_arch``: the supported architectures, the HookedTransformerConfig, and
which of TransformerLens's per-architecture weight converters runs).

Weights are loaded without any TL weight processing (no LayerNorm folding, centering or bias folding), so
every hook value equals the corresponding HF activation and logits match HF to float precision. Parameter
values are HF's except where the converter bakes in what Gemma computes at run time: W_E is HF's
embedding times sqrt(d_model) and RMSNorm gains are stored as 1 + w. The unembedding ``W_U`` is always its own
parameter, also for a checkpoint with tied input/output embeddings (``meta["tied_embeddings"]`` says so, and
``analysis.models.export`` unties explicitly when they no longer agree).

A BOS token is prepended exactly when the checkpoint's tokenizer adds one (``tokenizer_adds_bos``).

Security: only safetensors files or ``torch.load(weights_only=True)`` (what transformers does for .bin).
"""

from __future__ import annotations

import copy
import gc
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from analysis.errors import ModelLoadError
from analysis.models.hf_arch import SUPPORTED_ARCHITECTURES, converter, hf_config_to_tl, read_architecture

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
__all__ = ["SUPPORTED_ARCHITECTURES", "hf_config_to_tl", "load_hf_dir", "load_hf_config", "load_tokenizer",
           "read_architecture", "tokenizer_adds_bos"]


def tokenizer_adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether text is scored with a BOS token in front: exactly when the checkpoint's own tokenizer puts one
    there by default (``tokenizer("x")`` starts with ``bos_token_id`` and the plain tokens follow it).

    Decided by the tokenizer, not the architecture: SmolLM2 is a Llama whose tokenizer adds no BOS, and a model
    scored on inputs it never saw in training loses facts it knows. TransformerLens's default (prepend a BOS
    whenever the tokenizer has one) is not used.
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    with_special = list(tokenizer("x")["input_ids"])
    plain = list(tokenizer("x", add_special_tokens=False)["input_ids"])
    return len(with_special) > len(plain) and with_special[0] == bos and with_special[1: 1 + len(plain)] == plain


def load_hf_config(path: Path) -> PretrainedConfig:
    """The checkpoint's transformers config (offline, no remote code); raises ModelLoadError."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - config classes raise many types
        raise ModelLoadError(f"{Path(path) / 'config.json'} is malformed: {_one_line(e)}") from None


# -------------------------------------------------------------------------------------------- weights


def _one_line(e: BaseException, limit: int = 300) -> str:
    msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def weight_files(path: Path) -> tuple[list[Path], bool]:
    """The weight files of a checkpoint and whether they are safetensors (preferred over .bin)."""
    for index_name, single, is_safe in ((SAFETENSORS_INDEX, SAFETENSORS_FILE, True), (BIN_INDEX, BIN_FILE, False)):
        index = path / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError, OSError) as e:
                raise ModelLoadError(f"{index} is malformed ({_one_line(e)})") from None
            files = [path / s for s in shards]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise ModelLoadError(f"weights file missing: {path / missing[0]} (listed in {index_name})")
            return files, is_safe
        if (path / single).is_file():
            return [path / single], is_safe
    raise ModelLoadError(f"no weights in {path} (expected {SAFETENSORS_FILE} or {BIN_FILE})")


def check_safetensors(files: list[Path]) -> None:
    """Open each file's header: catches truncated or corrupt files before transformers touches them."""
    from safetensors import SafetensorError, safe_open

    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                fh.keys()
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"corrupt or truncated weights in {f}: {_one_line(e)}") from None


def _load_hf_model(path: Path, hf_config: PretrainedConfig, use_safetensors: bool) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model is noise in the CLI and tests
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(path), config=hf_config, dtype=torch.float32, use_safetensors=use_safetensors,
            local_files_only=True, trust_remote_code=False, output_loading_info=True)
    except Exception as e:  # noqa: BLE001 - transformers/torch raise many types; the message is what matters
        raise ModelLoadError(f"could not load the weights in {path}: {_one_line(e)}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    # transformers only warns about missing weights and initialises them randomly: refuse instead.
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise ModelLoadError(f"weights in {path} do not match config.json (missing {missing[:3]}, "
                             f"wrong shape {mismatched[:3]})")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# -------------------------------------------------------------------------------------------- tokenizer


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(f"no tokenizer files in {path} (expected one of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - tokenizers raise many types; the message is what matters
        raise ModelLoadError(f"tokenizer in {path} could not be loaded: {_one_line(e)}") from None
    # TL re-loads the tokenizer from init_kwargs["name_or_path"] (with add_bos_token=True); make sure that
    # points at this directory and never at a hub name.
    if not tokenizer.init_kwargs.get("name_or_path"):
        tokenizer.init_kwargs["name_or_path"] = str(path)
    return tokenizer


# ----------------------------------------------------------------------------------------------- load


def load_hf_dir(path: Path, device: torch.device, dtype: torch.dtype, n_devices: int = 1
                ) -> tuple[HookedTransformer, PreTrainedTokenizerBase, dict[str, Any]]:
    """Load a local HF causal-LM checkpoint directory into an unprocessed HookedTransformer on ``device``
    (split over ``n_devices`` GPUs from ``device`` on when > 1)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    path = Path(path)
    arch, model_type, _ = read_architecture(path)
    hf_config = load_hf_config(path)
    try:
        arch_cfg = hf_config_to_tl(hf_config)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError) as e:
        raise ModelLoadError(f"{path / 'config.json'} is malformed for {arch}: {_one_line(e)}") from None

    files, is_safe = weight_files(path)
    if is_safe:
        check_safetensors(files)
    tokenizer = load_tokenizer(path)
    if len(tokenizer) > arch_cfg["d_vocab"]:
        raise ModelLoadError(f"tokenizer in {path} has {len(tokenizer)} tokens but the model's vocabulary is "
                             f"{arch_cfg['d_vocab']}")
    adds_bos = tokenizer_adds_bos(tokenizer)
    try:
        cfg = HookedTransformerConfig(
            **arch_cfg, model_name=path.name, tokenizer_name=str(path), device=str(device), dtype=dtype,
            n_devices=n_devices, init_weights=False, default_prepend_bos=adds_bos, tokenizer_prepends_bos=adds_bos)
    except (AssertionError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{path / 'config.json'} gives an invalid TransformerLens config: {_one_line(e)}"
                             ) from None

    hf_model = _load_hf_model(path, hf_config, use_safetensors=is_safe)
    try:
        # Convert on the CPU in float32; load_state_dict casts into the model's dtype on its device.
        convert_cfg = copy.copy(cfg)
        convert_cfg.device, convert_cfg.dtype = "cpu", torch.float32
        with torch.no_grad():
            state_dict = converter(arch)(hf_model, convert_cfg)
        # HookedTransformer may replace the tokenizer it is given (and fill in missing bos/pad tokens on it):
        # give it a copy so the returned tokenizer is exactly the checkpoint's.
        model = HookedTransformer(cfg, tokenizer=_copy_tokenizer(tokenizer), move_to_device=True)
        missing = set(model.state_dict()) - set(state_dict)
        model.load_and_process_state_dict(state_dict, fold_ln=False, center_writing_weights=False,
                                          center_unembed=False, fold_value_biases=False,
                                          refactor_factored_attn_matrices=False)
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - a converter/model disagreement; report it as a load error
        raise ModelLoadError(f"could not build a HookedTransformer from {path} ({arch}): {_one_line(e)}") from None
    finally:
        del hf_model
        gc.collect()
    _zero_unset(model, missing)
    model.eval()
    meta = {"hf_architecture": arch, "hf_model_type": model_type or getattr(hf_config, "model_type", ""),
            "weights": [f.name for f in files], "prepends_bos": adds_bos,
            "tied_embeddings": bool(getattr(hf_config, "tie_word_embeddings", False)),
            "n_ctx_checkpoint": _declared_context(hf_config, arch_cfg["n_ctx"])}
    return model, tokenizer, meta


def _declared_context(hf_config: PretrainedConfig, default: int) -> int:
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(hf_config, key, None)
        if isinstance(value, int):
            return value
    return default


def _zero_unset(model: HookedTransformer, keys: set[str]) -> None:
    """Parameters the converter does not provide (e.g. GPT-2's absent unembedding bias) were created with
    ``init_weights=False`` and kept by ``fill_missing_keys``: make biases zero; anything else is a bug."""
    state = model.state_dict()
    for k in sorted(keys):
        if k.endswith((".IGNORE", ".mask", "rotary_sin", "rotary_cos")):
            continue
        leaf = k.rsplit(".", 1)[-1]
        if not leaf.startswith("b"):
            raise ModelLoadError(f"weight {k} has no source in the checkpoint (converter/model mismatch)")
        with torch.no_grad():
            state[k].zero_()


def _copy_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    try:
        return copy.deepcopy(tokenizer)
    except Exception:  # noqa: BLE001 - a tokenizer that cannot be copied is shared instead
        return tokenizer
