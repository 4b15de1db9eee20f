"""Options of a prompt-token attribution (unPact) and of keyword-emphasis recovery, the registries of their
choices (attribution methods, ablations, keyword sources) that both the CLI and the app read, the store kinds,
the function-word list, and how a neutral replacement token is resolved.

The method and ablation registries are declared here and filled by the engine (analysis.attribution.core
registers each member beside its code); emphasis strategies have their own registry
(analysis.attribution.emphasis.EMPHASES). This module imports neither torch nor transformers (the CLI builds its
parser from it): the choices the CLI offers are the ``Literal`` types and help dicts below, and
tests/test_hardening_cli_app.py checks that they match the registries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

from analysis.checks import check_float, check_int
from analysis.errors import AnalysisInputError
from analysis.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from analysis.attribution.core import MethodOutput, PromptIds
    from analysis.attribution.emphasis import Emphasis
    from analysis.models.handle import ModelHandle

    # An attribution method: the contributions of every attributable token of every prompt, batched.
    AttributionFn = Callable[[ModelHandle, Sequence[PromptIds], "AttributionOptions"], list[MethodOutput]]

# An ablation of leave-one-out: (prompt ids, position, neutral token id or None) -> the ablated prompt ids.
AblationFn = Callable[[list[int], int, int | None], list[int]]

_ENGINE = "analysis.attribution.core"  # registers the methods and ablations (imported on the first lookup)
AttributionMethod = Literal["loo", "grad", "ig"]
Ablation = Literal["delete", "replace"]
KeywordSource = Literal["original", "self"]

ATTRIBUTION_METHODS: Registry[AttributionFn] = Registry("attribution method", members_from=_ENGINE)
ATTRIBUTION_METHOD_HELP: dict[str, str] = {
    "loo": "leave-one-out: LP(x, y) - LP(x without x_i, y)",
    "grad": "input x gradient on the token embeddings (hook_embed)",
    "ig": "integrated gradients on the token embeddings (zero baseline)",
}
ABLATIONS: Registry[AblationFn] = Registry("ablation", members_from=_ENGINE)
ABLATION_LABELS: dict[str, str] = {
    "delete": "delete the token (x without x_i)",
    "replace": "replace the token by the neutral token (positions kept)",
}
NEUTRAL_ALIASES: tuple[str, ...] = ("unk", "pad", "eos")

# Whose attribution names the keywords a recovery emphasises, given the judged model's name.
KEYWORD_SOURCES: Registry[Callable[[str], str]] = Registry("keyword source")
KEYWORD_SOURCES.add("original", lambda model: "original", label="original model")
KEYWORD_SOURCES.add("self", lambda model: model, label="each model itself")
# Emphasis strategies (members: analysis.attribution.emphasis.EMPHASES, which imports torch), prompt-level first;
# the baseline "none" (the plain prompt) is not a choice. A test checks these against the registry.
EmphasisStrategy = Literal["repeat", "prefix", "attn_scores", "attn_pattern", "embed_scale"]
EMPHASIS_STRATEGY_HELP: dict[str, str] = {
    "repeat": "repeat each run of keywords in place (prompt)",
    "prefix": "name the keywords before the prompt (prompt)",
    "attn_scores": "add log(factor) to attention scores on keyword keys (activation)",
    "attn_pattern": "scale attention weights on keyword keys and renormalise (activation)",
    "embed_scale": "scale the keywords' token embeddings (activation)",
}
KEYWORD_SOURCE_HELP = ("whose KeyTokens to emphasise: the original model's (the keywords it used before "
                       "unlearning, the same for every model compared) or each model's own")

ATTRIBUTION_STORE_KIND = "attribution"  # per-sample TokenAttribution rows in the study store
RECOVERY_STORE_KIND = "recovery"  # per-sample, per-strategy emphasis outcomes in the study store
OPTIONS_VERSION = 1

# Function words: contributions of these are reported as their own group (before vs after unlearning).
# Compared lower-cased, with surrounding whitespace and BPE space markers stripped.
FUNCTION_WORDS: frozenset[str] = frozenset({
    "the", "of", "is", "a", "an", "in", "by", "at", "was", "to", "for", "on", "as", "and", "or", "with", "from",
    "that", "this", "it", "its", "has", "had", "have", "be", "been", "are", "were", "who", "which", "what",
    "where", "when", "his", "her", "their", "he", "she", "they", "does", "did", "do", "not", "but", "than",
    ",", ".", ":", ";", "'s", "s", "-",
})


def attribution_method_help() -> str:
    return "; ".join(f"{n}: {ATTRIBUTION_METHOD_HELP[n]}" for n in get_args(AttributionMethod))


def ablation_help() -> str:
    choices = "; ".join(f"{n}: {ABLATION_LABELS[n]}" for n in get_args(Ablation))
    return f"leave-one-out only: {choices}; BOS is never ablated"


def strategy_help() -> str:
    """``name: label (level)`` of every emphasis strategy (what analysis.attribution.emphasis.emphasis_help says,
    without importing torch), for the CLI's help."""
    return "; ".join(f"{n}: {EMPHASIS_STRATEGY_HELP[n]}" for n in get_args(EmphasisStrategy))


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

    method: AttributionMethod = "loo"  # a name in ATTRIBUTION_METHODS
    ablation: Ablation = "delete"  # loo: delete the token, or replace it by ``neutral`` (keeps positions)
    neutral: str = "unk"  # replace: "unk", "pad", "eos", or any string that is exactly one token
    alpha: float = 0.1
    beta: int = 3
    ig_steps: int = 16
    batch_size: int | None = field(default=None, compare=False)  # rows per forward; None: memory budget

    @property
    def uses_neutral(self) -> bool:
        """Leave-one-out with replacement: the ablated token is replaced by the neutral token."""
        return self.method == "loo" and self.ablation == "replace"

    def validated(self) -> AttributionOptions:
        ATTRIBUTION_METHODS.check(self.method)
        ABLATIONS.check(self.ablation)
        alpha = check_float("alpha (KeyTokens' share of the positive contribution)", self.alpha, 0, 1,
                            max_open=True)
        beta = check_int("beta (KeyTokens)", self.beta, 1)
        ig_steps = check_int("ig_steps (integrated-gradient steps)", self.ig_steps, 1)
        if self.batch_size is not None:
            check_int("batch size", self.batch_size, 1)
        if self.uses_neutral and not self.neutral.strip():
            raise AnalysisInputError("replacement ablation needs a neutral token")
        return replace(self, alpha=alpha, beta=beta, ig_steps=ig_steps)

    def key(self) -> dict[str, Any]:
        """The store key: only what changes the numbers (gradient methods have no ablation; only
        integrated gradients has steps)."""
        loo = self.method == "loo"
        return {
            "version": OPTIONS_VERSION,
            "method": self.method,
            "ablation": self.ablation if loo else None,
            "neutral": self.neutral if self.uses_neutral else None,
            "alpha": float(self.alpha),
            "beta": int(self.beta),
            "ig_steps": int(self.ig_steps) if self.method == "ig" else None,
        }


