"""analysis.hooks, the hook vocabulary: every name is TransformerLens's own (``get_act_name``), names a hook
point of the organism that fires in a forward pass, and no other module of analysis/ spells a hook name."""

from __future__ import annotations

import copy
import io
import re
import tokenize
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformer_lens.utilities import get_act_name

from analysis import hooks

ANALYSIS = Path(__file__).resolve().parent.parent / "analysis"


def vocabulary(n_layers: int) -> list[tuple[str, str, str]]:
    """(call, our name, get_act_name's name) for every function and constant of analysis.hooks, every layer."""
    rows = [("EMBED", hooks.EMBED, get_act_name("embed")), ("POS_EMBED", hooks.POS_EMBED, get_act_name("pos_embed"))]
    per_layer: list[tuple[str, Callable[[int], str], str]] = [
        ("resid_pre", hooks.resid_pre, "resid_pre"),
        ("resid_post", hooks.resid_post, "resid_post"),
        ("mlp_in", hooks.mlp_in, "mlp_in"),
        ("mlp_out", hooks.mlp_out, "mlp_out"),
        ("attn_out", hooks.attn_out, "attn_out"),
        ("attn_result", hooks.attn_result, "result"),
        ("attn_k", hooks.attn_k, "k"),
        ("attn_v", hooks.attn_v, "v"),
        ("attn_scores", hooks.attn_scores, "attn_scores"),
        ("attn_pattern", hooks.attn_pattern, "pattern"),
    ]
    for layer in range(n_layers):
        rows += [(f"{call}({layer})", fn(layer), get_act_name(tl, layer)) for call, fn, tl in per_layer]
        rows += [(f"attn_input({layer}, {w!r})", hooks.attn_input(layer, w), get_act_name(f"{w}_input", layer))
                 for w in ("q", "k", "v")]
        rows += [(f"kind_hook({kind!r}, {layer})", hooks.kind_hook(kind, layer), get_act_name(tl, layer))
                 for kind, tl in (("resid", "resid_post"), ("mlp", "mlp_out"), ("attn", "attn_out"))]
    return rows


def public_hook_functions() -> set[str]:
    return {n for n, v in vars(hooks).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", "") == hooks.__name__}


def test_the_vocabulary_is_transformer_lens_own():
    rows = vocabulary(3)
    for call, ours, theirs in rows:
        assert ours == theirs, f"hooks.{call} = {ours!r}, get_act_name gives {theirs!r}"
    assert hooks.attn_result(2) == "blocks.2.attn.hook_result" and hooks.attn_input(1, "q") == "blocks.1.hook_q_input"
    assert hooks.EMBED == "hook_embed" and hooks.resid_post(3) == "blocks.3.hook_resid_post"
    # every public function of the module is covered by the table above (a new one must be added there)
    covered = {re.match(r"\w+", call).group(0) for call, _, _ in rows} | {"kind_hook_template"}
    assert public_hook_functions() <= covered, public_hook_functions() - covered


def test_kind_hook_template_formats_to_kind_hook():
    for kind in ("resid", "mlp", "attn"):
        template = hooks.kind_hook_template(kind)
        assert "{layer}" in template
        for layer in (0, 1, 7, 12):
            assert template.format(layer=layer) == hooks.kind_hook(kind, layer)
    assert hooks.kind_hook_template("mlp") == "blocks.{layer}.hook_mlp_out"


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="q, k or v"):
        hooks.attn_input(0, "o")
    with pytest.raises(KeyError):
        hooks.kind_hook("embed", 0)


def test_every_name_is_a_hook_point_of_the_organism(organism):
    model = organism.model
    rows = vocabulary(model.cfg.n_layers)
    missing = [(call, name) for call, name, _ in rows if name not in model.hook_dict]
    assert not missing, missing
    assert all(model.mod_dict[name] is model.hook_dict[name] for _, name, _ in rows)


def test_every_name_fires_in_a_forward_pass(organism):
    """With the flags that switch the per-head and split-input hooks on (on a copy: the session's organism is
    shared), a forward pass through every hook of the vocabulary caches each one."""
    model = copy.deepcopy(organism.model)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    names = {name for _, name, _ in vocabulary(model.cfg.n_layers)}
    tokens = torch.tensor([[1, 5, 6, 7, 8]], device=organism.device) % model.cfg.d_vocab
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    assert names <= set(cache.keys()), names - set(cache.keys())
    d_model, n_heads = model.cfg.d_model, model.cfg.n_heads
    assert cache[hooks.resid_post(0)].shape == (1, 5, d_model)
    assert cache[hooks.attn_result(0)].shape == (1, 5, n_heads, d_model)
    assert cache[hooks.attn_input(0, "q")].shape == (1, 5, n_heads, d_model)
    assert cache[hooks.attn_pattern(0)].shape == (1, n_heads, 5, 5)


