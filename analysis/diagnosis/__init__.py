"""Diagnosis: every signal of one unlearned model joined (output metrics, the SAE verdict, keyword-emphasis
recovery, the causal trace of the subject, CUD) into a summary verdict with its evidence, a plain statement
of which signals agree and which disagree, and a per-sample table; exported as a self-contained HTML report
and JSON (``erasure report``). The rules are in :mod:`analysis.diagnosis.rules`."""

from analysis.diagnosis.options import DiagnosisOptions
from analysis.diagnosis.result import READINGS, SAMPLE_COLUMNS, VERDICTS, Diagnosis, Signal
from analysis.diagnosis.runner import check_model, diagnose, stored_diagnosis

__all__ = ["READINGS", "SAMPLE_COLUMNS", "VERDICTS", "Diagnosis", "DiagnosisOptions", "Signal", "check_model",
           "diagnose", "stored_diagnosis"]
