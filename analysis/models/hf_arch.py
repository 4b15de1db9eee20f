"""Which Hugging Face causal-LM architectures load, and the HookedTransformerConfig each config.json gives.

What is TransformerLens's and what is ours
------------------------------------------
TransformerLens 3.9 converts every architecture below; this module reuses what of it takes the checkpoint's own
config, and maps by hand only what TL decides by hub *name*:

* **weights**: TL's per-architecture converters (``transformer_lens.pretrained.weight_conversions``, named in
  ``ARCHITECTURES``), called with the HF model and the config built here. They read no names.
* **geometry** (d_model, heads, key/value heads, layers, vocabulary, context, d_mlp, d_head, activation, norm
  eps): TL's own generic mapping ``map_default_transformer_lens_config`` (TransformerBridge's), fed the
  checkpoint's config object.
* **by hand** (``ArchSpec.traits`` and ``_config_fields``): the structural flags (LayerNorm or RMSNorm, gated
  MLP, parallel attention + MLP, q/k norms, Gemma 2/3's extra norms) that no HF config field states, and the
  config-valued extras (rope, sliding windows, soft caps, Gemma's query scale). TL's ``convert_hf_model_config``
  cannot be fed a config: it routes by the *name* (a local path containing "llama" or "gemma" is routed without
  reading config.json), its Gemma 1/2/3 and OLMo 2 branches are tables per hub name (sizes hard-coded), and under
  transformers 5 its GPT-2 and Phi branches raise (``n_ctx``, ``partial_rotary_factor`` moved) while its Llama,
  Qwen 2 and Phi-3 branches ignore ``head_dim`` / partial rotary. The traits are the ones TL's branches state.

Settings TL's forward cannot compute (biases TL's converters drop, rope variants it lacks, bidirectional
attention) raise ``ModelLoadError`` instead of loading a different model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# TL keeps a rotary sin/cos table of n_ctx rows per layer: Llama 3.x declares 131072 positions (1 GB of tables
# for a 1B model). TL's own tables cap these models at 2048-8192; we cap at 8192, far above any unlearning
# sample (a longer input is refused with the model's context length in the message).
MAX_N_CTX = 8192


@dataclass(frozen=True)
class ArchSpec:
    """How one HF architecture becomes a HookedTransformer."""

    converter: str  # TL weight converter (transformer_lens.pretrained.weight_conversions)
    model_types: tuple[str, ...]  # config.json "model_type" values (for configs without "architectures")
    traits: dict[str, Any] = field(default_factory=dict)  # HookedTransformerConfig fields no HF field states
    # The converter writes grouped-query weights (_W_K/_W_V) always, so n_key_value_heads is always set;
    # otherwise it is None when there are as many key/value heads as query heads (TL's plain-attention path).
    kv_always: bool = False
    sliding_all_layers: bool = False  # a "sliding_window" without "layer_types" windows every layer


_RMS = {"normalization_type": "RMS", "final_rms": True, "gated_mlp": True, "positional_embedding_type": "rotary"}
_GEMMA2 = {**_RMS, "use_normalization_before_and_after": True}

ARCHITECTURES: dict[str, ArchSpec] = {
    "GPT2LMHeadModel": ArchSpec("convert_gpt2_weights", ("gpt2",),
                                {"normalization_type": "LN", "positional_embedding_type": "standard"}),
    "GPTNeoXForCausalLM": ArchSpec("convert_neox_weights", ("gpt_neox",),
                                   {"normalization_type": "LN", "positional_embedding_type": "rotary"}),
    "LlamaForCausalLM": ArchSpec("convert_llama_weights", ("llama",), _RMS),
    "MistralForCausalLM": ArchSpec("convert_mistral_weights", ("mistral",), _RMS, kv_always=True,
                                   sliding_all_layers=True),
    "Qwen2ForCausalLM": ArchSpec("convert_qwen2_weights", ("qwen2",), _RMS, kv_always=True),
    "Qwen3ForCausalLM": ArchSpec("convert_qwen3_weights", ("qwen3",), {**_RMS, "use_qk_norm": True}),
    "PhiForCausalLM": ArchSpec("convert_phi_weights", ("phi",),
                               {"normalization_type": "LN", "positional_embedding_type": "rotary",
                                "parallel_attn_mlp": True}),
    "Phi3ForCausalLM": ArchSpec("convert_phi3_weights", ("phi3",), _RMS, sliding_all_layers=True),
    "GemmaForCausalLM": ArchSpec("convert_gemma_weights", ("gemma",), _RMS, kv_always=True),
    "Gemma2ForCausalLM": ArchSpec("convert_gemma_weights", ("gemma2",), _GEMMA2, kv_always=True),
    "Gemma3ForCausalLM": ArchSpec("convert_gemma_weights", ("gemma3_text",), {**_GEMMA2, "use_qk_norm": True},
                                  kv_always=True),
    # OLMo 2's post-norms and whole-vector q/k norms are switched on in TL by original_architecture.
    "Olmo2ForCausalLM": ArchSpec("convert_olmo2_weights", ("olmo2",), _RMS),
}
SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(ARCHITECTURES)
_MODEL_TYPE_TO_ARCH: dict[str, str] = {t: a for a, s in ARCHITECTURES.items() for t in s.model_types}
# HF ACT2FN name -> TransformerLens act_fn. Same formulas on both sides ("gelu" is the exact erf GELU).
_ACT_FNS: dict[str, str] = {
    "gelu": "gelu", "gelu_new": "gelu_new", "gelu_fast": "gelu_fast", "gelu_pytorch_tanh": "gelu_pytorch_tanh",
    "silu": "silu", "swish": "silu", "relu": "relu",
}


def unsupported_message(what: str, where: str = "") -> str:
    """The one line every refusal of an architecture says, with the supported list."""
    at = f" in {where}" if where else ""
    return f"unsupported architecture {what}{at} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"


def arch_name(hf_config: Any) -> str:
    """The architecture a config (object or dict) names: its first "architectures" entry, else its model_type's."""
    get = hf_config.get if isinstance(hf_config, dict) else lambda k: getattr(hf_config, k, None)
    archs = get("architectures") or []
    return str(archs[0]) if archs else _MODEL_TYPE_TO_ARCH.get(str(get("model_type") or ""), "")


