"""The meta-evaluation (``erasure validate``): every signal of ``analysis.signals.SIGNALS`` scored on a zoo of
models whose knowledge is known (``analysis.zoo``: knowledge present but hidden, P; knowledge absent, N), each
signal's AUROC of P against N with a bootstrap interval over members, its robustness to 8-bit quantisation and
a short benign fine-tune (UDS-style R / Q / H), and the study's unlearning methods placed among the zoo.

Rooms: ``options`` (ValidationOptions, store kinds, the signal modules), ``auroc`` (AUROC and its interval),
``robustness`` (the variants and R / Q / H), ``signals_existing`` (the workbench's earlier signals as
meta-evaluation signals), ``runner`` (validate, resumable per (signal, model)), ``result``, ``figures``, ``cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports

_M = "analysis.validation."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["ValidationOptions", "SIGNAL_MODULES", "STORE_KIND", "READING_KIND"], _M + "options"),
    **dict.fromkeys(["auroc_ci", "AUROC"], _M + "auroc"),
    **dict.fromkeys(["quantise_tensor", "quantise_weights", "benign_finetune", "Robustness"],
                    _M + "robustness"),
    **dict.fromkeys(["MemberRecord", "SignalRecord", "ValidationResult"], _M + "result"),
    **dict.fromkeys(["validate", "stored_validation", "signal_reading", "validation_members", "load_signals"],
                    _M + "runner"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from analysis.validation.auroc import AUROC, auroc_ci
    from analysis.validation.options import READING_KIND, SIGNAL_MODULES, STORE_KIND, ValidationOptions
    from analysis.validation.result import MemberRecord, SignalRecord, ValidationResult
    from analysis.validation.robustness import (
        Robustness,
        benign_finetune,
        quantise_tensor,
        quantise_weights,
    )
    from analysis.validation.runner import (
        load_signals,
        signal_reading,
        stored_validation,
        validate,
        validation_members,
    )

# (the functions ``auroc`` and ``robustness`` share their modules' names: import them from the modules)
__all__ = ["AUROC", "READING_KIND", "SIGNAL_MODULES", "STORE_KIND", "MemberRecord", "Robustness", "SignalRecord",
           "ValidationOptions", "ValidationResult", "auroc_ci", "benign_finetune", "load_signals", "quantise_tensor",
           "quantise_weights", "signal_reading", "stored_validation", "validate", "validation_members"]
