"""The logit lens (nostalgebraist 2020) through the original model's readout: each layer's residual stream at the
positions that predict the answer, read through the ORIGINAL model's final norm and unembedding, gives the
answer's probability and rank by layer for every model, so a model that hides the answer by changing its
readout still shows it. Registers the signal "logit_lens" (the answer's highest probability over layers, higher =
knowledge present) in analysis.signals.SIGNALS.

Rooms: ``options`` (LensOptions, STORE_KIND), ``engine`` (the batched lens), ``runner`` (study-level entry
points, the store), ``result`` (LensResult), ``figures``, ``cli``. The public names load their module on first
use (analysis.lazy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports
from analysis.signals import register_signal

if TYPE_CHECKING:
    from analysis.logit_lens.engine import LensValues, lens_values, readout_logits
    from analysis.logit_lens.options import QUANTITIES, READOUTS, STORE_KIND, LensOptions
    from analysis.logit_lens.result import SIGNAL, LensResult
    from analysis.logit_lens.runner import lens_cached, lens_result, lens_results, lens_signal

_M = "analysis.logit_lens."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["LensValues", "lens_values", "readout_logits"], _M + "engine"),
    **dict.fromkeys(["QUANTITIES", "READOUTS", "STORE_KIND", "LensOptions"], _M + "options"),
    **dict.fromkeys(["SIGNAL", "LensResult"], _M + "result"),
    **dict.fromkeys(["lens_cached", "lens_result", "lens_results", "lens_signal"], _M + "runner"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


register_signal("logit_lens", "analysis.logit_lens.runner:lens_signal",
                label="logit lens through the original's readout: max answer probability")

__all__ = [
    "QUANTITIES", "READOUTS", "SIGNAL", "STORE_KIND", "LensOptions", "LensResult", "LensValues", "lens_cached",
    "lens_result", "lens_results", "lens_signal", "lens_values", "readout_logits",
]
