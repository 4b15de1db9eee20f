"""Typed, JSON-serialisable results of causal tracing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from analysis.tracing.options import HOOKS

# Token roles of ROME's summary figure (Meng et al. 2022, Fig. 2), over prompt positions. Tokens before the
# subject (e.g. BOS) belong to no role.
TOKEN_ROLES: tuple[str, ...] = ("first subject token", "middle subject tokens", "last subject token", "further tokens",
                          "last token")


def role_positions(subject_range: tuple[int, int], prompt_len: int) -> dict[str, list[int]]:
    """Prompt positions of each role. "further tokens" are those after the subject, before the last token.
    A position can hold two roles (a subject that ends the prompt is also the last token)."""
    s0, s1 = subject_range
    return {
        "first subject token": [s0],
        "middle subject tokens": list(range(s0 + 1, s1 - 1)),
        "last subject token": [s1 - 1],
        "further tokens": list(range(s1, prompt_len - 1)),
        "last token": [prompt_len - 1],
    }


@dataclass
class TraceResult:
    """One sample traced on one model. ``scores[kind][layer][token]`` is the metric with that cell restored
    in the corrupted run; ``clean`` / ``corrupted`` are the metric on the clean and the corrupted runs.
    The indirect effect of a cell is ``scores - corrupted``."""

    tokens: list[str]  # prompt tokens (BOS included)
    subject_range: tuple[int, int]  # [start, end) positions in ``tokens``
    layers: list[int]
    clean: float
    corrupted: float
    scores: dict[str, list[list[float]]]
    options: dict[str, Any]  # the store key plus what the corruption did (noise std, replacement)
    model: str  # fingerprint of the model
    sample_id: str = ""
    answer: str = ""
    hooks: dict[str, str] = field(default_factory=lambda: {k: v for k, v in HOOKS.items()})

    @property
    def kinds(self) -> list[str]:
        return list(self.scores)

    def array(self, kind: str) -> np.ndarray:
        return np.asarray(self.scores[kind], dtype=np.float64)

    def indirect_effect(self, kind: str) -> np.ndarray:
        return self.array(kind) - self.corrupted

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["subject_range"] = list(self.subject_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceResult:
        return cls(tokens=list(d["tokens"]), subject_range=(int(d["subject_range"][0]), int(d["subject_range"][1])),
                   layers=[int(x) for x in d["layers"]], clean=float(d["clean"]), corrupted=float(d["corrupted"]),
                   scores={k: [[float(v) for v in row] for row in rows] for k, rows in d["scores"].items()},
                   options=dict(d.get("options", {})), model=str(d.get("model", "")),
                   sample_id=str(d.get("sample_id", "")), answer=str(d.get("answer", "")),
                   hooks=dict(d.get("hooks") or HOOKS))

    def subset(self, kinds: Sequence[str]) -> TraceResult:
        d = self.to_dict()
        d["scores"] = {k: v for k, v in d["scores"].items() if k in kinds}
        return TraceResult.from_dict(d)


def trace_difference(after: TraceResult, before: TraceResult, effect: bool = False) -> TraceResult:
    """after - before, cell by cell (e.g. unlearned - original), on the kinds both have. ``effect``: subtract
    the indirect effects (score - corrupted) instead of the scores, so a shift of the whole map (the answer
    is less likely everywhere) does not hide where the causal structure changed."""
    if after.tokens != before.tokens or after.layers != before.layers:
        raise ValueError("traces of different prompts or models of different depth cannot be subtracted")
    kinds = [k for k in after.scores if k in before.scores]
    if effect:
        return TraceResult(tokens=after.tokens, subject_range=after.subject_range, layers=after.layers,
                           clean=(after.clean - after.corrupted) - (before.clean - before.corrupted), corrupted=0.0,
                           scores={k: (after.indirect_effect(k) - before.indirect_effect(k)).tolist() for k in kinds},
                           options={**after.options, "difference": [after.model, before.model], "effect": True},
                           model=f"{after.model}-{before.model}", sample_id=after.sample_id, answer=after.answer,
                           hooks=after.hooks)
    return TraceResult(tokens=after.tokens, subject_range=after.subject_range, layers=after.layers,
                       clean=after.clean - before.clean, corrupted=after.corrupted - before.corrupted,
                       scores={k: (after.array(k) - before.array(k)).tolist() for k in kinds},
                       options={**after.options, "difference": [after.model, before.model]},
                       model=f"{after.model}-{before.model}", sample_id=after.sample_id, answer=after.answer,
                       hooks=after.hooks)


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass
class AIEResult:
    """Average indirect effect (patched - corrupted) over samples, per token role and layer, as in ROME's
    summary figure. ``aie[kind][role][layer]`` is None for a role no sample has (e.g. middle subject tokens
    of one- or two-token subjects). ``traces`` keeps the per-sample traces that were averaged (by sample id),
    so a reader of the average never traces a sample again."""

    roles: list[str]
    layers: list[int]
    aie: dict[str, list[list[float | None]]]
    n_samples: int
    counts: dict[str, int]  # samples contributing to each role
    clean: float  # mean clean metric
    corrupted: float  # mean corrupted metric
    options: dict[str, Any]
    model: str
    skipped: dict[str, str] = field(default_factory=dict)  # sample id -> why it was not traced
    traces: dict[str, TraceResult] = field(default_factory=dict)  # sample id -> the trace averaged here

    def array(self, kind: str) -> np.ndarray:
        return np.array([[np.nan if v is None else v for v in row] for row in self.aie[kind]], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["traces"] = {sid: t.to_dict() for sid, t in self.traces.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AIEResult:
        return cls(roles=list(d["roles"]), layers=[int(x) for x in d["layers"]],
                   aie={k: [[None if v is None else float(v) for v in row] for row in rows]
                        for k, rows in d["aie"].items()},
                   n_samples=int(d["n_samples"]), counts={k: int(v) for k, v in d["counts"].items()},
                   clean=float(d["clean"]), corrupted=float(d["corrupted"]), options=dict(d.get("options", {})),
                   model=str(d.get("model", "")), skipped=dict(d.get("skipped", {})),
                   traces={str(sid): TraceResult.from_dict(t) for sid, t in (d.get("traces") or {}).items()})


def average_indirect_effect(results: Sequence[TraceResult], options: dict[str, Any] | None = None,
                            model: str = "", skipped: dict[str, str] | None = None,
                            keep_traces: bool = True) -> AIEResult:
    """Per sample: mean indirect effect over the role's positions; then the mean over samples that have the role.
    ``keep_traces``: the result keeps ``results`` by sample id (``AIEResult.traces``; the ids must differ)."""
    if not results:
        raise ValueError("no traces to average")
    if keep_traces and len({r.sample_id for r in results}) != len(results):
        raise ValueError("traces to keep need distinct sample ids (or pass keep_traces=False)")
    layers = results[0].layers
    kinds = [k for k in results[0].scores if all(k in r.scores for r in results)]
    sums = {k: np.zeros((len(TOKEN_ROLES), len(layers))) for k in kinds}
    counts = np.zeros(len(TOKEN_ROLES), dtype=np.int64)
    for r in results:
        if r.layers != layers:
            raise ValueError("traces from models of different depth cannot be averaged")
        pos = role_positions(r.subject_range, len(r.tokens))
        for i, role in enumerate(TOKEN_ROLES):
            if not pos[role]:
                continue
            counts[i] += 1
            for k in kinds:
                sums[k][i] += r.indirect_effect(k)[:, pos[role]].mean(axis=1)
    aie: dict[str, list[list[float | None]]] = {}
    for k in kinds:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums[k] / counts[:, None]
        mean[counts == 0] = np.nan
        aie[k] = [[_none_if_nan(v) for v in row] for row in mean]
    return AIEResult(roles=list(TOKEN_ROLES), layers=list(layers), aie=aie, n_samples=len(results),
                     counts={role: int(c) for role, c in zip(TOKEN_ROLES, counts, strict=True)},
                     clean=float(np.mean([r.clean for r in results])),
                     corrupted=float(np.mean([r.corrupted for r in results])), options=dict(options or {}),
                     model=model, skipped=dict(skipped or {}),
                     traces={r.sample_id: r for r in results} if keep_traces else {})
