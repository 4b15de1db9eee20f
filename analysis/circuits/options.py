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
IGPoints = Literal["midpoint", "endpoint"]
IGOver = Literal["inputs", "activations"]
CUDSetting = Literal["ours", "reference"]
LabelKind = Literal["auc_after", "auc", "final_loss"]
AnchorKind = Literal["mean", "top_n"]

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


IG_POINTS_LABELS: dict[str, str] = {
    "midpoint": "alpha_k = (k + 1/2) / steps, k = 0..steps-1 (the midpoint rule; ours)",
    "endpoint": "alpha_k = k / steps, k = 1..steps (the EAP-IG and CUD reference code's)",
}
IG_OVER_LABELS: dict[str, str] = {
    "inputs": "interpolate the input embeddings, the model runs normally (EAP-IG over inputs; ours)",
    "activations": "interpolate each upstream node's output on its own, one node at a time (EAP-IG over "
                   "activations, the CUD reference code's; costs one IG run per upstream node)",
}
SETTING_LABELS: dict[str, str] = {
    "ours": "ours: IG over the input embeddings at midpoints, anchors = the mean circuit vector of the easy "
            "(hard) samples, labels from auc_after",
    "reference": "the CUD reference code's: IG over each node's activations at k/steps points, anchors = the "
                 "binary top-n circuit of the easy (hard) set's mean edge scores, labels = votes from the "
                 "post-unlearning answer loss",
}
LABEL_KIND_LABELS: dict[str, str] = {
    "auc_after": "mean answer probability over the unlearning steps, the original's row excluded (ours)",
    "auc": "mean answer probability over every trajectory row, the original's included (before issue 15: it "
           "shares the original's probability with the answer-loss baseline)",
    "final_loss": "answer loss after unlearning, lower = harder (the CUD reference's votes)",
}
ANCHOR_LABELS: dict[str, str] = {
    "mean": "the mean circuit vector of the easy (hard) samples (ours)",
    "top_n": "the top-n circuit of the easy (hard) set's mean edge scores, as a circuit vector (the reference's)",
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
    "setting": "which CUD: " + choices_help(SETTING_LABELS) + ". The reference setting undoes the four "
               "departures of ours (IG over activations, run node by node: one IG run per upstream node, so "
               "it is slower). Still different in both: the calibration quantile instead of a count of 50 "
               "samples per method (docs/ARCHITECTURE.md, 'Departures from the CUD reference code')",
}

STORE_KIND = "eap_ig"  # per-sample EAP-IG edge scores in the study store
OPTIONS_VERSION = 1  # part of the store key; bump when the stored scores of the same options change
# What a CUD report means (its labels, anchors): part of the key of results that hold one (the diagnosis).
# 2: labels from auc_after (the original's row excluded) by default; the setting option.
CUD_REPORT_VERSION = 2


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
    points: IGPoints = "midpoint"  # the IG interpolation points (IG_POINTS_LABELS)
    ig_over: IGOver = "inputs"  # what IG interpolates (IG_OVER_LABELS)

    def __post_init__(self) -> None:
        self.validated()

    def validated(self) -> EAPOptions:
        check_choice("metric", self.metric, MetricName)
        check_choice("baseline", self.baseline, BaselineName)
        check_choice("IG points", self.points, IGPoints)
        check_choice("IG over", self.ig_over, IGOver)
        check_int("steps (integrated-gradient steps)", self.steps, 1)
        check_seed("seed", self.seed)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> dict[str, Any]:
        """The store key of per-sample edge scores. ``points`` and ``ig_over`` enter it only when they are
        not the defaults, the scores every earlier key was computed with, so those stay valid."""
        d = self.to_dict()
        for name, before in (("points", "midpoint"), ("ig_over", "inputs")):
            if d[name] == before:
                del d[name]
        return {**d, "version": OPTIONS_VERSION}


# The defaults for one sample's circuit (`erasure circuit`, the Circuits page). EAPOptions() itself keeps CUD's
# setting (probability, zero baseline, 5 steps), which CUD scoring replicates. On the demo organism (16 forget
# samples, top-75 circuits of 479 edges) the median faithfulness was 0.000 with CUD's setting, 0.11 with
# log-prob and the zero baseline, 0.91 with the mean baseline and 0.96 with the corrupted one.
CIRCUIT_DEFAULTS = EAPOptions(metric="logprob", baseline="corrupted")
DEFAULT_TOP_N = 75


@dataclass(frozen=True)
class CUDOptions:
    """Options of CUD scoring (analysis.circuits.cud): the circuits' edge scores (``eap``), their size, the
    circuit vector, the distance to the anchors, the calibration quantile, the cross-validation and the
    ``setting`` (ours, or the CUD reference code's: :attr:`scoring_eap`, :attr:`anchor_kind`,
    :attr:`label_kind`)."""

    distance: DistanceName = "cosine"
    top_n: int = DEFAULT_TOP_N
    eap: EAPOptions = field(default_factory=EAPOptions)
    vector: VectorKind = "binary"
    quantile: float = 0.3
    folds: int = 5
    seed: int = 0
    setting: CUDSetting = "ours"

    @property
    def scoring_eap(self) -> EAPOptions:
        """The edge-score options CUD runs: ``eap``, with the reference code's IG (k/steps points, over each
        node's activations) in the reference setting. Their store key differs, so the two settings never
        share stored edge scores."""
        if self.setting == "reference":
            return replace(self.eap, points="endpoint", ig_over="activations")
        return self.eap

    @property
    def anchor_kind(self) -> AnchorKind:
        return "top_n" if self.setting == "reference" else "mean"

    @property
    def label_kind(self) -> LabelKind:
        return "final_loss" if self.setting == "reference" else "auc_after"

    def validated(self) -> CUDOptions:
        check_choice("CUD setting", self.setting, CUDSetting)
        check_choice("distance", self.distance, DistanceName)
        check_choice("circuit vector kind", self.vector, VectorKind)
        top_n = check_int("top_n (edges in the circuit)", self.top_n, 1)
        quantile = check_float("quantile", self.quantile, 0, 0.5, min_open=True)
        folds = check_int("folds (cross-validation folds)", self.folds, 2)
        seed = check_seed("seed", self.seed)
        return replace(self, eap=self.eap.validated(), top_n=top_n, quantile=quantile, folds=folds, seed=seed)

    def report_options(self) -> dict[str, Any]:
        """The options a CUDReport records (the edge-score options CUD ran, the circuit size, vector and
        quantile, the setting with its anchors and labels; folds and seed are in its validation)."""
        return {**self.scoring_eap.to_dict(), "top_n": self.top_n, "vector": self.vector, "quantile": self.quantile,
                "setting": self.setting, "anchors": self.anchor_kind, "labels": self.label_kind,
                "version": CUD_REPORT_VERSION}
