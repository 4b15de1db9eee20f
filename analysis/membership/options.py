"""Options of membership inference on the forget set: the scores, which held-out samples the forget samples are
compared with, which tokens are scored, Min-K%++'s k; the labels and help texts that both the CLI and the app
read; the store kind. No torch here (the CLI builds its parser from this module)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from analysis.checks import check_float, check_int, check_seed
from analysis.errors import AnalysisInputError

# The two membership scores, both oriented so that higher = more member-like.
MembershipScore = Literal["mink", "loss"]
SCORES: tuple[MembershipScore, ...] = get_args(MembershipScore)
SCORE_LABELS: dict[str, str] = {
    "mink": "Min-K%++ (Zhang et al. 2024)",
    "loss": "loss (negative mean NLL)",
}
SIGNAL_SCORE: MembershipScore = "mink"  # the score registered as the "membership" signal

# What the forget samples are compared with (the non-members, or the reference).
HeldOut = Literal["perturbed", "retain"]
HELDOUTS: tuple[HeldOut, ...] = get_args(HeldOut)
HELDOUT_LABELS: dict[str, str] = {
    "perturbed": "forget prompts with wrong answers of the same relation (never trained)",
    "retain": "the study's retain samples (trained, and kept by unlearning)",
}
HELDOUT_HELP = ("perturbed: each forget prompt paired with other answers of its relation (the non-member pairs of "
                "TOFU's truth ratio; never in any model's training data, same prompts and answer vocabulary), so "
                "AUROC 0.5 = the model does not single out the true pairs; retain: the study's retain samples "
                "(members of every model; 0.5 = the forget facts look like facts the model kept)")

# Which tokens are scored.
Span = Literal["answer", "text"]
SPANS: tuple[Span, ...] = get_args(Span)
SPAN_LABELS: dict[str, str] = {"answer": "answer tokens", "text": "prompt and answer tokens"}
SPAN_HELP = ("answer: score the answer tokens given the prompt (the fact); text: every token of prompt + answer "
             "after the first (the usual text-level attack; the subject's name then counts too)")

STORE_KIND = "membership_scores"  # per model: every forget and held-out item's two scores
OPTIONS_VERSION = 1
K_HELP = "Min-K%++'s k: the fraction of lowest-scoring tokens averaged (at least one token; default 0.2)"


@dataclass(frozen=True)
class MembershipOptions:
    """Everything that changes the numbers (and the stored scores' key), plus the bootstrap seed (the intervals
    only) and a batch size (how the work is chunked).

    ``k``: Min-K%++ averages the lowest ``max(1, floor(k n))`` of the n scored tokens' normalised log-probs;
    ``heldout``: what the forget samples are compared with (see ``HELDOUT_HELP``); ``n_perturbed``: wrong
    answers per forget prompt for ``heldout="perturbed"``; ``span``: which tokens are scored."""

    k: float = 0.2
    heldout: HeldOut = "perturbed"
    span: Span = "answer"
    n_perturbed: int = 5
    seed: int = 0
    batch_size: int | None = field(default=None, compare=False)

    def validated(self) -> MembershipOptions:
        if self.heldout not in HELDOUTS:
            raise AnalysisInputError(f"unknown held-out set {self.heldout!r} (expected one of {', '.join(HELDOUTS)})")
        if self.span not in SPANS:
            raise AnalysisInputError(f"unknown span {self.span!r} (expected one of {', '.join(SPANS)})")
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, 1)
        return replace(self, k=check_float("k (Min-K%++ fraction of tokens)", self.k, 0, 1, min_open=True),
                       n_perturbed=check_int("n_perturbed (wrong answers per forget prompt)", self.n_perturbed, 1),
                       seed=check_seed("seed", self.seed))

    def key(self) -> dict[str, Any]:
        """The stored scores' key (of validated options): the seed only draws the bootstrap intervals, which are
        recomputed from the scores, and ``n_perturbed`` matters only for the perturbed held-out set."""
        return {"version": OPTIONS_VERSION, "k": float(self.k), "heldout": self.heldout, "span": self.span,
                "n_perturbed": self.n_perturbed if self.heldout == "perturbed" else None}
