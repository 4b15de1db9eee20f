"""The relearning attack: a few seeded, full-batch fine-tuning steps on a copy of a model, (a) on retain data
only and (b) on one half of the forget set, measured on the other half; the same attack on the study's retrain
control is the baseline, and what is reported is the share of the original's forget accuracy the attack
recovers net of that baseline. A model that only suppresses the facts gives them back; one that never held them
cannot.

Rooms: ``options`` (RelearnOptions, the variants and their labels), ``attack`` (the engine: the attack on a
copy, the folds, the recovered share), ``runner`` (the store, the retrain baseline, the signal), ``result``
(AttackRecord, VariantResult, RelearnResult), ``figures``, ``cli``.

Registers the signal ``relearn`` in analysis.signals.SIGNALS on import (the forget-half variant; higher = more
knowledge present). Public names load their module on first use (analysis.lazy), so that importing the options
or the CLI does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports
from analysis.signals import register_signal

_M = "analysis.relearn."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["MAX_STEPS", "STORE_KIND", "VARIANTS", "VARIANT_LABELS", "RelearnOptions", "RelearnVariant"],
                    _M + "options"),
    **dict.fromkeys(["AttackRun", "forget_folds", "pooled_share", "recovered_share", "relearn_attack",
                     "retain_subset"], _M + "attack"),
    **dict.fromkeys(["attack_model", "attack_plan", "relearn_cached", "relearn_report", "relearn_signal"], _M + "runner"),
    **dict.fromkeys(["AttackRecord", "RelearnResult", "VariantResult"], _M + "result"),
    **dict.fromkeys(["recovery_curves", "recovered_share_bars"], _M + "figures"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


register_signal("relearn", "analysis.relearn.runner:relearn_signal",
                label="relearning attack: share of the original's forget answers recovered by "
                      "relearning half the forget set, net of the retrain control (higher = "
                      "knowledge present)")

if TYPE_CHECKING:
    from analysis.relearn.attack import (
        AttackRun,
        forget_folds,
        pooled_share,
        recovered_share,
        relearn_attack,
        retain_subset,
    )
    from analysis.relearn.figures import recovered_share_bars, recovery_curves
    from analysis.relearn.options import (
        MAX_STEPS,
        STORE_KIND,
        VARIANT_LABELS,
        VARIANTS,
        RelearnOptions,
        RelearnVariant,
    )
    from analysis.relearn.result import AttackRecord, RelearnResult, VariantResult
    from analysis.relearn.runner import (
        attack_model,
        attack_plan,
        relearn_cached,
        relearn_report,
        relearn_signal,
    )

__all__ = [
    "MAX_STEPS", "STORE_KIND", "VARIANTS", "VARIANT_LABELS", "AttackRecord", "AttackRun", "RelearnOptions",
    "RelearnResult", "RelearnVariant", "VariantResult", "attack_model", "attack_plan", "forget_folds",
    "pooled_share", "recovered_share", "recovered_share_bars", "recovery_curves", "relearn_attack",
    "relearn_cached", "relearn_report", "relearn_signal", "retain_subset",
]
