"""Tiny, seeded, random Hugging Face causal-LM checkpoints for tests and notebooks (no hub access).

``make_tiny_checkpoint("llama", tmp / "tiny-llama")`` writes a 2-layer model (hidden 64, 4 heads) with
``config.json`` + ``model.safetensors`` + a byte-level tokenizer, exactly as ``save_pretrained`` would for a
real checkpoint. Weights get extra seeded noise on top of HF's init so that norm gains, biases and
attention patterns are all non-trivial (HF initialises norm weights to exactly 1 or 0 and biases to 0,
which would hide conversion mistakes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

# Short name -> HF architecture class name. The short name is also used in directory names.
ARCHES: dict[str, str] = {
    "gpt2": "GPT2LMHeadModel",
    "pythia": "GPTNeoXForCausalLM",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "llama3": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "phi": "PhiForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
}

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
N_CTX = 128
NOISE_STD = 0.15


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence transformers' per-file progress bars ("Writing model shards", "Loading weights")."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def make_tokenizer(variant: int = 0, add_bos: bool = False) -> Any:
    """A byte-level BPE tokenizer with no merges: 4 special tokens + the 256 byte symbols (vocab 260).

    It encodes any text without unknown tokens. ``variant`` != 0 permutes the byte ids (seeded), giving a
    tokenizer of the same size whose ids are not interchangeable with variant 0. ``add_bos``: its post-processor
    puts ``<bos>`` in front of every text by default (as Llama 2/3's and Gemma's do); otherwise it adds nothing
    (as GPT-2's, Pythia's, Qwen's and SmolLM2's do), although it has a BOS token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    if variant:
        g = torch.Generator().manual_seed(variant)
        alphabet = [alphabet[i] for i in torch.randperm(len(alphabet), generator=g).tolist()]
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *alphabet])}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    if add_bos:
        tk.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B:1",
                                                          special_tokens=[("<bos>", BOS_ID)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=N_CTX)


