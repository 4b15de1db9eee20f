"""Diagnosis: every signal of one unlearned model joined (output metrics, the SAE verdict, keyword-emphasis
recovery, the causal trace of the subject, CUD) into a summary verdict with its evidence, a plain statement
of which signals agree and which disagree, and a per-sample table; exported as a self-contained HTML report
and JSON (``erasure report``). The rules are in :mod:`analysis.diagnosis.rules`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports

_M = "analysis.diagnosis."
_EXPORTS: dict[str, str] = {
    "DiagnosisOptions": _M + "options",
    **dict.fromkeys(["READINGS", "SAMPLE_COLUMNS", "VERDICTS", "Diagnosis", "Signal"], _M + "result"),
    **dict.fromkeys(["check_model", "diagnose", "stored_diagnosis"], _M + "runner"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)  # the CLI's parser imports no analysis engine

if TYPE_CHECKING:
    from analysis.diagnosis.options import DiagnosisOptions
    from analysis.diagnosis.result import READINGS, SAMPLE_COLUMNS, VERDICTS, Diagnosis, Signal
    from analysis.diagnosis.runner import check_model, diagnose, stored_diagnosis

__all__ = ["READINGS", "SAMPLE_COLUMNS", "VERDICTS", "Diagnosis", "DiagnosisOptions", "Signal", "check_model",
           "diagnose", "stored_diagnosis"]
