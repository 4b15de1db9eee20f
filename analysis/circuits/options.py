"""Options of EAP-IG edge attribution (:class:`EAPOptions`) and of CUD difficulty scoring (:class:`CUDOptions`),
the defaults for one sample's circuit, the store kind, and the choices with the labels and help text that
both the CLI (`erasure circuit`, `erasure score`) and the app (Circuits, Difficulty pages) show.

The choices are ``Literal`` types here; their implementations are registries next to the code
(``analysis.circuits.eap.METRICS`` / ``BASELINES``, ``analysis.circuits.cud.DISTANCES`` / ``VECTORS``),
registered with the labels below (tests check that both list the same names). This module imports no
engine module, so options validate without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

from analysis.checks import check_float, check_int, check_seed
from analysis.errors import AnalysisInputError

MetricName = Literal["prob", "logprob", "logit_margin"]
BaselineName = Literal["zero", "mean", "corrupted"]
DistanceName = Literal["cosine", "jaccard", "hamming"]
VectorKind = Literal["binary", "weighted"]

# Metrics: higher = the model gives the answer more strongly (the formulas: analysis.circuits.eap).
METRIC_LABELS: dict[str, str] = {
    "prob": "answer probability, exp(mean answer log-prob) (CUD's)",
    "logprob": "answer log-prob (mean over the answer tokens)",
    "logit_margin": "logit margin (answer - largest other logit)",
}
BASELINE_LABELS: dict[str, str] = {
    "zero": "all-zero input embeddings",
    "mean": "the mean input embedding over retain samples",
    "corrupted": "the subject replaced by another subject of the same token length with a different answer",
}
DISTANCE_LABELS: dict[str, str] = {
    "cosine": "cosine distance, max(0, 1 - cos)",
    "jaccard": "weighted Jaccard distance, 1 - sum(min) / sum(max)",
    "hamming": "mean |vector - anchor| (normalised Hamming)",
}
VECTOR_LABELS: dict[str, str] = {
    "binary": "0/1 mask of the circuit's edges",
    "weighted": "|edge score| on the circuit's edges",
}


def choices_help(labels: dict[str, str]) -> str:
    """``"name: label; name: label"``: one line describing every choice."""
    return "; ".join(f"{name}: {label}" for name, label in labels.items())


# Help text of every option, read by the CLI (with "(default ...)" appended) and the app pages.
HELP: dict[str, str] = {
    "metric": "the metric EAP-IG attributes (higher = the model gives the answer more strongly). "
              + choices_help(METRIC_LABELS),
    "baseline": "the baseline run edges are ablated to. " + choices_help(BASELINE_LABELS),
    "steps": "integrated-gradient steps",
    "top_n": "edges in the greedy circuit",
    "distance": "distance of a circuit vector to the easy and hard anchors. " + choices_help(DISTANCE_LABELS),
    "vector": "circuit vector of a sample. " + choices_help(VECTOR_LABELS),
    "quantile": "top/bottom share of the samples per unlearning method labelled hard/easy",
    "folds": "cross-validation folds (anchors are built outside each fold)",
    "seed": "seed of the fold assignment",
}

STORE_KIND = "eap_ig"  # per-sample EAP-IG edge scores in the study store
OPTIONS_VERSION = 1  # part of the store key; bump when the stored scores of the same options change


def check_choice(family: str, value: object, choice_type: Any) -> None:
    """AnalysisInputError naming the choices of a ``Literal`` type when ``value`` is not one of them (the same
    message as analysis.registry.Registry.get)."""
    choices = get_args(choice_type)
    if value not in choices:
        raise AnalysisInputError(f"unknown {family} {value!r} (expected one of {', '.join(choices)})")


@dataclass(frozen=True)
class EAPOptions:
    """Everything that changes EAP-IG edge scores (and so the key they are stored under). Validated on
    construction. The default is CUD's setting (length-normalised probability, zero baseline, 5 steps)."""

    metric: MetricName = "prob"
    steps: int = 5
    baseline: BaselineName = "zero"
    seed: int = 0  # the corrupted baseline's choice of replacement subject

    def __post_init__(self) -> None:
        self.validated()

    def validated(self) -> EAPOptions:
        check_choice("metric", self.metric, MetricName)
        check_choice("baseline", self.baseline, BaselineName)
        check_int("steps (integrated-gradient steps)", self.steps, 1)
        check_seed("seed", self.seed)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> dict[str, Any]:
        """The store key of per-sample edge scores."""
        return {**self.to_dict(), "version": OPTIONS_VERSION}


# The defaults for one sample's circuit (`erasure circuit`, the Circuits page). EAPOptions() itself keeps CUD's
# setting (probability, zero baseline, 5 steps), which CUD scoring replicates. On the demo organism (16 forget
# samples, top-75 circuits of 479 edges) the median faithfulness was 0.000 with CUD's setting, 0.11 with
# log-prob and the zero baseline, 0.91 with the mean baseline and 0.96 with the corrupted one.
CIRCUIT_DEFAULTS = EAPOptions(metric="logprob", baseline="corrupted")
DEFAULT_TOP_N = 75


@dataclass(frozen=True)
class CUDOptions:
    """Options of CUD scoring (analysis.circuits.cud): the circuits' edge scores (``eap``), their size, the
    circuit vector, the distance to the anchors, the calibration quantile and the cross-validation."""

    distance: DistanceName = "cosine"
    top_n: int = DEFAULT_TOP_N
    eap: EAPOptions = field(default_factory=EAPOptions)
    vector: VectorKind = "binary"
    quantile: float = 0.3
    folds: int = 5
    seed: int = 0

    def validated(self) -> CUDOptions:
        check_choice("distance", self.distance, DistanceName)
        check_choice("circuit vector kind", self.vector, VectorKind)
        top_n = check_int("top_n (edges in the circuit)", self.top_n, 1)
        quantile = check_float("quantile", self.quantile, 0, 0.5, min_open=True)
        folds = check_int("folds (cross-validation folds)", self.folds, 2)
        seed = check_seed("seed", self.seed)
        return replace(self, eap=self.eap.validated(), top_n=top_n, quantile=quantile, folds=folds, seed=seed)

    def report_options(self) -> dict[str, Any]:
        """The options a CUDReport records (the edge-score options, the circuit size, vector and quantile;
        folds and seed are in its validation)."""
        return {**self.eap.to_dict(), "top_n": self.top_n, "vector": self.vector, "quantile": self.quantile}