def read_architecture(path: Path) -> tuple[str, str, dict[str, Any]]:
    """(architecture, model_type, raw config dict) from ``path/config.json``; raises ModelLoadError."""
    cfg_path = Path(path) / "config.json"
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
    arch = arch_name(raw)
    if arch not in ARCHITECTURES:
        what = arch or (f"(model_type {model_type!r})" if model_type else "(none named)")
        raise ModelLoadError(unsupported_message(what, str(cfg_path)))
    return arch, model_type, raw


# ------------------------------------------------------------------------------------------ config fields


def _require(cond: bool, arch: str, what: str) -> None:
    if not cond:
        raise ModelLoadError(f"{arch} checkpoints with {what} are not supported by the TransformerLens conversion")


def rope_parameters(hf_config: Any, layer_type: str | None = None) -> dict[str, Any]:
    """RoPE settings as a flat dict (transformers 5 ``rope_parameters``, per layer type for Gemma 3; 4.x
    ``rope_theta`` / ``rope_scaling`` / ``rotary_pct`` / ``partial_rotary_factor``)."""
    rope = getattr(hf_config, "rope_parameters", None)
    out: dict[str, Any] = dict(rope) if isinstance(rope, dict) else {}
    if layer_type is not None and isinstance(out.get(layer_type), dict):
        out = dict(out[layer_type])
    for key, attr in (("rope_theta", "rope_theta"), ("partial_rotary_factor", "rotary_pct"),
                      ("partial_rotary_factor", "partial_rotary_factor")):
        if key not in out and getattr(hf_config, attr, None) is not None:
            out[key] = getattr(hf_config, attr)
    legacy = getattr(hf_config, "rope_scaling", None)
    if isinstance(legacy, dict) and "rope_type" not in out and "type" in legacy:
        out.update(legacy, rope_type=legacy["type"])
    out.setdefault("rope_type", "default")
    return out


def _rotary(arch: str, c: Any, d_head: int, n_ctx: int) -> dict[str, Any]:
    layered = isinstance(getattr(c, "rope_parameters", None), dict) and "full_attention" in c.rope_parameters
    rope = rope_parameters(c, "full_attention" if layered else None)
    out: dict[str, Any] = {"rotary_adjacent_pairs": False, "rotary_base": float(rope.get("rope_theta", 10000.0)),
                           # HF: int(head_dim * partial_rotary_factor) (TL's NeoX and Phi branches round).
                           "rotary_dim": int(d_head * float(rope.get("partial_rotary_factor", 1.0)))}
    if layered:  # Gemma 3: local layers have their own base and no scaling
        local = rope_parameters(c, "sliding_attention")
        _require(local["rope_type"] == "default", arch, f"rope_type {local['rope_type']!r} on local layers")
        out["rotary_base_local"] = float(local.get("rope_theta", 10000.0))
    kind = str(rope["rope_type"])
    if kind == "llama3":
        out.update(use_NTK_by_parts_rope=True,
                   NTK_original_ctx_len=int(rope.get("original_max_position_embeddings", n_ctx)),
                   NTK_by_parts_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
                   NTK_by_parts_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
                   NTK_by_parts_factor=float(rope.get("factor", 1.0)))
    elif kind == "linear":  # TL scales the global (non-local) layers, as HF's Gemma 3 does
        out["rotary_scaling_factor"] = float(rope.get("factor", 1.0))
    else:
        _require(kind == "default", arch, f"rope_type {kind!r}")
    return out


