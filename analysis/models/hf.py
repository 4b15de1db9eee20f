"""Load a local Hugging Face causal-LM checkpoint directory, offline, into a TransformerLens HookedTransformer.

Why we don't use TL's own loading path: ``HookedTransformer.from_pretrained`` only accepts official hub
names (a local path raises "not found"), and TL's ``convert_hf_model_config`` decides the architecture
from the *name*, not the checkpoint: a path containing "llama" or "gemma" is routed without reading
config.json (and then crashes), and Gemma sizes are hard-coded per hub model name, so a fine-tuned or
unlearned checkpoint in ``/models/my-llama-unlearned`` would be mis-described. We therefore map the HF
config to HookedTransformerConfig ourselves (``hf_config_to_tl``, modelled on TL's per-architecture
branches in loading_from_pretrained.py) and reuse only TL's weight converters, which take the HF model
object and the config and never look at names.

Weights are loaded without any TL weight processing (no LayerNorm folding, centering or bias folding), so
every hook value equals the corresponding HF activation and logits match HF to float precision. Parameter
values are HF's except where the converter bakes in what Gemma computes at run time: W_E is HF's
embedding times sqrt(d_model) and RMSNorm gains are stored as 1 + w.

Security: only safetensors files or ``torch.load(weights_only=True)`` (what transformers does for .bin).
"""

from __future__ import annotations

import copy
import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from analysis.errors import ModelLoadError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

SUPPORTED_ARCHITECTURES: tuple[str, ...] = (
    "GPT2LMHeadModel", "GPTNeoXForCausalLM", "LlamaForCausalLM", "Qwen2ForCausalLM", "GemmaForCausalLM",
)
# For configs without an "architectures" list (hand-written or very old ones).
_MODEL_TYPE_TO_ARCH: dict[str, str] = {
    "gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM", "gemma": "GemmaForCausalLM",
}
# HF ACT2FN name -> TransformerLens act_fn. Same formulas on both sides ("gelu" is the exact erf GELU).
_ACT_FNS: dict[str, str] = {
    "gelu": "gelu", "gelu_new": "gelu_new", "gelu_fast": "gelu_fast", "gelu_pytorch_tanh": "gelu_pytorch_tanh",
    "silu": "silu", "swish": "silu", "relu": "relu",
}
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"


# --------------------------------------------------------------------------------------------- config


