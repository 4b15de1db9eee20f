"""The shared shape of a *signal*: one number per (model, sample) and per model saying how much of the
forget knowledge a model still holds, oriented so that HIGHER = MORE KNOWLEDGE PRESENT, with a bootstrap
confidence interval over samples. Every signal the meta-evaluation (``analysis.validation``) scores against the
zoo (``analysis.zoo``) returns a :class:`SignalReading`; the signals register in :data:`SIGNALS`
(name -> ``fn(study, model) -> SignalReading``) from their own packages.

Confidence intervals come from ``scipy.stats.bootstrap`` (percentile method, seeded), not a hand-written
resampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.registry import Registry

if TYPE_CHECKING:
    from analysis.study import Study

CI_LEVEL = 0.95
N_BOOTSTRAP = 1000


@dataclass
class SignalReading:
    """One signal on one model. ``value``: the per-model score (higher = more knowledge present; None when
    undefined, with ``note`` saying why); ``ci``: its bootstrap interval over samples; ``per_sample``: sample
    id -> that sample's score (None where undefined); ``details``: anything the signal wants to keep."""

    signal: str
    model: str
    value: float | None
    ci: tuple[float, float] | None = None
    per_sample: dict[str, float | None] = field(default_factory=dict)
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SignalReading:
        ci = d.get("ci")
        return cls(signal=str(d["signal"]), model=str(d["model"]), value=d.get("value"),
                   ci=(float(ci[0]), float(ci[1])) if ci else None, per_sample=dict(d.get("per_sample") or {}),
                   note=str(d.get("note", "")), details=dict(d.get("details") or {}))


def bootstrap_ci(values: Sequence[float | None], statistic: Callable[..., Any] = np.mean, seed: int = 0,
                 n_resamples: int = N_BOOTSTRAP, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic`` over the defined values (None and NaN dropped); None with
    fewer than 2 values. A constant sample gives the degenerate interval (v, v)."""
    from scipy.stats import bootstrap

    xs = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    if len(xs) < 2:
        return None
    if np.all(xs == xs[0]):
        v = float(statistic(xs))
        return (v, v)
    res = bootstrap((xs,), statistic, n_resamples=n_resamples, confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=False)
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def reading_from_samples(signal: str, model: str, per_sample: Mapping[str, float | None], note: str = "",
                         details: dict[str, Any] | None = None, seed: int = 0) -> SignalReading:
    """A reading whose per-model value is the mean of the defined per-sample values, with its bootstrap CI."""
    vals = [v for v in per_sample.values() if v is not None and math.isfinite(float(v))]
    value = float(np.mean(vals)) if vals else None
    return SignalReading(signal, model, value, bootstrap_ci(vals, seed=seed), dict(per_sample),
                         note if value is not None or note else "no sample has a defined value", details or {})


SignalFn = Callable[["Study", str], SignalReading]
# Every signal the meta-evaluation scores: name -> fn(study, model). Registered by the signal's own package
# (e.g. analysis.patching registers "patching"); a function may carry a ``prepare(study, models)`` attribute
# that analysis.validation calls once before the per-model calls, to batch work over models; labels say what a high value means.
SIGNALS: Registry[SignalFn] = Registry("signal")


def register_signal(name: str, target: str, label: str) -> None:
    """Register signal ``name`` (once; re-imports are no-ops) as ``module:function``, imported on the first
    call, so that importing a signal's package (as the validation runner does to collect the signals) loads
    no engine."""
    if name in SIGNALS:
        return
    module, _, function = target.partition(":")

    def signal(study: Study, model: str) -> SignalReading:
        import importlib

        return getattr(importlib.import_module(module), function)(study, model)

    SIGNALS.add(name, signal, label=label)
