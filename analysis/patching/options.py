"""Options of cross-model activation patching (UDS-style): which positions are patched, the smallest reference
drop at which a layer's erasure ratio is defined, and how the per-layer ratios are aggregated into a sample's
depth score; the labels / help texts that both the CLI and the app read. No torch here (the CLI reads this
module to build its parser)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from analysis.checks import check_float, check_int
from analysis.errors import AnalysisInputError

STORE_KIND = "patching"  # per-sample rows: the original's answer log-prob, unpatched and patched at each layer
OPTIONS_VERSION = 1

# Where the judged model's hidden state replaces the original's after block l (hook_resid_post of layer l).
# "all": every position (prompt and answer; the setting). "answer": only the positions whose logits
# predict an answer token (UDS's "span" patch scope, arXiv 2605.24614, with the whole answer as the span).
PatchPositions = Literal["all", "answer"]
POSITIONS: tuple[PatchPositions, ...] = get_args(PatchPositions)
POSITION_LABELS: dict[str, str] = {"all": "every position", "answer": "answer positions only (UDS span scope)"}
POSITION_HELP = ("all: the judged model's hidden state replaces the original's at every position; answer: only at "
                 "the positions predicting the answer tokens (UDS's span scope)")

# How a sample's per-layer erasure ratios become its depth score.
# "mean": the plain mean over the layers where the ratio is defined (every such layer counts the same).
# "uds": UDS's aggregation, the mean weighted by the reference (retrain) drop of each layer, so layers where the
#        retrain control loses more of the answer count more (UDS_i = sum_l d_ref,l * r_l / sum_l d_ref,l).
Aggregation = Literal["mean", "uds"]
AGGREGATIONS: tuple[Aggregation, ...] = get_args(Aggregation)
AGGREGATION_LABELS: dict[str, str] = {"mean": "mean over defined layers",
                                      "uds": "weighted by the retrain drop (UDS)"}
AGGREGATION_HELP = ("mean: the depth score is the plain mean of the per-layer erasure ratios; uds: the mean weighted "
                    "by the retrain control's drop at each layer (UDS's aggregation)")
MIN_DROP_HELP = ("a layer's erasure ratio is defined only where patching the retrain control drops the answer's "
                 "mean log-prob by more than this (nats; UDS's tau = 0.05)")
UDS_TAU = 0.05  # UDS's threshold on the reference drop (its "FT layers": drop_retrain > tau)


@dataclass(frozen=True)
class PatchOptions:
    """What changes the numbers of cross-model patching. ``positions`` changes the stored curves (the store key);
    ``min_drop`` and ``aggregation`` only change how stored curves become depth scores (not in the key).
    ``batch_size`` (rows per forward) changes only how the work is chunked."""

    positions: PatchPositions = "all"
    min_drop: float = UDS_TAU
    aggregation: Aggregation = "mean"
    batch_size: int | None = field(default=None, compare=False)  # None: analysis.scoring.default_batch_size

    def validated(self) -> PatchOptions:
        if self.positions not in POSITIONS:
            raise AnalysisInputError(f"unknown patch positions {self.positions!r} (expected one of "
                                     f"{', '.join(POSITIONS)})")
        if self.aggregation not in AGGREGATIONS:
            raise AnalysisInputError(f"unknown aggregation {self.aggregation!r} (expected one of "
                                     f"{', '.join(AGGREGATIONS)})")
        min_drop = check_float("the smallest reference drop (min_drop)", self.min_drop, 0)
        if self.batch_size is not None:
            check_int("batch size", self.batch_size, 1)
        return replace(self, min_drop=min_drop)

    def key(self) -> dict[str, Any]:
        """The store key of the per-sample curves: only what changes them."""
        return {"version": OPTIONS_VERSION, "positions": self.positions}

    def summary_key(self) -> dict[str, Any]:
        """Everything that changes a depth score (the curves' key plus the aggregation)."""
        return {**self.key(), "min_drop": float(self.min_drop), "aggregation": self.aggregation}