@dataclass(frozen=True)
class EmphasisParams:
    """Parameters shared by the emphasis strategies (analysis.attribution.emphasis); each strategy uses (and puts
    in its store key) only its own."""

    factor: float = 3.0  # activation level: attention / embedding scale at keyword positions
    layers: tuple[int, ...] | None = None  # activation level (attention): None = every layer
    copies: int = 1  # prompt level: extra copies of the keywords
    separator: str | None = None  # prefix: None = the first of . , : ; that is one known token; "" = none


def check_params(params: EmphasisParams) -> EmphasisParams:
    """The emphasis parameters checked without a model (each strategy checks the layers' range against the
    model it runs on): a finite factor > 0, at least one copy, layers as whole numbers >= 0."""
    check_float("factor (emphasis factor)", params.factor, 0, min_open=True)
    check_int("copies (extra keyword copies)", params.copies, 1)
    if params.layers is not None:
        if not params.layers:
            raise AnalysisInputError("choose at least one layer to emphasise (or every layer)")
        for layer in params.layers:
            check_int("layer", layer, 0)
    return params


@dataclass(frozen=True)
class RecoveryOptions:
    """Options of keyword-emphasis recovery. ``keywords_from`` (a name in KEYWORD_SOURCES): whose attribution
    names the keywords to emphasise: "original" (default; the keywords the model used before unlearning, the
    same for every model compared) or "self" (each model's own KeyTokens)."""

    strategies: tuple[str, ...] | None = None  # None: every registered strategy
    params: EmphasisParams = field(default_factory=EmphasisParams)
    keywords_from: KeywordSource = "original"
    attribution: AttributionOptions = field(default_factory=AttributionOptions)
    split: str = "forget"

    def validated(self) -> RecoveryOptions:
        from analysis.attribution.emphasis import get_emphasis, strategy_names

        names = list(dict.fromkeys(self.strategies)) if self.strategies is not None else strategy_names()
        if not names:
            raise AnalysisInputError("choose at least one emphasis strategy")
        check_params(self.params)
        for n in names:
            get_emphasis(n, self.params)
        KEYWORD_SOURCES.check(self.keywords_from)
        return RecoveryOptions(strategies=tuple(names), params=self.params, keywords_from=self.keywords_from,
                               attribution=self.attribution.validated(), split=self.split)

    def emphases(self) -> list[Emphasis]:
        from analysis.attribution.emphasis import get_emphasis

        return [get_emphasis(n, self.params) for n in (self.strategies or ())]

    def keyword_source(self, model: str) -> str:
        """The model whose attribution names the keywords emphasised on ``model``."""
        return KEYWORD_SOURCES.get(self.keywords_from)(model)

    def key(self) -> dict[str, Any]:
        return {"version": OPTIONS_VERSION, "strategies": [e.key() for e in self.emphases()],
                "keywords_from": self.keywords_from, "attribution": self.attribution.key(), "split": self.split}


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
