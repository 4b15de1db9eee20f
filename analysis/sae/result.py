"""Results of the SAE analyses: how well the SAE reconstructs a model's activations (``SAEFit``), a probe
readout (``ProbeResult``), the raw signals of one model (``Signals``) and a model's report judged against the
retrain control (``RestorationReport``), each with ``to_dict`` / ``from_dict`` (JSON-ready: layer and alpha
keys as strings)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from analysis.sae.options import MIN_FORGET_DROP, Verdict


@dataclass
class SAEFit:
    """How well the original's SAE reconstructs one model's own activations at the SAE's hook (the prompt
    tokens of the forget and retain samples, BOS left out; ``analysis.sae.fit``). None where undefined (no
    variance, or no activation at all)."""

    fve: float | None  # fraction of variance explained: 1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2
    nmse: float | None  # normalised MSE: sum |x - x_hat|^2 / sum |x|^2
    n_tokens: int  # activations (token positions) it was measured on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEFit:
        return cls(fve=None if d.get("fve") is None else float(d["fve"]),
                   nmse=None if d.get("nmse") is None else float(d["nmse"]), n_tokens=int(d["n_tokens"]))


@dataclass
class ProbeResult:
    layers: list[int]
    acc_by_layer: dict[int, float | None]  # accuracy on decodable forget samples
    train_acc_by_layer: dict[int, float]
    correct: dict[int, dict[str, bool]]  # layer -> forget sample id -> decoded correctly
    n_train: int
    n_eval: int
    n_skipped: int
    train_ids: list[str] = field(default_factory=list)

    def best_layer(self) -> int | None:
        vals = [(v, layer) for layer, v in self.acc_by_layer.items() if v is not None]
        return max(vals)[1] if vals else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["acc_by_layer"] = {str(k): v for k, v in self.acc_by_layer.items()}
        d["train_acc_by_layer"] = {str(k): v for k, v in self.train_acc_by_layer.items()}
        d["correct"] = {str(k): v for k, v in self.correct.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        return cls(layers=[int(x) for x in d["layers"]],
                   acc_by_layer={int(k): v for k, v in d["acc_by_layer"].items()},
                   train_acc_by_layer={int(k): v for k, v in d["train_acc_by_layer"].items()},
                   correct={int(k): dict(v) for k, v in d["correct"].items()}, n_train=int(d["n_train"]),
                   n_eval=int(d["n_eval"]), n_skipped=int(d["n_skipped"]), train_ids=list(d.get("train_ids", [])))


@dataclass
class Signals:
    """Raw signals of one model (no comparison with the retrain control)."""

    model: str
    fingerprint: str
    acc_original: float
    acc_unlearned: float
    per_alpha: dict[float, float]  # replace mode
    per_alpha_add: dict[float, float]
    correct_unlearned: dict[str, bool]
    restored: dict[float, dict[str, bool]]  # alpha -> id -> correct when steered
    feature_retention: float
    retention_by_sample: dict[str, float]
    probe: ProbeResult
    fit: SAEFit | None = None  # the SAE's reconstruction of this model's own activations

    def rate(self, acc: float) -> float | None:
        """Restoration rate (acc - acc_unlearned) / (acc_original - acc_unlearned); None when the model barely
        forgot (a drop below MIN_FORGET_DROP)."""
        den = self.acc_original - self.acc_unlearned
        return None if den < MIN_FORGET_DROP else (acc - self.acc_unlearned) / den

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("per_alpha", "per_alpha_add", "restored"):
            d[name] = {repr(float(a)): v for a, v in getattr(self, name).items()}
        d["probe"] = self.probe.to_dict()
        d["fit"] = None if self.fit is None else self.fit.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signals:
        alpha_keyed = {name: {float(a): v for a, v in d[name].items()}
                       for name in ("per_alpha", "per_alpha_add", "restored")}
        fit = None if d.get("fit") is None else SAEFit.from_dict(d["fit"])
        return cls(**{**d, **alpha_keyed, "probe": ProbeResult.from_dict(d["probe"]), "fit": fit})


@dataclass
class RestorationReport:
    """One model judged against the retrain control: the verdict, the signals it was read from and the
    clauses that decided it (``reasons``). Layers and alphas are string keys (as stored)."""

    model: str
    verdict: Verdict
    restoration_rate: float | None  # max over alpha (replace mode)
    restoration_rate_net: float | None  # max over alpha of (rate - retrain control's injection rate)
    feature_retention: float
    probe_accuracy: float | None  # best layer
    per_alpha: dict[str, float]
    per_alpha_add: dict[str, float]
    rate_by_alpha: dict[str, float | None]
    injection_by_alpha: dict[str, float | None]
    acc_original: float
    acc_unlearned: float
    retrain: dict[str, Any]  # the control's numbers the verdict compared against
    probe_by_layer: dict[str, float | None]
    probe_train_by_layer: dict[str, float]
    per_sample: list[dict[str, Any]]
    evidence: list[str]
    fingerprints: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    # max over layers of (this model's probe accuracy - the retrain control's at that layer); None: nothing
    # decodable. The retrain control's accuracy counts as 0 where it has none.
    probe_gap: float | None = None
    probe_gap_layer: int | None = None  # the layer of probe_gap
    reasons: list[str] = field(default_factory=list)  # the clauses that decided the verdict, in words (and the
    # caveats below)
    # the SAE's reconstruction of this model's own activations and of the original's (the reference), as
    # SAEFit dicts (the retrain control's is in ``retrain["sae_fit"]``); None in reports stored before them
    sae_fit: dict[str, Any] | None = None
    sae_fit_original: dict[str, Any] | None = None
    caveats: list[str] = field(default_factory=list)  # why the SAE's signals may not be read at face value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RestorationReport:
        """From ``to_dict`` output. A report stored before ``probe_gap`` / ``reasons`` existed gets them
        computed from its own numbers (the same rule, the same result)."""
        from analysis.sae.verdict import probe_gap, verdict_reasons

        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "probe_gap" not in d or "probe_gap_layer" not in d:
            d["probe_gap"], d["probe_gap_layer"] = probe_gap(
                {int(k): v for k, v in d["probe_by_layer"].items()},
                {int(k): v for k, v in d["retrain"].get("probe_by_layer", {}).items()})
        if "reasons" not in d:
            d["reasons"] = verdict_reasons(d["probe_gap"], d["restoration_rate_net"], d["feature_retention"],
                                           float(d["retrain"]["feature_retention"])) + list(d.get("caveats", []))
        return cls(**d)
