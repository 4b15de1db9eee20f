"""Cross-model activation patching (UDS-style; Lee, Kim & Jo 2026, arXiv 2605.24614): patch a judged model's
hidden state after block l into the original on forget prompt+answer pairs and measure the drop of the answer's
log-prob; the same patch from the reference retrain control normalises it per layer (erasure ratio, clipped to
[0, 1]), and a sample's depth score aggregates the ratios over the layers where the retrain control drops the
answer (1 = as deep as the retrain control, 0 = knowledge intact). Registers the signal "patching"
(1 - depth, higher = knowledge present) in analysis.signals.SIGNALS.

Where this departs from UDS's reference setting (its ``compute_uds.py``): the log-prob is the mean over every
answer token (the study's answers are the entity; UDS scores an entity span inside a longer answer); hidden
states are patched at every position by default (``positions="answer"`` is UDS's span scope); the default
aggregation is the plain mean over defined layers (``aggregation="uds"`` is UDS's drop-weighted mean); the
threshold on the retrain drop is UDS's tau = 0.05 nats.

Rooms: ``options`` (PatchOptions, STORE_KIND), ``engine`` (the batched patch, erasure ratios, depth scores),
``runner`` (study-level entry points, the store), ``result`` (PatchingResult), ``figures``, ``cli``.
The public names load their module on first use (analysis.lazy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports
from analysis.signals import register_signal

if TYPE_CHECKING:
    from analysis.patching.engine import (
        PatchCurves,
        answer_positions,
        depth_scores,
        erasure_ratios,
        patch_logprobs,
    )
    from analysis.patching.options import (
        AGGREGATIONS,
        POSITIONS,
        STORE_KIND,
        PatchOptions,
    )
    from analysis.patching.result import SIGNAL, LayerSummary, PatchingResult
    from analysis.patching.runner import (
        curves_cached,
        patching_cached,
        patching_result,
        patching_results,
        patching_signal,
        source_curves,
    )

_M = "analysis.patching."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["PatchCurves", "answer_positions", "depth_scores", "erasure_ratios", "patch_logprobs"],
                    _M + "engine"),
    **dict.fromkeys(["AGGREGATIONS", "POSITIONS", "STORE_KIND", "PatchOptions"], _M + "options"),
    **dict.fromkeys(["SIGNAL", "LayerSummary", "PatchingResult"], _M + "result"),
    **dict.fromkeys(["curves_cached", "patching_cached", "patching_result", "patching_results", "patching_signal",
                     "source_curves"], _M + "runner"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


register_signal("patching", "analysis.patching.runner:patching_signal",
                label="activation patching (UDS-style): 1 - depth score")

__all__ = [
    "AGGREGATIONS", "POSITIONS", "SIGNAL", "STORE_KIND", "LayerSummary", "PatchCurves", "PatchOptions",
    "PatchingResult", "answer_positions", "curves_cached", "depth_scores", "erasure_ratios", "patch_logprobs",
    "patching_cached", "patching_result", "patching_results", "patching_signal", "source_curves",
]
