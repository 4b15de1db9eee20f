"""Causal tracing (Meng et al. 2022, ROME) with the recommendations of Zhang & Nanda 2023: corrupt the
subject (Gaussian noise on its embeddings, or symmetric token replacement), restore one (layer, token)
cell of the residual stream / MLP outputs / attention outputs from the clean run, and measure how much of
the answer comes back. Batched: one forward per start layer over all tokens and noise samples.

Rooms: ``options`` (TraceOptions, kinds, metrics and their labels), ``corruptions/`` (the CORRUPTIONS
registry, one file per member), ``engine`` (the batched trace), ``runner`` (study-level entry points: the
store, the resumable dataset job), ``result`` (TraceResult, AIEResult), ``figures``, ``cli``.

The public names below load their module on first use (analysis.lazy), so that ``analysis.tracing.options`` and
``analysis.tracing.cli`` (read by the CLI to build its parser) do not import torch and TransformerLens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports

_M = "analysis.tracing."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["SubjectInput", "SubjectPool", "subject_input", "subject_token_range"], "analysis.subjects"),
    **dict.fromkeys(["CORRUPTIONS", "Corrupted", "Corruption", "get_corruption"], _M + "corruptions"),
    **dict.fromkeys(["Metric", "TraceScores", "run_trace"], _M + "engine"),
    **dict.fromkeys(["HOOKS", "KIND_LABELS", "KINDS", "METRIC_LABELS", "METRICS", "STORE_KIND", "TraceKind",
                     "TraceMetric", "TraceOptions", "parse_kinds", "window_layers"], _M + "options"),
    **dict.fromkeys(["TOKEN_ROLES", "AIEResult", "TraceResult", "average_indirect_effect", "role_positions",
                     "trace_difference"], _M + "result"),
    **dict.fromkeys(["cached_trace", "dataset_cached", "trace", "trace_dataset", "trace_models", "trace_sample",
                     "trace_stored", "trace_typed"], _M + "runner"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from analysis.subjects import SubjectInput, SubjectPool, subject_input, subject_token_range
    from analysis.tracing.corruptions import CORRUPTIONS, Corrupted, Corruption, get_corruption
    from analysis.tracing.engine import Metric, TraceScores, run_trace
    from analysis.tracing.options import (
        HOOKS,
        KIND_LABELS,
        KINDS,
        METRIC_LABELS,
        METRICS,
        STORE_KIND,
        TraceKind,
        TraceMetric,
        TraceOptions,
        parse_kinds,
        window_layers,
    )
    from analysis.tracing.result import (
        TOKEN_ROLES,
        AIEResult,
        TraceResult,
        average_indirect_effect,
        role_positions,
        trace_difference,
    )
    from analysis.tracing.runner import (
        cached_trace,
        dataset_cached,
        trace,
        trace_dataset,
        trace_models,
        trace_sample,
        trace_stored,
        trace_typed,
    )

__all__ = [
    "CORRUPTIONS", "HOOKS", "KINDS", "KIND_LABELS", "METRICS", "METRIC_LABELS", "STORE_KIND", "TOKEN_ROLES",
    "AIEResult", "Corrupted", "Corruption", "Metric", "SubjectPool", "SubjectInput", "TraceKind", "TraceMetric",
    "TraceOptions", "TraceResult", "TraceScores", "average_indirect_effect", "cached_trace", "dataset_cached",
    "get_corruption", "parse_kinds", "role_positions", "run_trace", "subject_token_range", "trace",
    "trace_dataset", "trace_difference", "subject_input", "trace_models", "trace_sample", "trace_stored",
    "trace_typed", "window_layers",
]
