"""Options of a prompt-token attribution (unPact), the store kinds, the function-word list, and how a
neutral replacement token is resolved."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from transformers import PreTrainedTokenizerBase

from analysis.errors import AnalysisInputError

METHODS: tuple[str, ...] = ("loo", "grad", "ig")
METHOD_LABELS: dict[str, str] = {
    "loo": "leave-one-out: LP(x, y) - LP(x without x_i, y)",
    "grad": "input x gradient on the token embeddings (hook_embed)",
    "ig": "integrated gradients on the token embeddings (zero baseline)",
}
ABLATIONS: tuple[str, ...] = ("delete", "replace")
NEUTRAL_ALIASES: tuple[str, ...] = ("unk", "pad", "eos")
KEYWORD_SOURCES: tuple[str, ...] = ("original", "self")

ATTRIBUTION_KIND = "attribution"  # per-sample TokenAttribution rows in the study store
RECOVERY_KIND = "recovery"  # per-sample, per-strategy emphasis outcomes in the study store
OPTIONS_VERSION = 1

# Function words: contributions of these are reported as their own group (before vs after unlearning).
# Compared lower-cased, with surrounding whitespace and BPE space markers stripped.
FUNCTION_WORDS: frozenset[str] = frozenset({
    "the", "of", "is", "a", "an", "in", "by", "at", "was", "to", "for", "on", "as", "and", "or", "with", "from",
    "that", "this", "it", "its", "has", "had", "have", "be", "been", "are", "were", "who", "which", "what",
    "where", "when", "his", "her", "their", "he", "she", "they", "does", "did", "do", "not", "but", "than",
    ",", ".", ":", ";", "'s", "s", "-",
})


def is_function_word(token: str) -> bool:
    return token.strip().lstrip("Ġ▁").lower() in FUNCTION_WORDS


@dataclass(frozen=True)
class AttributionOptions:
    """Everything that changes the numbers of an attribution (and so its store key), plus a batch size that
    only changes how the work is chunked.

    ``alpha`` / ``beta`` select the KeyTokens (unPact): the tokens with positive contribution when there are
    fewer than ``beta`` of them; otherwise those whose *normalised positive contribution*
    ``C_i / sum_{j: C_j > 0} C_j`` (the token's share of the positive contribution mass) exceeds ``alpha``.
    """

    method: str = "loo"
    ablation: str = "delete"  # loo: delete the token, or replace it by ``neutral`` (keeps positions)
    neutral: str = "unk"  # replace: "unk", "pad", "eos", or any string that is exactly one token
    alpha: float = 0.1
    beta: int = 3
    ig_steps: int = 16
    batch_size: int | None = field(default=None, compare=False)  # rows per forward; None: memory budget

    def validated(self) -> AttributionOptions:
        if self.method not in METHODS:
            raise AnalysisInputError(f"unknown attribution method {self.method!r} (expected one of "
                                     f"{', '.join(METHODS)})")
        if self.ablation not in ABLATIONS:
            raise AnalysisInputError(f"unknown ablation {self.ablation!r} (expected one of {', '.join(ABLATIONS)})")
        if not 0 <= self.alpha < 1:
            raise AnalysisInputError(f"alpha must be in [0, 1), got {self.alpha}")
        if self.beta < 1:
            raise AnalysisInputError(f"beta must be at least 1, got {self.beta}")
        if self.ig_steps < 1:
            raise AnalysisInputError(f"integrated gradients needs at least 1 step, got {self.ig_steps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise AnalysisInputError(f"batch size must be at least 1, got {self.batch_size}")
        if self.method == "loo" and self.ablation == "replace" and not self.neutral.strip():
            raise AnalysisInputError("replacement ablation needs a neutral token")
        return replace(self, alpha=float(self.alpha), beta=int(self.beta))

    def key(self) -> dict[str, Any]:
        """The store key: only what changes the numbers (gradient methods have no ablation; only
        integrated gradients has steps)."""
        loo = self.method == "loo"
        return {
            "version": OPTIONS_VERSION,
            "method": self.method,
            "ablation": self.ablation if loo else None,
            "neutral": self.neutral if loo and self.ablation == "replace" else None,
            "alpha": float(self.alpha),
            "beta": int(self.beta),
            "ig_steps": int(self.ig_steps) if self.method == "ig" else None,
        }


def neutral_token_id(tokenizer: PreTrainedTokenizerBase, neutral: str) -> int:
    """Token id of the neutral replacement: the tokenizer's unk / pad / eos token, or a string that the
    tokenizer encodes as exactly one token."""
    if neutral in NEUTRAL_ALIASES:
        tid = getattr(tokenizer, f"{neutral}_token_id", None)
        if tid is None:
            raise AnalysisInputError(f"the tokenizer has no {neutral} token; give another neutral token")
        return int(tid)
    ids = list(tokenizer(neutral, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        raise AnalysisInputError(f"neutral token {neutral!r} is {len(ids)} tokens for this tokenizer; it must be one")
    return int(ids[0])
