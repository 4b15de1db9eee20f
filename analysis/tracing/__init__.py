"""Causal tracing (Meng et al. 2022, ROME) with the recommendations of Zhang & Nanda 2023: corrupt the
subject (Gaussian noise on its embeddings, or symmetric token replacement), restore one (layer, token)
cell of the residual stream / MLP outputs / attention outputs from the clean run, and measure how much of
the answer comes back. Batched: one forward per start layer over all tokens and noise samples."""

from analysis.subjects import SubjectInput, SubjectPool, subject_input, subject_token_range
from analysis.tracing.corruptions import (
    CORRUPTIONS,
    Corrupted,
    Corruption,
    get_corruption,
    register_corruption,
)
from analysis.tracing.engine import Metric, TraceScores, run_trace
from analysis.tracing.options import (
    HOOKS,
    KINDS,
    METRICS,
    STORE_KIND,
    TraceOptions,
    parse_kinds,
    window_layers,
)
from analysis.tracing.result import (
    ROLES,
    AIEResult,
    TraceResult,
    average_indirect_effect,
    role_positions,
    trace_difference,
)
from analysis.tracing.tracer import (
    cached_trace,
    dataset_cached,
    trace,
    trace_dataset,
    trace_models,
    trace_sample,
)

__all__ = [
    "CORRUPTIONS", "HOOKS", "KINDS", "METRICS", "ROLES", "STORE_KIND", "AIEResult", "Corrupted", "Corruption",
    "Metric", "SubjectPool", "SubjectInput", "TraceOptions", "TraceResult", "TraceScores", "average_indirect_effect",
    "cached_trace", "dataset_cached", "get_corruption", "parse_kinds", "register_corruption", "role_positions",
    "run_trace", "subject_token_range", "trace", "trace_dataset", "trace_difference", "subject_input",
    "trace_models", "trace_sample", "window_layers",
]
