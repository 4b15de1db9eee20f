"""Typed, JSON-serialisable results of the logit lens: per-layer per-sample answer probabilities and ranks of one
model read through a readout, the per-layer means with bootstrap intervals, and the per-model signal (the
answer's highest probability over layers) with its bootstrap interval over samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from analysis.logit_lens.options import QUANTITIES
from analysis.patching.result import Interval, LayerSummary
from analysis.signals import SignalReading, bootstrap_ci, reading_from_samples

SIGNAL = "logit_lens"  # the name under analysis.signals.SIGNALS
SIGNAL_QUANTITY = "mean_prob"  # the signal: max over layers of the answer tokens' mean probability


@dataclass
class LensResult:
    """The logit lens on one model over the study's forget samples. ``values[q][i][l]`` for each quantity q of
    analysis.logit_lens.options.QUANTITIES (``first_prob``, ``first_rank``, ``mean_prob``, ``mean_rank``): sample
    i at layer l (the residual stream after block l) through ``readout``'s final norm and unembedding.
    ``by_layer[q]``: per-layer means with bootstrap intervals; ``peak[i]``: the sample's signal, the highest
    ``mean_prob`` over layers; ``value`` / ``ci``: its mean over samples and bootstrap interval (higher =
    knowledge present)."""

    model: str
    readout: str  # the model whose ln_final + unembed read the residual stream
    layers: list[int]
    sample_ids: list[str]
    values: dict[str, list[list[float]]]
    by_layer: dict[str, LayerSummary]
    peak: list[float]
    peak_layer: list[int]
    value: float | None
    ci: Interval
    options: dict[str, Any]
    fingerprints: dict[str, str]  # model / readout -> fingerprint
    hook: str = field(default_factory=lambda: _resid_template())

    def array(self, quantity: str) -> np.ndarray:
        return np.asarray(self.values[quantity], dtype=np.float64)

    def reading(self) -> SignalReading:
        per = dict(zip(self.sample_ids, self.peak, strict=True))
        return reading_from_samples(SIGNAL, self.model, per,
                                    details={"readout": self.readout, "options": self.options,
                                             "peak_layer": dict(zip(self.sample_ids, self.peak_layer, strict=True))})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["by_layer"] = {k: v.to_dict() for k, v in self.by_layer.items()}
        d["ci"] = list(self.ci) if self.ci else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LensResult:
        ci = d.get("ci")
        return cls(model=str(d["model"]), readout=str(d["readout"]), layers=[int(x) for x in d["layers"]],
                   sample_ids=[str(s) for s in d["sample_ids"]],
                   values={k: [[float(x) for x in row] for row in v] for k, v in d["values"].items()},
                   by_layer={k: LayerSummary.from_dict(v) for k, v in d["by_layer"].items()},
                   peak=[float(x) for x in d["peak"]], peak_layer=[int(x) for x in d["peak_layer"]],
                   value=d.get("value"), ci=(float(ci[0]), float(ci[1])) if ci else None,
                   options=dict(d.get("options") or {}), fingerprints=dict(d.get("fingerprints") or {}),
                   hook=str(d.get("hook") or _resid_template()))


def build_lens_result(model: str, readout: str, sample_ids: Sequence[str], values: Mapping[str, np.ndarray],
                      options: Mapping[str, Any], fingerprints: Mapping[str, str], hook: str) -> LensResult:
    """A result from the [N, L] arrays of every quantity, with the per-layer and per-model summaries."""
    arrays = {q: np.asarray(values[q], dtype=np.float64) for q in QUANTITIES}
    sig = arrays[SIGNAL_QUANTITY]
    peak = sig.max(axis=1)
    return LensResult(model=model, readout=readout, layers=list(range(sig.shape[1])), sample_ids=list(sample_ids),
                      values={q: a.tolist() for q, a in arrays.items()},
                      by_layer={q: LayerSummary.of(a) for q, a in arrays.items()},
                      peak=[float(v) for v in peak], peak_layer=[int(v) for v in sig.argmax(axis=1)],
                      value=float(peak.mean()) if len(peak) else None, ci=bootstrap_ci(peak.tolist()),
                      options=dict(options), fingerprints=dict(fingerprints), hook=hook)


def _resid_template() -> str:
    """``blocks.{layer}.hook_resid_post``, from the hook vocabulary (imported here: it loads TransformerLens)."""
    from analysis.hooks import kind_hook_template

    return kind_hook_template("resid")
