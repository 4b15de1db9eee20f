"""Options of a diagnosis: the options of each underlying analysis, small by default so that diagnosing one
model of the demo study from an empty store takes about a minute on a laptop CPU (the SAE training is most
of it, and is shared with the SAE page and `erasure sae train`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis.attribution.options import RecoveryOptions
from analysis.checks import check_int
from analysis.circuits.options import DEFAULT_TOP_N, DistanceName, check_choice
from analysis.sae.options import OPTIONS_VERSION as SAE_REPORT_VERSION
from analysis.sae.options import SAEOptions
from analysis.tracing.options import TraceOptions

STORE_KIND = "diagnosis"  # one row per (original, model, retrain) and options: the whole Diagnosis
VERSION = 1  # bump when the rules in analysis.diagnosis.rules change what a stored diagnosis says


def default_trace_options() -> TraceOptions:
    """Residual stream and MLP (the subject's mid-layer effect lives there), 3 noise samples: a third of the
    tracing page's default cost per sample; the AIE is averaged over the forget set anyway."""
    return TraceOptions(kinds=("resid", "mlp"), n_samples=3)


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
                "cud": {"distance": self.cud_distance, "top_n": self.cud_top_n}}