def tiny_config(arch: str, vocab_size: int) -> Any:
    """A small transformers config for ``arch`` (a key of ARCHES or an HF architecture name): 2 layers, hidden
    64, 4 query heads, each with the features of its family switched on (grouped-query attention, rope
    variants, sliding windows shorter than the test inputs, soft caps that bite, tied embeddings)."""
    import transformers as tf

    arch = _short_name(arch)
    base = {"vocab_size": vocab_size, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    dec = {**base, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
           "max_position_embeddings": N_CTX}

    def rope(theta: float, **extra: Any) -> dict[str, Any]:
        return {"rope_type": "default", "rope_theta": theta, **extra}

    if arch == "gpt2":
        return tf.GPT2Config(n_positions=N_CTX, n_embd=64, n_layer=2, n_head=4, **base)
    if arch == "pythia":
        # Pythia-style: partial rotary (a quarter of each head), parallel attention + MLP.
        return tf.GPTNeoXConfig(**{**dec, "intermediate_size": 256}, use_parallel_residual=True,
                                rope_parameters=rope(10000.0, partial_rotary_factor=0.25))
    if arch == "llama":
        # Grouped-query attention and a non-default rope base (Llama 3 uses 500000).
        return tf.LlamaConfig(**dec, num_key_value_heads=2, rope_parameters=rope(500000.0), tie_word_embeddings=False)
    if arch == "llama3":
        # Llama 3.2 / SmolLM2 style: llama3 rope scaling (original context 16 < the test inputs), GQA, tied.
        return tf.LlamaConfig(**dec, num_key_value_heads=2, tie_word_embeddings=True, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    if arch == "mistral":
        return tf.MistralConfig(**dec, num_key_value_heads=2, sliding_window=8, rope_parameters=rope(1e6),
                                tie_word_embeddings=False)
    if arch == "qwen2":
        # Qwen2: q/k/v biases, GQA, tied embeddings (as in Qwen2-0.5B), rope base 1e6.
        return tf.Qwen2Config(**dec, num_key_value_heads=2, rope_parameters=rope(1e6), tie_word_embeddings=True)
    if arch == "qwen3":
        # Qwen3-0.6B style: head_dim * heads != hidden, q/k norms, GQA, tied.
        return tf.Qwen3Config(**dec, num_key_value_heads=2, head_dim=32, rope_parameters=rope(1e6),
                              tie_word_embeddings=True)
    if arch == "phi":
        # Phi-1.5: LayerNorm, biases, half-rotary heads, parallel attention + MLP, untied with an lm_head bias.
        return tf.PhiConfig(**dec, rope_parameters=rope(10000.0, partial_rotary_factor=0.5))
    if arch == "phi3":
        # Phi-3: fused qkv and gate/up projections; GQA and a sliding window (Phi-3-mini: 2047 of 4096).
        return tf.Phi3Config(**dec, num_key_value_heads=2, sliding_window=8, rope_parameters=rope(10000.0),
                             tie_word_embeddings=False)
    if arch == "gemma":
        # Gemma: head_dim set explicitly, multi-query attention (as in gemma-2b), tanh-GELU gated MLP.
        return tf.GemmaConfig(**dec, num_key_value_heads=1, head_dim=16, hidden_act="gelu_pytorch_tanh")
    if arch == "gemma2":
        # Gemma 2: pre+post norms, alternating sliding/global layers, soft caps, query scale != head_dim.
        return tf.Gemma2Config(**dec, num_key_value_heads=2, head_dim=16, sliding_window=8,
                               query_pre_attn_scalar=24, attn_logit_softcapping=5.0, final_logit_softcapping=3.0)
    if arch == "gemma3":
        # Gemma 3 text-only: q/k norms, local base 1e4, global base 1e6 with linear scaling (as 4B+).
        return tf.Gemma3TextConfig(**dec, num_key_value_heads=1, head_dim=16, sliding_window=8,
                                   layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=16,
                                   rope_parameters={"sliding_attention": rope(10000.0),
                                                    "full_attention": {"rope_type": "linear", "factor": 8.0,
                                                                       "rope_theta": 1e6}})
    if arch == "olmo2":
        # OLMo 2: norms after attention and MLP, q/k norms over the whole projection.
        return tf.Olmo2Config(**dec, rope_parameters=rope(500000.0), tie_word_embeddings=False)
    raise ValueError(f"unknown tiny architecture {arch!r} (expected one of {', '.join(ARCHES)})")


def make_tiny_model(arch: str, seed: int = 0, vocab_size: int | None = None,
                    config_overrides: dict[str, Any] | None = None) -> Any:
    """The HF model object (float32, eval mode) that ``make_tiny_checkpoint`` would save."""
    from transformers import AutoModelForCausalLM

    vocab_size = vocab_size or len(make_tokenizer())
    config = tiny_config(arch, vocab_size)
    for k, v in (config_overrides or {}).items():
        setattr(config, k, v)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * NOISE_STD)
    return model.eval()


def make_tiny_checkpoint(arch: str, out_dir: Path, seed: int = 0, tokenizer_variant: int = 0,
                         config_overrides: dict[str, Any] | None = None, tokenizer_adds_bos: bool = False) -> Path:
    """Write a tiny random checkpoint of ``arch`` (a key of ARCHES or the HF class name) with its tokenizer
    to ``out_dir``; return ``out_dir``. ``config_overrides`` set attributes of the transformers config before
    the model is built (e.g. ``{"num_key_value_heads": 4}``); ``tokenizer_adds_bos``: the saved tokenizer puts
    a BOS token in front of every text by default.

    Name the directory after the architecture (e.g. ``.../tiny-llama``): TransformerLens routes local paths
    containing "llama"/"gemma" by name, which our loader must not do.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(tokenizer_variant, add_bos=tokenizer_adds_bos)
    model = make_tiny_model(arch, seed=seed, vocab_size=len(tokenizer), config_overrides=config_overrides)
    with quiet_progress():
        model.save_pretrained(str(out_dir))  # transformers 5 always writes model.safetensors
    tokenizer.save_pretrained(str(out_dir))
    if not (out_dir / "model.safetensors").is_file():
        raise RuntimeError(f"save_pretrained did not write {out_dir / 'model.safetensors'}")
    return out_dir


def _short_name(arch: str) -> str:
    if arch in ARCHES:
        return arch
    for short, full in ARCHES.items():
        if full == arch:
            return short  # the first short name of a class (e.g. "llama" for LlamaForCausalLM)
    raise ValueError(f"unknown tiny architecture {arch!r} (expected one of {', '.join(ARCHES)})")
