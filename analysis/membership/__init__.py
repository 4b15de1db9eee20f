"""Membership inference on the forget set, the output-level baseline open-unlearning reports: a loss score and
Min-K%++ (Zhang et al. 2024) per sample, computed batched from one forward's logits; per model the AUROC of the
forget samples against held-out samples with a bootstrap interval, and per forget sample its score's percentile
among the held-out scores.

The held-out set (``MembershipOptions.heldout``) is by default each forget prompt paired with *wrong* answers of
its relation (TOFU's perturbed answers): non-members of every model's training data with the very same prompts
and answer vocabulary, so AUROC 0.5 means the model does not single out the true fact, which is what a model that
never learned it (the retrain control) does; the study's retain split (members of every model) is the
alternative. Why not retain by default: a model damaged everywhere scores forget and retain alike and would read
as "member-like" (0.5 among retain), exactly like the original.

Rooms: ``options`` (MembershipOptions, the scores, held-out sets and spans with their labels), ``mia`` (the
engine: batched Min-K%++ and loss, AUROC, percentiles, the naive reference), ``runner`` (the store, the signal),
``result`` (ScoreSummary, MembershipResult), ``figures``, ``cli``.

Registers the signal ``membership`` in analysis.signals.SIGNALS on import (per sample: the Min-K%++ percentile
among the held-out scores; per model their mean, which is the AUROC; higher = more knowledge present). Public
names load their module on first use (analysis.lazy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports
from analysis.signals import register_signal

_M = "analysis.membership."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["HELDOUTS", "HELDOUT_LABELS", "SCORES", "SCORE_LABELS", "SPANS", "STORE_KIND", "HeldOut",
                     "MembershipOptions", "MembershipScore", "Span"], _M + "options"),
    **dict.fromkeys(["MembershipScores", "auroc", "auroc_ci", "lowest_k_mean", "membership_scores",
                     "membership_scores_naive", "percentiles", "scores_from_logits", "span_mask", "token_scores"],
                    _M + "mia"),
    **dict.fromkeys(["heldout_items", "membership_cached", "membership_report", "membership_signal"],
                    _M + "runner"),
    **dict.fromkeys(["MembershipResult", "ScoreSummary"], _M + "result"),
    **dict.fromkeys(["auroc_bars", "score_histograms"], _M + "figures"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


register_signal("membership", "analysis.membership.runner:membership_signal",
                label="membership inference (Min-K%++): percentile of each forget "
                      "sample's score among perturbed non-member answers (higher = "
                      "knowledge present)")

if TYPE_CHECKING:
    from analysis.membership.figures import auroc_bars, score_histograms
    from analysis.membership.mia import (
        MembershipScores,
        auroc,
        auroc_ci,
        lowest_k_mean,
        membership_scores,
        membership_scores_naive,
        percentiles,
        scores_from_logits,
        span_mask,
        token_scores,
    )
    from analysis.membership.options import (
        HELDOUT_LABELS,
        HELDOUTS,
        SCORE_LABELS,
        SCORES,
        SPANS,
        STORE_KIND,
        HeldOut,
        MembershipOptions,
        MembershipScore,
        Span,
    )
    from analysis.membership.result import MembershipResult, ScoreSummary
    from analysis.membership.runner import (
        heldout_items,
        membership_cached,
        membership_report,
        membership_signal,
    )

__all__ = [
    "HELDOUTS", "HELDOUT_LABELS", "SCORES", "SCORE_LABELS", "SPANS", "STORE_KIND", "HeldOut", "MembershipOptions",
    "MembershipResult", "MembershipScore", "MembershipScores", "ScoreSummary", "Span", "auroc", "auroc_bars",
    "auroc_ci", "heldout_items", "lowest_k_mean", "membership_cached", "membership_report", "membership_scores",
    "membership_scores_naive", "membership_signal", "percentiles", "score_histograms", "scores_from_logits",
    "span_mask", "token_scores",
]
