"""Prompt-token attribution and keyword-emphasis recovery (unPact; Zhang et al. 2025, "Understanding the
Dilemma of Unlearning for Large Language Models").

The contribution of prompt token x_i to the answer y is C(x_i, y) = LP(x, y) - LP(x without x_i, y), LP the
mean log-probability of the answer tokens (analysis.scoring.answer_logprob). All ablations of many prompts
are scored in batched forwards; a gradient view (input x gradient, integrated gradients on the token
embeddings) is the second way to compute it. KeyTokens follow unPact's alpha / beta rule
(analysis.attribution.core.key_tokens). Unlearned models are compared with the original (which tokens lose
their contribution), and keywords are re-emphasised (prompt-level rewrites or activation-level hooks,
analysis.attribution.emphasis) to check whether the forgotten answer comes back, beside the retrain control.
"""

from analysis.attribution.core import (
    LOOResult,
    PairScores,
    PromptIds,
    ablate,
    grad_contributions,
    key_tokens,
    loo_contributions,
    prompt_ids,
    score_pairs,
)
from analysis.attribution.emphasis import (
    EMPHASES,
    Emphasis,
    EmphasisParams,
    get_emphasis,
    register_emphasis,
    strategy_names,
)
from analysis.attribution.options import (
    ABLATIONS,
    ATTRIBUTION_KIND,
    FUNCTION_WORDS,
    KEYWORD_SOURCES,
    METHODS,
    RECOVERY_KIND,
    AttributionOptions,
    is_function_word,
    neutral_token_id,
)
from analysis.attribution.result import (
    GROUPS,
    AttributionComparison,
    RecoveryReport,
    SampleChange,
    StrategyRecovery,
    TokenAttribution,
    compare,
    strategy_recovery,
)
from analysis.attribution.runner import (
    DatasetAttribution,
    RecoveryOptions,
    attribute,
    attribute_dataset,
    attribute_pairs,
    attribute_sample,
    attribute_samples,
    compare_models,
    dataset_cached,
    emphasis_outcomes,
    keyword_mask,
    recover,
    recovery_cached,
)

__all__ = [
    "ABLATIONS", "ATTRIBUTION_KIND", "EMPHASES", "FUNCTION_WORDS", "GROUPS", "KEYWORD_SOURCES", "METHODS",
    "RECOVERY_KIND", "AttributionComparison", "AttributionOptions", "DatasetAttribution", "Emphasis",
    "EmphasisParams", "LOOResult", "PairScores", "PromptIds", "RecoveryOptions", "RecoveryReport", "SampleChange",
    "StrategyRecovery", "TokenAttribution", "ablate", "attribute", "attribute_dataset", "attribute_pairs",
    "attribute_sample", "attribute_samples", "compare", "compare_models", "dataset_cached", "emphasis_outcomes",
    "get_emphasis", "grad_contributions", "is_function_word", "key_tokens", "keyword_mask", "loo_contributions",
    "neutral_token_id", "prompt_ids", "recover", "recovery_cached", "register_emphasis", "score_pairs",
    "strategy_names", "strategy_recovery",
]
