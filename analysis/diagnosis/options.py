"""Options of a diagnosis: the options of each underlying analysis, small by default so that diagnosing one
model of the demo study from an empty store takes about a minute on a laptop CPU (the SAE training is most
of it, and is shared with the SAE page and `erasure sae train`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis.attribution.options import RecoveryOptions
from analysis.checks import check_int
from analysis.circuits.options import CUD_REPORT_VERSION, DEFAULT_TOP_N, DistanceName, check_choice
from analysis.sae.options import OPTIONS_VERSION as SAE_REPORT_VERSION
from analysis.sae.options import SAEOptions
from analysis.tracing.options import TraceOptions

STORE_KIND = "diagnosis"  # one row per (original, model, retrain) and options: the whole Diagnosis
VERSION = 2  # bump when the rules in analysis.diagnosis.rules change what a stored diagnosis says
# 2: the trace reading is the subject's normalised mid-layer share of each model's own effect (was: its raw AIE
#    on the model as a fraction of the original's)


def default_trace_options() -> TraceOptions:
    """Residual stream and MLP (the subject's mid-layer effect lives there), the tracing page's 10 noise samples.
    The metric is the logit difference (``logit_diff_corrupted``), which does not vanish on a model that no
    longer gives the answer: the diagnosis divides each sample's effect by the model's own clean-minus-corrupted
    gap (analysis.diagnosis.rules, trace), and a probability gap is ~0 on every such model. 10 noise samples, not
    3: with 3 the per-sample ratios scatter so much that the readout-only control's mean share on the organism
    moved between 0.5x and 1.4x the original's from one noise seed to the next (0.9x-1.2x with 10)."""
    return TraceOptions(kinds=("resid", "mlp"), n_samples=10, metric="logit_diff_corrupted")


@dataclass(frozen=True)
class DiagnosisOptions:
    trace: TraceOptions = field(default_factory=default_trace_options)
    recovery: RecoveryOptions = field(default_factory=RecoveryOptions)  # every strategy, as the page's default
    sae: SAEOptions = field(default_factory=SAEOptions)  # layer and k pick the SAE; the rest only trains one
    # when none is cached there (like the SAE page, the diagnosis uses the SAE the study already has)
    cud_distance: DistanceName = "cosine"
    cud_top_n: int = DEFAULT_TOP_N

    def validated(self, n_layers: int) -> DiagnosisOptions:
        check_choice("distance", self.cud_distance, DistanceName)
        cud_top_n = check_int("cud_top_n (edges in the circuit)", self.cud_top_n, 1)
        return DiagnosisOptions(trace=self.trace.validated(n_layers), recovery=self.recovery.validated(),
                                sae=self.sae.validated(), cud_distance=self.cud_distance, cud_top_n=cud_top_n)

    def key(self, sae_id: str | None) -> dict[str, Any]:
        """The store key of validated options: each analysis's own key, and the SAE used (its directory name,
        analysis.sae.train.TrainedSAE.sae_id; None when no SAE could be had) with the version of its report."""
        return {"version": VERSION, "trace": self.trace.key(), "recovery": self.recovery.key(), "sae": sae_id,
                "sae_report": SAE_REPORT_VERSION,
                "cud": {"distance": self.cud_distance, "top_n": self.cud_top_n, "report": CUD_REPORT_VERSION}}