def read_architecture(path: Path) -> tuple[str, str, dict[str, Any]]:
    """(architecture, model_type, raw config dict) from ``path/config.json``; raises ModelLoadError."""
    cfg_path = path / "config.json"
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{cfg_path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{cfg_path} could not be read ({e})") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{cfg_path} is malformed (expected a JSON object)")
    model_type = str(raw.get("model_type") or "")
    archs = raw.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not archs or not isinstance(archs[0], str)):
        raise ModelLoadError(f"{cfg_path} is malformed (\"architectures\" must be a non-empty list of names)")
    arch = archs[0] if archs else _MODEL_TYPE_TO_ARCH.get(model_type, "")
    if arch not in SUPPORTED_ARCHITECTURES:
        if arch:
            what = arch
        elif model_type:
            what = f"(model_type {model_type!r})"
        else:
            what = "(none named)"
        raise ModelLoadError(f"unsupported architecture {what} in {cfg_path} "
                             f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    return arch, model_type, raw


def _rope_parameters(hf_config: Any) -> dict[str, Any]:
    """RoPE settings as a flat dict: transformers >= 5 keeps them in ``rope_parameters``, 4.x in
    ``rope_theta`` / ``rope_scaling`` / ``rotary_pct``."""
    rope = getattr(hf_config, "rope_parameters", None)
    out: dict[str, Any] = dict(rope) if isinstance(rope, dict) else {}
    if "rope_theta" not in out and getattr(hf_config, "rope_theta", None) is not None:
        out["rope_theta"] = hf_config.rope_theta
    if "partial_rotary_factor" not in out and getattr(hf_config, "rotary_pct", None) is not None:
        out["partial_rotary_factor"] = hf_config.rotary_pct
    legacy = getattr(hf_config, "rope_scaling", None)
    if isinstance(legacy, dict) and "rope_type" not in out:
        out.update(legacy)
        out.setdefault("rope_type", legacy.get("type", "default"))
    out.setdefault("rope_type", "default")
    return out


def _act_fn(name: Any, arch: str) -> str:
    if name not in _ACT_FNS:
        raise ModelLoadError(f"{arch} with activation {name!r} is not supported "
                             f"(supported: {', '.join(sorted(_ACT_FNS))})")
    return _ACT_FNS[name]


def _head_dim(hf_config: Any) -> int:
    hd = getattr(hf_config, "head_dim", None)
    return int(hd) if hd else hf_config.hidden_size // hf_config.num_attention_heads


def _require(cond: bool, arch: str, what: str) -> None:
    if not cond:
        raise ModelLoadError(f"{arch} checkpoints with {what} are not supported by the TransformerLens conversion")


def _rotary(arch: str, hf_config: Any, d_head: int, allow_llama3: bool = False) -> dict[str, Any]:
    rope = _rope_parameters(hf_config)
    rope_type = str(rope.get("rope_type") or "default")
    out: dict[str, Any] = {"positional_embedding_type": "rotary", "rotary_adjacent_pairs": False,
                           "rotary_base": float(rope.get("rope_theta", 10000.0)),
                           # HF: int(head_dim * partial_rotary_factor) (not round, as TL's NeoX branch does).
                           "rotary_dim": int(d_head * float(rope.get("partial_rotary_factor", 1.0)))}
    if rope_type == "llama3" and allow_llama3:
        out.update(use_NTK_by_parts_rope=True,
                   NTK_original_ctx_len=int(rope.get("original_max_position_embeddings",
                                                     hf_config.max_position_embeddings)),
                   NTK_by_parts_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
                   NTK_by_parts_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
                   NTK_by_parts_factor=float(rope.get("factor", 1.0)))
    else:
        _require(rope_type == "default", arch, f"rope_type {rope_type!r}")
    return out


def hf_config_to_tl(hf_config: PretrainedConfig) -> dict[str, Any]:
    """HookedTransformerConfig kwargs (architecture fields only) for a supported HF config.

    Modelled on TL's branches in ``convert_hf_model_config`` but driven only by the config object. Settings
    that TL's converters would silently drop (extra biases, rope variants, sliding windows) raise.
    """
    archs = getattr(hf_config, "architectures", None) or []
    arch = archs[0] if archs else _MODEL_TYPE_TO_ARCH.get(getattr(hf_config, "model_type", ""), "")
    c = hf_config
    if arch == "GPT2LMHeadModel":
        d: dict[str, Any] = {
            "d_model": c.n_embd, "d_head": c.n_embd // c.n_head, "n_heads": c.n_head,
            "d_mlp": c.n_inner or 4 * c.n_embd, "n_layers": c.n_layer, "n_ctx": c.n_positions,
            "eps": c.layer_norm_epsilon, "d_vocab": c.vocab_size,
            "act_fn": _act_fn(c.activation_function, arch),
            "use_attn_scale": bool(getattr(c, "scale_attn_weights", True)),
            "scale_attn_by_inverse_layer_idx": bool(getattr(c, "scale_attn_by_inverse_layer_idx", False)),
            "normalization_type": "LN", "positional_embedding_type": "standard",
        }
    elif arch == "GPTNeoXForCausalLM":
        _require(bool(getattr(c, "attention_bias", True)), arch, "attention_bias=false")
        d_head = c.hidden_size // c.num_attention_heads
        d = {
            "d_model": c.hidden_size, "d_head": d_head, "n_heads": c.num_attention_heads,
            "d_mlp": c.intermediate_size, "n_layers": c.num_hidden_layers, "n_ctx": c.max_position_embeddings,
            "eps": c.layer_norm_eps, "d_vocab": c.vocab_size, "act_fn": _act_fn(c.hidden_act, arch),
            "parallel_attn_mlp": bool(getattr(c, "use_parallel_residual", True)),
            "normalization_type": "LN", **_rotary(arch, c, d_head),
        }
    elif arch in ("LlamaForCausalLM", "Qwen2ForCausalLM", "GemmaForCausalLM"):
        if arch != "Qwen2ForCausalLM":
            _require(not getattr(c, "attention_bias", False), arch, "attention_bias=true")
        _require(not getattr(c, "mlp_bias", False), arch, "mlp_bias=true")
        if arch == "Qwen2ForCausalLM":
            _require(not getattr(c, "use_sliding_window", False), arch, "use_sliding_window=true")
        d_head = _head_dim(c)
        n_kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        d = {
            "d_model": c.hidden_size, "d_head": d_head, "n_heads": c.num_attention_heads,
            # convert_llama_weights writes W_K (plain attention) when this is None and _W_K (grouped-query)
            # otherwise; the Qwen2 and Gemma converters always write _W_K, so they always get a number.
            "n_key_value_heads": (None if arch == "LlamaForCausalLM" and n_kv == c.num_attention_heads
                                  else n_kv),
            "d_mlp": c.intermediate_size, "n_layers": c.num_hidden_layers, "n_ctx": c.max_position_embeddings,
            "eps": c.rms_norm_eps, "d_vocab": c.vocab_size, "act_fn": _act_fn(c.hidden_act, arch),
            "normalization_type": "RMS", "final_rms": True, "gated_mlp": True,
            **_rotary(arch, c, d_head, allow_llama3=arch == "LlamaForCausalLM"),
        }
    else:
        raise ModelLoadError(f"unsupported architecture {arch or '(none)'} "
                             f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    d["original_architecture"] = arch
    return d


def default_prepend_bos(arch: str, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether text is scored with a BOS token in front.

    TL's per-architecture defaults where it states one (GPT-NeoX/Pythia and Qwen2 were trained without a
    leading BOS: False); otherwise True when the tokenizer has a BOS token (Llama, Gemma; GPT-2 uses
    <|endoftext|> as BOS, as TL does).
    """
    if arch in ("GPTNeoXForCausalLM", "Qwen2ForCausalLM"):
        return False
    return tokenizer.bos_token is not None


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


def _converter(arch: str) -> Callable[[Any, Any], dict[str, torch.Tensor]]:
    from transformer_lens.pretrained.weight_conversions import (
        convert_gemma_weights,
        convert_gpt2_weights,
        convert_llama_weights,
        convert_neox_weights,
        convert_qwen2_weights,
    )

    return {
        "GPT2LMHeadModel": convert_gpt2_weights, "GPTNeoXForCausalLM": convert_neox_weights,
        "LlamaForCausalLM": convert_llama_weights, "Qwen2ForCausalLM": convert_qwen2_weights,
        "GemmaForCausalLM": convert_gemma_weights,
    }[arch]


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
    from transformers import AutoConfig

    path = Path(path)
    arch, model_type, _ = read_architecture(path)
    try:
        hf_config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - config classes raise many types
        raise ModelLoadError(f"{path / 'config.json'} is malformed: {_one_line(e)}") from None
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

    try:
        cfg = HookedTransformerConfig(
            **arch_cfg, model_name=path.name, tokenizer_name=str(path), device=str(device), dtype=dtype,
            n_devices=n_devices, init_weights=False, default_prepend_bos=default_prepend_bos(arch, tokenizer))
    except (AssertionError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{path / 'config.json'} gives an invalid TransformerLens config: {_one_line(e)}"
                             ) from None

    hf_model = _load_hf_model(path, hf_config, use_safetensors=is_safe)
    try:
        # Convert on the CPU in float32; load_state_dict casts into the model's dtype on its device.
        convert_cfg = copy.copy(cfg)
        convert_cfg.device, convert_cfg.dtype = "cpu", torch.float32
        with torch.no_grad():
            state_dict = _converter(arch)(hf_model, convert_cfg)
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
            "weights": [f.name for f in files]}
    return model, tokenizer, meta


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
