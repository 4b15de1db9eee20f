"""The result of `erasure unlearn`: what its ``unlearn_run.json`` records, as a typed object."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class UnlearnRun:
    """One finished run. ``before`` / ``after``: per split (``forget``, ``retain``) the mean length-normalised
    answer log-prob, the top-1 accuracy and the sample count, of the source model and of the saved one;
    ``verification``: the saved checkpoint's logits against the trained model's (``max_abs_logit_diff``,
    ``tolerance``); ``resumed_from``: the steps a saved training state had done (0 = ran from the start);
    ``reused``: the run was already complete in ``out`` and nothing was computed."""

    out: str
    method: str
    role: str
    preset: str
    model: str
    steps: int
    config: dict[str, Any]
    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    verification: dict[str, Any]
    seconds: float
    resumed_from: int = 0
    reused: bool = False
    base: str | None = None
    config_changes: dict[str, Any] = field(default_factory=dict)
    frozen_parameters: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    key: dict[str, Any] = field(default_factory=dict)

    def change(self, split: str, metric: str = "logprob") -> float:
        """``after - before`` of ``metric`` on ``split``."""
        return float(self.after[split][metric]) - float(self.before[split][metric])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], reused: bool = False, out: str | None = None) -> UnlearnRun:
        """From a run record (``unlearn_run.json``); ``out`` defaults to the record's own."""
        return cls(out=str(out or d.get("out", "")), method=str(d["method"]), role=str(d["role"]),
                   preset=str(d["preset"]), model=str(d["model"]), steps=int(d["steps"]), config=dict(d["config"]),
                   before=dict(d["before"]), after=dict(d["after"]), verification=dict(d["verification"]),
                   seconds=float(d["seconds"]), resumed_from=int(d.get("resumed_from", 0)),
                   reused=reused or bool(d.get("reused", False)), base=d.get("base"),
                   config_changes=dict(d.get("config_changes") or {}),
                   frozen_parameters=list(d.get("frozen_parameters") or []), files=list(d.get("files") or []),
                   key=dict(d.get("key") or {}))
