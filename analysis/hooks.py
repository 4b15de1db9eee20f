"""The hook vocabulary: every TransformerLens hook name the workbench uses, built by TransformerLens's own
``get_act_name`` (``get_act_name("resid_post", 3) == "blocks.3.hook_resid_post"``) so that code, stored
results and the UI use the names TransformerLens users know. No other module builds a hook string by hand.

See docs/ARCHITECTURE.md ("Shared concepts").
"""

from __future__ import annotations

from transformer_lens.utilities import get_act_name

EMBED = "hook_embed"  # token embeddings (before positional embeddings are added)
POS_EMBED = "hook_pos_embed"


def resid_pre(layer: int) -> str:
    return get_act_name("resid_pre", layer)


def resid_post(layer: int) -> str:
    return get_act_name("resid_post", layer)


def mlp_in(layer: int) -> str:
    return get_act_name("mlp_in", layer)


def mlp_out(layer: int) -> str:
    return get_act_name("mlp_out", layer)


def attn_out(layer: int) -> str:
    return get_act_name("attn_out", layer)


def attn_result(layer: int) -> str:
    """Per-head attention outputs ``blocks.{l}.attn.hook_result`` (needs ``use_attn_result``)."""
    return get_act_name("result", layer)


def attn_input(layer: int, which: str) -> str:
    """Per-head query / key / value inputs ``blocks.{l}.hook_{q,k,v}_input`` (needs ``use_split_qkv_input``)."""
    if which not in ("q", "k", "v"):
        raise ValueError(f"which must be q, k or v, got {which!r}")
    return get_act_name(f"{which}_input", layer)


def attn_k(layer: int) -> str:
    return get_act_name("k", layer)


def attn_v(layer: int) -> str:
    return get_act_name("v", layer)


def attn_scores(layer: int) -> str:
    return get_act_name("attn_scores", layer)


def attn_pattern(layer: int) -> str:
    return get_act_name("pattern", layer)


# The per-layer output a trace kind restores (tracing), by kind.
_KIND_HOOKS = {"resid": resid_post, "mlp": mlp_out, "attn": attn_out}


def kind_hook(kind: str, layer: int) -> str:
    """``resid`` -> ``hook_resid_post``, ``mlp`` -> ``hook_mlp_out``, ``attn`` -> ``hook_attn_out`` of ``layer``."""
    return _KIND_HOOKS[kind](layer)


def kind_hook_template(kind: str) -> str:
    """The hook name of a kind with ``{layer}`` for the layer, for display (``blocks.{layer}.hook_mlp_out``)."""
    return kind_hook(kind, 0).replace(".0.", ".{layer}.", 1)
