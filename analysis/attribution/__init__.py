"""Prompt-token attribution and keyword-emphasis recovery (unPact; Zhang et al. 2025, "Understanding the
Dilemma of Unlearning for Large Language Models").

The contribution of prompt token x_i to the answer y is C(x_i, y) = LP(x, y) - LP(x without x_i, y), LP the
mean log-probability of the answer tokens (analysis.scoring.answer_logprob). All ablations of many prompts
are scored in batched forwards; a gradient view (input x gradient, integrated gradients on the token
embeddings) is the second way to compute it. KeyTokens follow unPact's alpha / beta rule
(analysis.attribution.core.key_tokens). Unlearned models are compared with the original (which tokens lose
their contribution), and keywords are re-emphasised (prompt-level rewrites or activation-level hooks,
analysis.attribution.emphasis) to check whether the forgotten answer comes back, beside the retrain control
(analysis.attribution.recovery).

Rooms: ``options.py`` (AttributionOptions, RecoveryOptions, the registries of methods, ablations and keyword
sources, the store kinds), ``core.py`` (the engine: batched leave-one-out, gradient views, KeyTokens; registers
the methods and ablations), ``emphasis/`` (the emphasis-strategy registry, one module per level),
``runner.py`` (attribution on a study: store, resume, executor), ``recovery.py`` (keyword-emphasis recovery),
``result.py``, ``figures.py``, ``cli.py``.

The public names below load their module on first use (analysis.lazy), so that ``analysis.attribution.options``
and ``analysis.attribution.cli`` (read by the CLI to build its parser) do not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports

_M = "analysis.attribution."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["LOOResult", "MethodOutput", "PairScores", "PromptIds", "ablate", "grad_contributions",
                     "key_tokens", "loo_contributions", "prompt_ids", "score_pairs"], _M + "core"),
    **dict.fromkeys(["EMPHASES", "Emphasis", "get_emphasis", "strategy_names"], _M + "emphasis"),
    **dict.fromkeys(["ABLATIONS", "ATTRIBUTION_METHODS", "ATTRIBUTION_STORE_KIND", "FUNCTION_WORDS",
                     "KEYWORD_SOURCES", "RECOVERY_STORE_KIND", "AttributionOptions", "EmphasisParams",
                     "RecoveryOptions", "is_function_word", "neutral_token_id"], _M + "options"),
    **dict.fromkeys(["emphasis_outcomes", "keyword_mask", "outcome_key", "recover", "recovery_cached",
                     "stored_outcomes"], _M + "recovery"),
    **dict.fromkeys(["GROUPS", "AttributionComparison", "RecoveryReport", "SampleChange", "StrategyRecovery",
                     "TokenAttribution", "compare_attributions", "net_recovery", "per_sample_recovery",
                     "strategy_recovery"], _M + "result"),
    **dict.fromkeys(["DatasetAttribution", "attribute", "attribute_dataset", "attribute_pairs", "attribute_sample",
                     "attribute_samples", "attribute_stored", "attribute_typed", "compare_models",
                     "dataset_cached"], _M + "runner"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from analysis.attribution.core import (
        LOOResult,
        MethodOutput,
        PairScores,
        PromptIds,
        ablate,
        grad_contributions,
        key_tokens,
        loo_contributions,
        prompt_ids,
        score_pairs,
    )
    from analysis.attribution.emphasis import EMPHASES, Emphasis, get_emphasis, strategy_names
    from analysis.attribution.options import (
        ABLATIONS,
        ATTRIBUTION_METHODS,
        ATTRIBUTION_STORE_KIND,
        FUNCTION_WORDS,
        KEYWORD_SOURCES,
        RECOVERY_STORE_KIND,
        AttributionOptions,
        EmphasisParams,
        RecoveryOptions,
        is_function_word,
        neutral_token_id,
    )
    from analysis.attribution.recovery import (
        emphasis_outcomes,
        keyword_mask,
        outcome_key,
        recover,
        recovery_cached,
        stored_outcomes,
    )
    from analysis.attribution.result import (
        GROUPS,
        AttributionComparison,
        RecoveryReport,
        SampleChange,
        StrategyRecovery,
        TokenAttribution,
        compare_attributions,
        net_recovery,
        per_sample_recovery,
        strategy_recovery,
    )
    from analysis.attribution.runner import (
        DatasetAttribution,
        attribute,
        attribute_dataset,
        attribute_pairs,
        attribute_sample,
        attribute_samples,
        attribute_stored,
        attribute_typed,
        compare_models,
        dataset_cached,
    )

__all__ = [
    "ABLATIONS", "ATTRIBUTION_METHODS", "ATTRIBUTION_STORE_KIND", "EMPHASES", "FUNCTION_WORDS", "GROUPS",
    "KEYWORD_SOURCES", "RECOVERY_STORE_KIND", "AttributionComparison", "AttributionOptions", "DatasetAttribution",
    "Emphasis", "EmphasisParams", "LOOResult", "MethodOutput", "PairScores", "PromptIds", "RecoveryOptions",
    "RecoveryReport", "SampleChange", "StrategyRecovery", "TokenAttribution", "ablate", "attribute",
    "attribute_dataset", "attribute_pairs", "attribute_sample", "attribute_samples", "attribute_stored",
    "attribute_typed", "compare_attributions",
    "compare_models", "dataset_cached", "emphasis_outcomes", "get_emphasis", "grad_contributions",
    "is_function_word", "key_tokens", "keyword_mask", "loo_contributions", "net_recovery", "neutral_token_id",
    "outcome_key", "per_sample_recovery", "prompt_ids", "recover", "recovery_cached", "score_pairs",
    "stored_outcomes", "strategy_names", "strategy_recovery",
]
