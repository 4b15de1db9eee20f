"""Unlearning methods behind one registry: ``run_unlearning(model, method, forget, retain, cfg)``.

Importing the package registers every method (one module each). See :mod:`analysis.unlearning.base`
for the shared loop, the trajectory and the observed per-sample difficulty.
"""

from analysis.unlearning import (  # noqa: F401 - imported to register the methods
    grad_ascent,
    grad_diff,
    npo,
    readout_suppression,
    retrain,
    rmu,
    simnpo,
)
from analysis.unlearning.base import (
    METHODS,
    UnlearnConfig,
    UnlearnMethod,
    UnlearnResult,
    get_method,
    observed_difficulty,
    register,
    run_unlearning,
)

__all__ = ["METHODS", "UnlearnConfig", "UnlearnMethod", "UnlearnResult", "get_method", "observed_difficulty",
           "register", "run_unlearning"]
