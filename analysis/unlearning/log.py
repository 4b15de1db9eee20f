"""The record of an unlearning run, saved beside the model it produced (``unlearning.json``), so a model
directory says how it was made and the study can show per-sample observed difficulty."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from analysis.study import Study
    from analysis.unlearning.base import UnlearnResult

LOG_FILE = "unlearning.json"


def write_unlearning_log(model_dir: str | os.PathLike[str], result: UnlearnResult) -> Path:
    """Write ``result`` as ``model_dir/unlearning.json`` (atomically: temp file + rename)."""
    traj = np.asarray(result.trajectory, dtype=float)
    record: dict[str, Any] = {
        "method": result.method, "config": result.config.to_dict(), "forget_ids": result.forget_ids,
        "seconds": result.seconds, "forget_accuracy": result.forget_accuracy,
        "difficulty": {k: np.asarray(v, dtype=float).tolist() for k, v in result.difficulty.items()},
        "trajectory_mean": traj.mean(axis=1).tolist(), "trajectory": traj.tolist(),
        "losses": [float(x) for x in result.losses],
    }
    out = Path(model_dir) / LOG_FILE
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".unlearning.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, out)
    return out


def read_unlearning_log(study: Study, name: str) -> dict[str, Any] | None:
    """The record of how model ``name`` of the study was unlearned; None for models without one."""
    return study.read_model_json(name, LOG_FILE)
