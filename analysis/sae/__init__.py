"""SAE analyses of unlearning: a TopK SAE (SAELens) on the original model, expert features per forget
concept, and three signals (passive retention, active restoration, probe readout) giving a verdict per
unlearned model and sample: erased / suppressed / inconclusive.

Rooms: ``options`` (SAEOptions, RestoreOptions, the verdict's thresholds, the choices and their labels),
``train`` (the SAE, with SAELens's runner), ``fit`` (how well the SAE reconstructs a model's activations),
``features`` (expert features), ``probe`` (probe readout),
``restoration`` (steering modes and the raw signals of a model), ``verdict`` (the rule and the report),
``control`` (the positive control: the expert directions projected out at the SAE's layer),
``runner`` (restore / restore_all over a study, with the store; positive_control), ``progress`` (progress over
counted units of work), ``result``, ``figures``, ``cli``.

The public names below load their module on first use, so that ``analysis.sae.options`` (read by the CLI to
build its parser) does not import torch and SAELens.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["expert_basis", "projected_model"], "control"),
    **dict.fromkeys(["ExpertFeature", "ExpertFeatures", "find_expert_features"], "features"),
    **dict.fromkeys(["model_fit", "reconstruction_fit"], "fit"),
    **dict.fromkeys(["ALPHAS", "ERASE_PROBE_GAP", "ERASE_RESTORE_NET", "ERASE_RETENTION_GAP", "MAX_SAE_FVE_DROP",
                     "MIN_SAE_FVE", "PROBE_MARGIN",
                     "RESTORE_NET", "RESTORE_OPTION_HELP", "SAE_OPTION_HELP", "STEERING_MODE_LABELS", "STORE_KIND",
                     "VERDICTS", "VERDICT_RULES", "RestoreOptions", "SAEOptions", "SteeringMode", "Verdict"],
                    "options"),
    **dict.fromkeys(["probe_training_set", "run_probe"], "probe"),
    **dict.fromkeys(["STEERING_MODES", "model_signals", "steered_correct"], "restoration"),
    **dict.fromkeys(["ProbeResult", "RestorationReport", "SAEFit", "Signals"], "result"),
    **dict.fromkeys(["judged_models", "positive_control", "restore", "restore_all"], "runner"),
    **dict.fromkeys(["SAEHealth", "TrainedSAE", "load_sae", "train_sae"], "train"),
    **dict.fromkeys(["fit_caveat", "probe_gap", "restoration_report", "verdict_of", "verdict_reasons"], "verdict"),
}

if TYPE_CHECKING:
    from analysis.sae.control import expert_basis, projected_model
    from analysis.sae.features import ExpertFeature, ExpertFeatures, find_expert_features
    from analysis.sae.fit import model_fit, reconstruction_fit
    from analysis.sae.options import (
        ALPHAS,
        ERASE_PROBE_GAP,
        ERASE_RESTORE_NET,
        ERASE_RETENTION_GAP,
        MAX_SAE_FVE_DROP,
        MIN_SAE_FVE,
        PROBE_MARGIN,
        RESTORE_NET,
        RESTORE_OPTION_HELP,
        SAE_OPTION_HELP,
        STEERING_MODE_LABELS,
        STORE_KIND,
        VERDICT_RULES,
        VERDICTS,
        RestoreOptions,
        SAEOptions,
        SteeringMode,
        Verdict,
    )
    from analysis.sae.probe import probe_training_set, run_probe
    from analysis.sae.restoration import STEERING_MODES, model_signals, steered_correct
    from analysis.sae.result import ProbeResult, RestorationReport, SAEFit, Signals
    from analysis.sae.runner import judged_models, positive_control, restore, restore_all
    from analysis.sae.train import SAEHealth, TrainedSAE, load_sae, train_sae
    from analysis.sae.verdict import fit_caveat, probe_gap, restoration_report, verdict_of, verdict_reasons


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = ["ALPHAS", "ERASE_PROBE_GAP", "ERASE_RESTORE_NET", "ERASE_RETENTION_GAP", "MAX_SAE_FVE_DROP", "MIN_SAE_FVE",
           "PROBE_MARGIN", "RESTORE_NET", "RESTORE_OPTION_HELP", "SAE_OPTION_HELP", "STEERING_MODES",
           "STEERING_MODE_LABELS", "STORE_KIND", "VERDICTS", "VERDICT_RULES", "ExpertFeature", "ExpertFeatures",
           "ProbeResult", "RestorationReport", "RestoreOptions", "SAEFit", "SAEHealth", "SAEOptions", "Signals",
           "SteeringMode", "TrainedSAE", "Verdict", "expert_basis", "find_expert_features", "fit_caveat",
           "judged_models", "load_sae", "model_fit", "model_signals", "positive_control", "probe_gap",
           "probe_training_set", "projected_model", "reconstruction_fit",
           "restoration_report", "restore", "restore_all", "run_probe", "steered_correct", "train_sae", "verdict_of",
           "verdict_reasons"]