def _windows(spec: ArchSpec, c: Any, n_layers: int) -> dict[str, Any]:
    """Sliding-window attention: per layer from ``layer_types`` (Gemma 2/3, Qwen), or on every layer."""
    window = getattr(c, "sliding_window", None)
    if not window:
        return {}
    types = getattr(c, "layer_types", None)
    if types:
        attn_types = ["local" if t == "sliding_attention" else "global" for t in types]
    elif spec.sliding_all_layers:
        attn_types = ["local"] * n_layers
    else:
        return {}
    if "local" not in attn_types:
        return {}
    return {"use_local_attn": True, "window_size": int(window), "attn_types": attn_types}


def _checks(arch: str, c: Any, n_heads: int, n_kv: int) -> None:
    """Refuse settings TL's converter would drop or its forward cannot compute."""
    if arch == "GPTNeoXForCausalLM":
        _require(bool(getattr(c, "attention_bias", True)), arch, "attention_bias=false")
    elif arch not in ("Qwen2ForCausalLM", "GPT2LMHeadModel", "PhiForCausalLM"):  # these always have biases
        _require(not getattr(c, "attention_bias", False), arch, "attention_bias=true")
    _require(not getattr(c, "mlp_bias", False), arch, "mlp_bias=true")
    _require(not getattr(c, "qk_layernorm", False), arch, "qk_layernorm=true")
    _require(not getattr(c, "use_bidirectional_attention", False), arch, "use_bidirectional_attention=true")
    _require(getattr(c, "clip_qkv", None) is None, arch, "clip_qkv")
    if arch == "Olmo2ForCausalLM":
        _require(n_kv == n_heads, arch, "grouped-query attention (TL's OLMo 2 converter is multi-head only)")


def _config_fields(arch: str, c: Any, d: dict[str, Any]) -> dict[str, Any]:
    """Config-valued settings beyond the geometry."""
    out: dict[str, Any] = {}
    if arch == "GPT2LMHeadModel":
        out["use_attn_scale"] = bool(getattr(c, "scale_attn_weights", True))
        out["scale_attn_by_inverse_layer_idx"] = bool(getattr(c, "scale_attn_by_inverse_layer_idx", False))
    if arch == "GPTNeoXForCausalLM":
        out["parallel_attn_mlp"] = bool(getattr(c, "use_parallel_residual", True))
    if d["positional_embedding_type"] == "rotary":
        out.update(_rotary(arch, c, d["d_head"], d["n_ctx"]))
    if getattr(c, "query_pre_attn_scalar", None):  # Gemma 2/3 scale queries by this, not d_head
        out["attn_scale"] = math.sqrt(float(c.query_pre_attn_scalar))
    if getattr(c, "attn_logit_softcapping", None):
        out["attn_scores_soft_cap"] = float(c.attn_logit_softcapping)
    if getattr(c, "final_logit_softcapping", None):
        out["output_logits_soft_cap"] = float(c.final_logit_softcapping)
    out.update(_windows(ARCHITECTURES[arch], c, d["n_layers"]))
    return out


def _geometry(c: Any) -> dict[str, Any]:
    """TL's own generic HF -> TL field mapping (TransformerBridge's), fed the checkpoint's config object."""
    from transformer_lens.model_bridge.sources.transformers import map_default_transformer_lens_config

    t = map_default_transformer_lens_config(c)
    d_model = int(t.d_model)
    return {"d_model": d_model, "n_heads": int(t.n_heads), "n_layers": int(t.n_layers), "d_vocab": int(t.d_vocab),
            "n_ctx": int(t.n_ctx), "d_head": int(t.d_head), "eps": float(t.eps), "act_fn": t.act_fn,
            # GPT-2's n_inner = None means 4 * d_model (HF's own default).
            "d_mlp": int(t.d_mlp) if t.d_mlp else 4 * d_model,
            "n_kv": int(getattr(t, "n_key_value_heads", None) or t.n_heads)}


def hf_config_to_tl(hf_config: PretrainedConfig) -> dict[str, Any]:
    """HookedTransformerConfig kwargs (architecture fields only) for a supported HF config object."""
    arch = arch_name(hf_config)
    spec = ARCHITECTURES.get(arch)
    if spec is None:
        raise ModelLoadError(unsupported_message(arch or "(none named)"))
    g = _geometry(hf_config)
    n_kv = g.pop("n_kv")
    if g["act_fn"] not in _ACT_FNS:
        raise ModelLoadError(f"{arch} with activation {g['act_fn']!r} is not supported "
                             f"(supported: {', '.join(sorted(_ACT_FNS))})")
    _checks(arch, hf_config, g["n_heads"], n_kv)
    d: dict[str, Any] = {**g, "act_fn": _ACT_FNS[g["act_fn"]], "n_ctx": min(g["n_ctx"], MAX_N_CTX),
                         "positional_embedding_type": "standard", **spec.traits}
    d["n_key_value_heads"] = n_kv if spec.kv_always or n_kv != d["n_heads"] else None
    d.update(_config_fields(arch, hf_config, d))
    d["original_architecture"] = arch
    return d


def converter(arch: str) -> Any:
    """TL's weight converter for ``arch``: ``fn(hf_model, cfg) -> TL state dict``."""
    from transformer_lens.pretrained import weight_conversions

    return getattr(weight_conversions, ARCHITECTURES[arch].converter)
