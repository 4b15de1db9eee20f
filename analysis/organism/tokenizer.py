"""A word-level tokenizer for the organism, built with the `tokenizers` library and wrapped as a
Hugging Face fast tokenizer so it follows the same path as any real checkpoint's tokenizer."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}


def build_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """Every whitespace-separated word is one token; special tokens come first (pad id 0)."""
    vocab: dict[str, int] = {}
    for tok in (SPECIAL["pad_token"], SPECIAL["bos_token"], SPECIAL["eos_token"], SPECIAL["unk_token"]):
        vocab[tok] = len(vocab)
    for w in sorted(set(words)):
        if w not in vocab:
            vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    # TransformerLens reads name_or_path from init_kwargs; an in-memory tokenizer lacks it.
    fast.init_kwargs["name_or_path"] = "erasure-organism"
    # Tells TransformerLens the tokenizer needs no reload "with BOS": we prepend BOS ourselves
    # (analysis.scoring.encode_text), and a reload would look the name up on the hub.
    fast.init_kwargs["add_bos_token"] = True
    return fast
