"""The fitted verdict: was the knowledge erased or only suppressed? One signal and a boundary fitted on
development zoos (``rule``: ``fit_rule``, ``load_rule``; the rule itself lives in ``rule.json``, versioned),
applied with a bootstrap interval over samples (``judge``: ``judge``, ``judge_reading``), and ``erasure verdict``
(``cli``). Fitted and tested on held-out zoos by ``python -m benchmarks.verdict_fit`` (benchmarks/VERDICT.md).
``matrix``: the verdict matrix (every model x every stored signal, ``verdict_matrix`` and its figure) and the
forget-quality-vs-utility scatter (``erasure verdict STUDY --matrix``). Names load on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports

_M = "analysis.verdict."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["Rule", "load_rule", "fit_rule", "defined_values", "model_score"], _M + "rule"),
    **dict.fromkeys(["ModelVerdict", "judge_reading", "stored_verdict"], _M + "judge"),
    **dict.fromkeys(["VerdictMatrix", "MatrixRow", "MatrixColumn", "MatrixCell", "verdict_matrix", "build_matrix",
                     "matrix_rows", "verdict_matrix_figure", "forget_utility_scatter", "model_roles"],
                    _M + "matrix"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from analysis.verdict.judge import ModelVerdict, judge_reading, stored_verdict
    from analysis.verdict.matrix import (
        MatrixCell,
        MatrixColumn,
        MatrixRow,
        VerdictMatrix,
        build_matrix,
        forget_utility_scatter,
        matrix_rows,
        model_roles,
        verdict_matrix,
        verdict_matrix_figure,
    )
    from analysis.verdict.rule import Rule, defined_values, fit_rule, load_rule, model_score

# (the function ``judge`` shares its module's name: import it from analysis.verdict.judge)
__all__ = ["MatrixCell", "MatrixColumn", "MatrixRow", "ModelVerdict", "Rule", "VerdictMatrix", "build_matrix",
           "defined_values", "fit_rule", "forget_utility_scatter", "judge_reading", "load_rule",
           "matrix_rows", "model_roles", "model_score", "stored_verdict", "verdict_matrix",
           "verdict_matrix_figure"]