# ---- no module of analysis/ but analysis/hooks.py spells a hook name ------------------------------------

BLOCKS = re.compile(r"""["']blocks\.\{?""")
F_BLOCKS = re.compile(r"""f["']blocks\.""")
# State-dict keys of a block's parameters ("blocks.0.attn.W_Q") are weight names, not hook points.
PARAM_KEY = re.compile(r"""^["']blocks\.\d+\.[\w.]*\.(W|b)_\w+["']$""")
EMBED_LITERAL = re.compile(r"""["']hook_(pos_)?embed["']""")
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python >= 3.12 splits f-strings into parts
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)
_SKIP = {tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}


def string_literals(source: str) -> list[tuple[int, str]]:
    """(line, source text) of every string literal in code, quotes and prefix included; docstrings (and any
    other statement that is nothing but a string) and comments are skipped."""
    lines = source.splitlines(keepends=True)

    def text(start: tuple[int, int], end: tuple[int, int]) -> str:
        (r0, c0), (r1, c1) = start, end
        if r0 == r1:
            return lines[r0 - 1][c0:c1]
        return lines[r0 - 1][c0:] + "".join(lines[r0:r1 - 1]) + lines[r1 - 1][:c1]

    out: list[tuple[int, str]] = []
    statement: list[tuple[int, str] | None] = []  # a literal, or None for any other token
    depth, fstart = 0, (0, 0)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if _FSTRING_START is not None and tok.type == _FSTRING_START:
            depth += 1
            if depth == 1:
                fstart = tok.start
            continue
        if _FSTRING_END is not None and tok.type == _FSTRING_END:
            depth -= 1
            if depth == 0:
                statement.append((fstart[0], text(fstart, tok.end)))
            continue
        if depth:
            continue  # inside an f-string: its parts belong to the literal
        if tok.type == tokenize.NEWLINE or tok.type == tokenize.ENDMARKER:
            if statement and any(item is None for item in statement):
                out += [item for item in statement if item is not None]
            statement = []
        elif tok.type == tokenize.STRING:
            statement.append((tok.start[0], tok.string))
        elif tok.type not in _SKIP:
            statement.append(None)
    return out


def hook_name_literals(source: str) -> list[tuple[int, str]]:
    return [(line, lit) for line, lit in string_literals(source)
            if (BLOCKS.search(lit) or F_BLOCKS.search(lit) or EMBED_LITERAL.search(lit)) and not PARAM_KEY.match(lit)]


def test_the_scanner_finds_hook_names_in_code_only():
    source = '''"""Module docstring: blocks.{l}.hook_resid_post and "hook_embed" are fine here."""
import x  # "blocks.0.hook_mlp_out" in a comment is fine


def f(layer):
    """A docstring naming 'blocks.3.attn.hook_result'."""
    a = f"blocks.{layer}.hook_resid_post"
    b = "blocks." + str(layer)
    c = model.hook_dict["hook_pos_embed"]
    d = ("x", 'hook_embed')
    e = "the blocks.{layer} of a model"  # not a hook literal: no quote before blocks
    w = {"blocks.0.attn.W_Q": 1}  # a parameter's state-dict key, not a hook name
    "a string statement: blocks.0"
    return f'blocks.{layer}.attn.hook_{"q"}'
'''
    found = hook_name_literals(source)
    assert [line for line, _ in found] == [7, 8, 9, 10, 14], found
    assert found[0][1] == 'f"blocks.{layer}.hook_resid_post"'


def test_no_hook_name_literal_outside_analysis_hooks():
    offenders = []
    for path in sorted(ANALYSIS.rglob("*.py")):
        if path == ANALYSIS / "hooks.py":
            continue
        for line, lit in hook_name_literals(path.read_text()):
            offenders.append(f"{path.relative_to(ANALYSIS.parent)}:{line}: {lit}")
    assert not offenders, "hook names spelled outside analysis/hooks.py (use analysis.hooks):\n" + "\n".join(
        offenders)
