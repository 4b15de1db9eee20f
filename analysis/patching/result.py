"""Typed, JSON-serialisable results of cross-model activation patching: per-layer per-sample drops of the judged
model and of the reference retrain control, the erasure ratios and depth scores built from them, and per-model
summaries with bootstrap confidence intervals over samples (analysis.signals.bootstrap_ci)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from analysis.signals import CI_LEVEL, N_BOOTSTRAP, SignalReading, bootstrap_ci, reading_from_samples

SIGNAL = "patching"  # the name under analysis.signals.SIGNALS
SIGNAL_LABEL = "cross-model activation patching: 1 - depth score (UDS-style; higher = knowledge present)"
Interval = tuple[float, float] | None


def _opt(x: float) -> float | None:
    """A finite float, else None (an undefined value in JSON and in the result)."""
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _rows(a: np.ndarray) -> list[list[float | None]]:
    return [[_opt(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def _array(rows: Sequence[Sequence[float | None]] | None) -> np.ndarray:
    if rows is None:
        return np.zeros((0, 0))
    return np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64)


def _ci(ci: Any) -> Interval:
    return (float(ci[0]), float(ci[1])) if ci else None


def layer_cis(values: np.ndarray, seed: int = 0) -> list[Interval]:
    """The bootstrap interval of the mean of each column of a [N, L] array: the columns without undefined
    values in ONE vectorised ``scipy.stats.bootstrap`` call (percentile method, seeded, as
    analysis.signals.bootstrap_ci; a constant column gives (v, v)), the others one by one."""
    from scipy.stats import bootstrap

    a = np.asarray(values, dtype=np.float64)
    out: list[Interval] = [None] * a.shape[1]
    full = [j for j in range(a.shape[1]) if not np.isnan(a[:, j]).any()]
    varying = [j for j in full if not np.all(a[:, j] == a[0, j])]
    for j in full:
        if j not in varying and len(a) >= 2:
            out[j] = (float(a[0, j]), float(a[0, j]))
    if varying and len(a) >= 2:
        res = bootstrap((a[:, varying],), np.mean, axis=0, n_resamples=N_BOOTSTRAP, confidence_level=CI_LEVEL,
                        method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
        for k, j in enumerate(varying):
            out[j] = (float(res.confidence_interval.low[k]), float(res.confidence_interval.high[k]))
    for j in range(a.shape[1]):
        if j not in full:
            out[j] = bootstrap_ci(a[:, j].tolist(), seed=seed)
    return out


@dataclass
class LayerSummary:
    """Per layer: the mean over samples (None where no sample has a value) and its bootstrap interval."""

    mean: list[float | None]
    ci: list[Interval]

    @classmethod
    def of(cls, values: np.ndarray, with_ci: bool = True, seed: int = 0) -> LayerSummary:
        """Column-wise mean of a [N, L] array (NaN = undefined, left out) and, ``with_ci``, its interval."""
        a = np.asarray(values, dtype=np.float64)
        means = [float(col[~np.isnan(col)].mean()) if (~np.isnan(col)).any() else None for col in a.T]
        return cls(means, layer_cis(a, seed) if with_ci else [None] * a.shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "ci": [list(c) if c else None for c in self.ci]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerSummary:
        return cls([None if v is None else float(v) for v in d["mean"]], [_ci(c) for c in d["ci"]])


@dataclass
class PatchingResult:
    """Cross-model patching of one judged model on the study's forget samples.

    ``drop[i][l]``: how much the original's mean answer log-prob falls when the judged model's hidden state after
    block l replaces its own on sample i; ``reference_drop``: the same for the reference retrain control (None
    without one); ``ratio[i][l]``: drop / reference_drop clipped to [0, 1], None where the reference drop is not
    above ``options["min_drop"]``; ``depth[i]``: the sample's depth score (1 = as deep as the reference, 0 = the
    original's knowledge intact), None where no layer is defined. ``depth_mean`` / ``depth_ci``: the per-model
    depth score and its bootstrap interval; the signal is ``1 - depth`` (higher = knowledge present)."""

    model: str
    reference: str | None
    layers: list[int]
    sample_ids: list[str]
    base: list[float]  # the original's unpatched mean answer log-prob per sample
    drop: list[list[float | None]]
    reference_drop: list[list[float | None]] | None
    ratio: list[list[float | None]] | None
    depth: list[float | None]
    depth_mean: float | None
    depth_ci: Interval
    drop_by_layer: LayerSummary
    reference_drop_by_layer: LayerSummary | None
    ratio_by_layer: LayerSummary | None
    options: dict[str, Any]
    fingerprints: dict[str, str]  # original / model / reference -> fingerprint
    note: str = ""
    hook: str = field(default_factory=lambda: _resid_template())

    @property
    def signal(self) -> float | None:
        """1 - depth score: higher = more of the forget knowledge still present."""
        return None if self.depth_mean is None else 1.0 - self.depth_mean

    @property
    def signal_ci(self) -> Interval:
        return None if self.depth_ci is None else (1.0 - self.depth_ci[1], 1.0 - self.depth_ci[0])

    def drop_array(self) -> np.ndarray:
        return _array(self.drop)

    def reference_drop_array(self) -> np.ndarray | None:
        return None if self.reference_drop is None else _array(self.reference_drop)

    def ratio_array(self) -> np.ndarray | None:
        return None if self.ratio is None else _array(self.ratio)

    def reading(self) -> SignalReading:
        """The signal reading: per sample 1 - depth (None where undefined), mean and bootstrap CI."""
        per = {sid: (None if d is None else 1.0 - d) for sid, d in zip(self.sample_ids, self.depth, strict=True)}
        return reading_from_samples(SIGNAL, self.model, per, note=self.note,
                                    details={"depth": self.depth_mean, "depth_ci": self.depth_ci,
                                             "reference": self.reference, "options": self.options})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["depth_ci"] = list(self.depth_ci) if self.depth_ci else None
        for k in ("drop_by_layer", "reference_drop_by_layer", "ratio_by_layer"):
            v = getattr(self, k)
            d[k] = None if v is None else v.to_dict()
        d["signal"], d["signal_ci"] = self.signal, list(self.signal_ci) if self.signal_ci else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PatchingResult:
        def summary(key: str) -> LayerSummary | None:
            return None if d.get(key) is None else LayerSummary.from_dict(d[key])

        return cls(model=str(d["model"]), reference=d.get("reference"), layers=[int(x) for x in d["layers"]],
                   sample_ids=[str(s) for s in d["sample_ids"]], base=[float(x) for x in d["base"]],
                   drop=d["drop"], reference_drop=d.get("reference_drop"), ratio=d.get("ratio"),
                   depth=list(d["depth"]), depth_mean=d.get("depth_mean"), depth_ci=_ci(d.get("depth_ci")),
                   drop_by_layer=LayerSummary.from_dict(d["drop_by_layer"]),
                   reference_drop_by_layer=summary("reference_drop_by_layer"), ratio_by_layer=summary("ratio_by_layer"),
                   options=dict(d.get("options") or {}), fingerprints=dict(d.get("fingerprints") or {}),
                   note=str(d.get("note", "")), hook=str(d.get("hook") or _resid_template()))


def build_result(model: str, reference: str | None, sample_ids: Sequence[str], base: np.ndarray,
                 drop: np.ndarray, reference_drop: np.ndarray | None, options: Mapping[str, Any],
                 fingerprints: Mapping[str, str], hook: str, ratios: np.ndarray | None = None, depth: np.ndarray | None = None, note: str = "") -> PatchingResult:
    """A result from the per-sample arrays (``ratios`` / ``depth`` from analysis.patching.engine, or None
    without a reference), with the per-layer and per-model summaries."""
    n_layers = drop.shape[1] if drop.ndim == 2 else 0
    depth_list = [] if depth is None else [_opt(v) for v in depth]
    defined = [v for v in depth_list if v is not None]
    return PatchingResult(
        model=model, reference=reference, layers=list(range(n_layers)), sample_ids=list(sample_ids),
        base=[float(v) for v in base], drop=_rows(drop),
        reference_drop=None if reference_drop is None else _rows(reference_drop),
        ratio=None if ratios is None else _rows(ratios),
        depth=depth_list if depth is not None else [None] * len(sample_ids),
        depth_mean=float(np.mean(defined)) if defined else None, depth_ci=bootstrap_ci(defined),
        drop_by_layer=LayerSummary.of(drop),
        reference_drop_by_layer=None if reference_drop is None else LayerSummary.of(reference_drop),
        ratio_by_layer=None if ratios is None else LayerSummary.of(ratios, with_ci=False), options=dict(options),
        fingerprints=dict(fingerprints), note=note, hook=hook)


def _resid_template() -> str:
    """``blocks.{layer}.hook_resid_post``, from the hook vocabulary (imported here: it loads TransformerLens)."""
    from analysis.hooks import kind_hook_template

    return kind_hook_template("resid")
